"""Works one task through taskyard's /mcp with the official Python MCP SDK.

Usage: python3 python_client.py URL TOKEN

Lists the tools, claims the best task, reports progress, completes it, then repeats the
progress call with the now stale fence. Prints one JSON line with what it saw; the Rust test
in tests/api/mcp.rs checks it against the server. Exits non-zero when a call fails.
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


async def work(url: str, token: str) -> dict:
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
    print(json.dumps(asyncio.run(work(sys.argv[1], sys.argv[2]))))
