"""An upstream MCP server for the gateway's tests, written with the official SDK
(`mcp` from PyPI), run by the node over stdio, or (`--http TOKEN [--tls CERT KEY]
[--require-header NAME=VALUE]`) serving MCP's
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


def serve_http(token, tls=None, required=None):
    import socket

    import uvicorn

    app = server.streamable_http_app()
    expected = f"Bearer {token}".encode()
    wanted = None if required is None else tuple(part.encode() for part in required.split("=", 1))

    async def refuse(send, status, text):
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"www-authenticate", b'Bearer realm="notes"'),
                        (b"content-type", b"text/plain")],
        })
        await send({"type": "http.response.body", "body": text})

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != expected:
                await refuse(send, 401, b"a bearer token is required")
                return
            if wanted is not None and headers.get(wanted[0].lower()) != wanted[1]:
                await refuse(send, 403, b"the tenant header is required")
                return
        await app(scope, receive, send)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(f"listening {sock.getsockname()[1]}", flush=True)
    options = {} if tls is None else {"ssl_certfile": tls[0], "ssl_keyfile": tls[1]}
    uvicorn.Server(uvicorn.Config(guarded, log_level="warning", **options)).run(sockets=[sock])


if __name__ == "__main__":
    import sys

    arguments = sys.argv[1:]
    if arguments[:1] == ["--http"]:
        token, rest = arguments[1], arguments[2:]
        tls = required = None
        while rest:
            if rest[0] == "--tls":
                tls, rest = (rest[1], rest[2]), rest[3:]
            elif rest[0] == "--require-header":
                required, rest = rest[1], rest[2:]
            else:
                raise SystemExit(f"unknown argument {rest[0]}")
        serve_http(token, tls, required)
    else:
        server.run()
