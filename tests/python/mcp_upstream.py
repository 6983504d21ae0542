"""An upstream MCP server for the gateway's tests, written with the official SDK
(`mcp` from PyPI), run by the node over stdio, or (`--http TOKEN`) serving MCP's
Streamable HTTP on a free loopback port (it prints `listening PORT`) to callers that
present `Authorization: Bearer TOKEN`: one read tool, one destructive
tool (each deletion is appended to deleted.txt in its working directory, so that
the test can count how often it ran), a tool that answers more than its bound, and
one that hangs."""

import asyncio
import os

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

server = MCPServer("notes", log_level="WARNING")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def read_note(name: str) -> str:
    """Read one note by its name."""
    return f"note {name}: remember the milk"


@server.tool(annotations=ToolAnnotations(destructiveHint=True))
def delete_note(name: str) -> str:
    """Delete one note by its name, for good."""
    with open(os.path.join(os.getcwd(), "deleted.txt"), "a") as log:
        log.write(name + "\n")
    return f"deleted {name}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def big_note(size: int) -> str:
    """A note of `size` characters."""
    return "x" * size


@server.tool()
async def hang(seconds: float) -> str:
    """Sleeps, then answers."""
    await asyncio.sleep(seconds)
    return "woke"


@server.tool()
def where_am_i(path: str) -> str:
    """What the process can see of the host: its home, its environment's names,
    and whether `path` exists for it."""
    home = os.environ.get("HOME", "")
    names = ",".join(sorted(os.environ))
    return f"home={home} env={names} visible={os.path.exists(path)}"


def serve_http(token):
    import socket

    import uvicorn

    app = server.streamable_http_app()
    expected = f"Bearer {token}".encode()

    async def guarded(scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send({
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"www-authenticate", b'Bearer realm="notes"'),
                            (b"content-type", b"text/plain")],
            })
            await send({"type": "http.response.body", "body": b"a bearer token is required"})
            return
        await app(scope, receive, send)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(f"listening {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(guarded, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        serve_http(sys.argv[2])
    else:
        server.run()
