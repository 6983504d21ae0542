"""The official MCP Python SDK (`mcp`) against Colony's MCP server.

Usage: mcp_client.py BASE_URL WORKER_TOKEN READER_TOKEN COLONY_BINARY TASK_ADDRESS WORKER_ADDRESS

Over Streamable HTTP (BASE_URL/mcp) on each protocol revision (the 2025-06-18 and
2025-11-25 handshakes, and 2026-07-28's server/discover), and over stdio through
`colony mcp`: list the tools, claim the posted task, checkpoint and complete it
while another session listens to the task's resource (subscriptions/listen) and
hears each change; read the resources; send a message to the worker's inbox and
read it back with inbox_read; a token without the `tasks` scope sees no write tool
and is refused naming it. Prints "all checks passed" when every check held.
"""

import json
import sys
from contextlib import asynccontextmanager

import anyio
import mcp.client.session as session_module
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import listen
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

BASE, WORKER, READER, COLONY, TASK, ADDRESS = sys.argv[1:7]


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


async def negotiate(session, mode):
    if mode == "discover":
        result = await session.discover()
        check("2026-07-28" in result.supported_versions, f"discover offers 2026-07-28: {result.supported_versions}")
        check(session.protocol_version == "2026-07-28", f"negotiated {session.protocol_version}")
    else:
        session_module.LATEST_HANDSHAKE_VERSION = mode
        result = await session.initialize()
        check(result.protocol_version == mode, f"initialize negotiated {result.protocol_version}, wanted {mode}")
        check(result.server_info.name == "colony", "the server is colony")


@asynccontextmanager
async def over_http(token, mode):
    client = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with client:
        async with streamable_http_client(f"{BASE}/mcp", http_client=client) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await negotiate(session, mode)
                yield session


async def reads_the_resources(session, how):
    listed = await session.list_resources()
    uris = {resource.uri for resource in listed.resources}
    check({"colony://limits", "colony://ledger/me", "colony://audit"} <= uris, f"{how}: resources listed: {uris}")
    templates = await session.list_resource_templates()
    check(
        "colony://tasks/{address}" in {t.uri_template for t in templates.resource_templates},
        f"{how}: the task template is listed",
    )
    ledger = await session.read_resource("colony://ledger/me")
    check("balances" in json.loads(ledger.contents[0].text), f"{how}: colony://ledger/me reads the balances")
    task = await session.read_resource(f"colony://tasks/{TASK}")
    check(json.loads(task.contents[0].text)["address"] == TASK, f"{how}: colony://tasks/{TASK} reads the task")
    try:
        await session.read_resource("colony://tasks/0.7.1.99999")
        check(False, f"{how}: a missing task is an error")
    except MCPError as error:
        check("404" in str(error), f"{how}: a missing task is an error: {error}")
    try:
        await session.read_resource("colony://tasks/no.such.task")
        check(False, f"{how}: what is not a task address is an error")
    except MCPError as error:
        check("400" in str(error) and "task address" in str(error), f"{how}: what is not a task address says so: {error}")


async def works_the_task(session):
    claimed = await session.call_tool("task_claim", {"justification": "an MCP agent takes work"})
    check(not claimed.is_error, f"claimed: {claimed.content}")
    task = claimed.structured_content["task"]
    lease = claimed.structured_content["lease"]
    check(task["address"] == TASK, f"claimed the posted task {TASK}")
    saved = await session.call_tool(
        "task_checkpoint",
        {"address": TASK, "lease_token": lease["token"], "checkpoint": {"step": 1}, "justification": "halfway"},
    )
    check(not saved.is_error, f"checkpointed: {saved.content}")
    done = await session.call_tool(
        "task_complete",
        {"address": TASK, "lease_token": lease["token"], "result": {"ok": True}, "justification": "done"},
    )
    check(not done.is_error and done.structured_content["status"] == "completed", "completed over MCP")


async def tool_names(session):
    listed = await session.list_tools()
    return {tool.name for tool in listed.tools}


async def works_the_board(session, how):
    names = await tool_names(session)
    check({"task_claim", "task_complete", "ledger_me"} <= names, f"{how}: the board's tools are listed")
    me = await session.call_tool("ledger_me", {})
    check(not me.is_error and "balances" in me.structured_content, f"{how}: ledger_me answers the balances")


