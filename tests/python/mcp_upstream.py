"""An upstream MCP server for the gateway's tests, written with the official SDK
(`mcp` from PyPI) and run by the node over stdio: one read tool, one destructive
tool (each deletion is appended to deleted.txt in its working directory, so that
the test can count how often it ran), a tool that answers more than its bound, and
one that hangs."""

import asyncio
import os

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

server = MCPServer("notes")


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


if __name__ == "__main__":
    server.run()
