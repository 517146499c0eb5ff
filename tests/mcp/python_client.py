"""Works one task through taskyard's /mcp with the official Python MCP SDK.

Usage: python3 python_client.py URL TOKEN
       python3 python_client.py --check

Lists the tools, claims the best task, reports progress, completes it, then repeats the
progress call with the now stale fence. Prints one JSON line with what it saw; the Rust test
in tests/api/mcp/python.rs checks it against the server. Exits non-zero when a call fails.

With --check it only tells whether this Python can run it: it needs the `mcp` package at
major version 2 (CI installs mcp==2.3.0), whose names and snake_case result fields differ from
mcp 1.x. It exits 0 when it can, or 3 with the reason on stdout when it cannot.
"""

import asyncio
import importlib.metadata
import json
import sys

SDK_MAJOR = 2


def missing() -> str | None:
    """Why this script cannot run here, or None when it can."""
    try:
        version = importlib.metadata.version("mcp")
    except importlib.metadata.PackageNotFoundError:
        return "the mcp package is not installed"
    if version.split(".")[0] != str(SDK_MAJOR):
        return f"mcp {version} is installed; this script needs mcp {SDK_MAJOR}.x"
    try:
        from mcp import ClientSession  # noqa: F401
        from mcp.client.streamable_http import (  # noqa: F401
            create_mcp_http_client,
            streamable_http_client,
        )
        from mcp.types import CallToolResult
    except ImportError as err:
        return f"mcp {version} lacks what this script uses: {err}"
    fields = CallToolResult.model_fields
    if "is_error" not in fields or "structured_content" not in fields:
        return f"mcp {version} names CallToolResult's fields differently"
    return None


async def work(url: str, token: str) -> dict:
    from mcp import ClientSession
    from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

    headers = {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()

                async def call(tool: str, arguments: dict) -> dict:
                    result = await session.call_tool(tool, arguments)
                    return {"is_error": bool(result.is_error), "content": result.structured_content}

                claim = await call("claim_next", {})
                if claim["is_error"] or claim["content"]["task"] is None:
                    raise SystemExit(f"claim_next gave no task: {claim}")
                task = claim["content"]["task"]["id"]
                fence = claim["content"]["lease"]["fence"]
                progress = await call(
                    "update_progress",
                    {"task": task, "fence": fence, "percent": 50, "note": "half way"},
                )
                done = await call(
                    "complete_task",
                    {"task": task, "fence": fence, "summary": "done from python"},
                )
                stale = await call("update_progress", {"task": task, "fence": fence})
                return {
                    "tools": sorted(tool.name for tool in tools.tools),
                    "task": task,
                    "progress": progress,
                    "done": done,
                    "stale": stale,
                }


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        reason = missing()
        if reason is not None:
            print(reason)
            sys.exit(3)
    else:
        print(json.dumps(asyncio.run(work(sys.argv[1], sys.argv[2]))))