async def main():
    # Each revision over Streamable HTTP.
    for mode in ["2025-06-18", "2025-11-25", "discover"]:
        async with over_http(WORKER, mode) as session:
            await works_the_board(session, f"http {mode}")
            await reads_the_resources(session, f"http {mode}")

    # A revision without sessions cannot subscribe the old way; it is told how.
    async with over_http(WORKER, "2025-11-25") as session:
        try:
            await session.subscribe_resource(f"colony://tasks/{TASK}")
            check(False, "resources/subscribe is refused")
        except MCPError as error:
            check("subscriptions/listen" in str(error), f"resources/subscribe says to listen: {error}")

    # The worker claims the posted task, checkpoints it, completes it, while another
    # session listens to the task and hears of each change.
    uri = f"colony://tasks/{TASK}"
    heard = []
    async with over_http(WORKER, "discover") as watcher:
        async with listen(watcher, resource_subscriptions=[uri]) as subscription:
            check(subscription.honored.resource_subscriptions == [uri], f"listening to {uri}")
            async with anyio.create_task_group() as group:

                async def hear():
                    async for event in subscription:
                        heard.append(event)

                group.start_soon(hear)
                async with over_http(WORKER, "2025-11-25") as session:
                    await works_the_task(session)
                with anyio.fail_after(20):
                    while not heard:
                        await anyio.sleep(0.05)
                group.cancel_scope.cancel()
            check(all(event.uri == uri for event in heard), f"updates name the task: {heard}")
            task = json.loads((await watcher.read_resource(uri)).contents[0].text)
            check(task["status"] == "completed", "reading the resource after its update shows it completed")

    # A message to the worker's inbox, read back with inbox_read.
    async with over_http(WORKER, "2025-11-25") as session:
        sent = await session.call_tool(
            "bus_publish",
            {"subject": f"agents.{ADDRESS}.inbox", "data": {"hello": "inbox"}, "justification": "a note to myself"},
        )
        check(not sent.is_error, f"published to the inbox: {sent.content}")
        inbox = await session.call_tool("inbox_read", {})
        check(not inbox.is_error, f"inbox_read answered: {inbox.content}")
        messages = inbox.structured_content["messages"]
        check(any(m["data"] == {"hello": "inbox"} for m in messages), f"the message is in the inbox: {messages}")
        after = await session.call_tool("inbox_read", {"from_seq": inbox.structured_content["next_seq"]})
        check(after.structured_content["messages"] == [], "reading on from next_seq finds nothing new")

    # A read-only token: no write tool listed, and a write refused naming the scope.
    async with over_http(READER, "2025-11-25") as session:
        names = await tool_names(session)
        check("task_list" in names and "task_claim" not in names, f"a read token lists only reads: {sorted(names)}")
        refused = await session.call_tool("task_post", {"title": "no", "justification": "no scope"})
        text = " ".join(getattr(block, "text", "") for block in refused.content)
        check(refused.is_error and "`tasks` scope" in text, f"refused naming the scope: {text}")

    # Over stdio, through `colony mcp`, as a desktop client launches it.
    server = StdioServerParameters(command=COLONY, args=["mcp"], env={"COLONY_URL": BASE, "COLONY_TOKEN": WORKER})
    async with stdio_client(server) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            await negotiate(session, "2025-11-25")
            await works_the_board(session, "stdio")
            await reads_the_resources(session, "stdio")
            listed = await session.call_tool("task_list", {"status": "completed"})
            check(
                any(t["address"] == TASK for t in listed.structured_content["tasks"]),
                "stdio: the completed task is listed",
            )
    # Over stdio on 2026-07-28: a subscription's updates come through `colony mcp`
    # as they happen, while other calls go on beside it.
    async with stdio_client(server) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            await negotiate(session, "discover")
            posted = await session.call_tool("task_post", {"title": "watched over stdio", "justification": "to watch it"})
            check(not posted.is_error, f"stdio: posted {posted.content}")
            address = posted.structured_content["address"]
            uri = f"colony://tasks/{address}"
            async with listen(session, resource_subscriptions=[uri]) as subscription:
                cancelled = await session.call_tool(
                    "task_cancel", {"address": address, "justification": "seen enough"}
                )
                check(not cancelled.is_error, f"stdio: cancelled {cancelled.content}")
                with anyio.fail_after(20):
                    event = await subscription.__anext__()
                check(event.uri == uri, f"stdio: the update names the task: {event}")
    print("all checks passed")


anyio.run(main)
