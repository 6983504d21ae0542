"""The official MCP Python SDK (`mcp`) against Colony's MCP server.

Usage: mcp_client.py BASE_URL WORKER_TOKEN READER_TOKEN COLONY_BINARY TASK_ADDRESS

Over Streamable HTTP (BASE_URL/mcp) on each protocol revision (the 2025-06-18 and
2025-11-25 handshakes, and 2026-07-28's server/discover), and over stdio through
`colony mcp`: list the tools, claim the posted task, checkpoint and complete it;
a token without the `tasks` scope sees no write tool and is refused naming it.
Prints "all checks passed" when every check held.
"""

import sys

import anyio
import mcp.client.session as session_module
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

BASE, WORKER, READER, COLONY, TASK = sys.argv[1:6]


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


async def over_http(token, mode):
    client = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with client:
        async with streamable_http_client(f"{BASE}/mcp", http_client=client) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await negotiate(session, mode)
                yield session


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
        async for session in over_http(WORKER, mode):
            await works_the_board(session, f"http {mode}")

    # The worker claims the posted task, checkpoints it, completes it.
    async for session in over_http(WORKER, "2025-11-25"):
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

    # A read-only token: no write tool listed, and a write refused naming the scope.
    async for session in over_http(READER, "2025-11-25"):
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
            listed = await session.call_tool("task_list", {"status": "completed"})
            check(
                any(t["address"] == TASK for t in listed.structured_content["tasks"]),
                "stdio: the completed task is listed",
            )
    print("all checks passed")


anyio.run(main)
