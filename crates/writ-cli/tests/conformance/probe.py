#!/usr/bin/env python3
"""What a stock MCP client (the official Python SDK, 2025-11-25 handshake) gets from the upstream
directly and through a gateway, where the conformance suite does not look or stops too early:

- tool definitions and results compared field by field (`test_simple_text`, and
  `test_structured_content` with title, annotations, icons, execution, outputSchema and
  structuredContent), `_meta` aside;
- log messages that arrive during a call when the client never sent `logging/setLevel`;
- progress notifications during a call that asked for them.

    python3 probe.py DIRECT_URL GATEWAY_URL [TOOL_PREFIX]

TOOL_PREFIX is what the gateway puts before the upstream's tool names (`conformance.` for Writ
today). Prints one JSON object; never fails on a difference (it reports it).
"""

from __future__ import annotations

import json
import sys
import warnings

import anyio
import mcp_types as types
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

warnings.filterwarnings("ignore")

TOOLS = ("test_simple_text", "test_structured_content")


def plain(model) -> dict:
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)


async def observe(url: str, prefix: str) -> dict:
    logs: list[dict] = []
    progress: list[float] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(plain(params))

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    seen: dict = {}
    async with streamable_http_client(url) as (read, write, *_):
        async with ClientSession(read, write, logging_callback=on_log) as session:
            init = await session.initialize()
            seen["protocolVersion"] = init.protocol_version
            seen["capabilities"] = plain(init.capabilities)
            listed = {t.name: plain(t) for t in (await session.list_tools()).tools}
            seen["tools"] = {name: listed.get(prefix + name) for name in TOOLS}
            seen["results"] = {}
            for name in TOOLS:
                seen["results"][name] = plain(await session.call_tool(prefix + name, {}))
            await session.call_tool(prefix + "test_tool_with_logging", {})
            await anyio.sleep(0.3)
            seen["log_messages_during_call"] = len(logs)
            await session.call_tool(prefix + "test_tool_with_progress", {}, progress_callback=on_progress)
            await anyio.sleep(0.3)
            seen["progress_notifications_during_call"] = progress
    return seen


def differences(direct, gateway, path: str, prefix: str, out: list[str]) -> None:
    if isinstance(direct, dict) and isinstance(gateway, dict):
        for key in sorted(set(direct) | set(gateway)):
            if key == "_meta":
                continue
            here = f"{path}.{key}" if path else key
            if key not in gateway:
                out.append(f"{here}: dropped (upstream: {json.dumps(direct[key])[:120]})")
            elif key not in direct:
                out.append(f"{here}: added ({json.dumps(gateway[key])[:160]})")
            else:
                differences(direct[key], gateway[key], here, prefix, out)
    elif direct != gateway:
        if path.endswith(".name") and gateway == prefix + str(direct):
            out.append(f"{path}: renamed {direct!r} -> {gateway!r}")
        else:
            out.append(f"{path}: {json.dumps(direct)[:120]} -> {json.dumps(gateway)[:160]}")


async def main(direct_url: str, gateway_url: str, prefix: str) -> None:
    direct = await observe(direct_url, "")
    gateway = await observe(gateway_url, prefix)
    diff: list[str] = []
    for section in ("tools", "results"):
        differences(direct[section], gateway[section], section, prefix, diff)
    for key in ("log_messages_during_call", "progress_notifications_during_call"):
        if direct[key] != gateway[key]:
            diff.append(f"{key}: {json.dumps(direct[key])} directly, {json.dumps(gateway[key])} through the gateway")
    print(json.dumps({"differences": diff, "direct": direct, "gateway": gateway}, indent=2))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
