#!/usr/bin/env python3
"""The MCP server that the official conformance suite's *server* scenarios expect.

`@modelcontextprotocol/conformance` (npm) tests an MCP server by calling tools, resources,
prompts and utilities with fixed names (`test_simple_text`, `test://static-text`,
`test_prompt_with_arguments`, ...). This server implements every one of them with the official
Python SDK (`mcp==2.3.0`, the low-level `Server`), so that the suite can be run twice: directly
against it (the reference score) and through Writ with this server as Writ's MCP upstream (what
Writ keeps or loses on the way).

It covers the 2025-11-25 scenarios (handshake era: sessions, logging/setLevel, progress, sampling
and elicitation sent to the client during a call, resources subscribe, SSE resumption) and the
2026-07-28 ones (stateless requests with per-request `_meta`, input-required results with
integrity-protected `requestState`, `subscriptions/listen`, caching hints, capability checks).

    python3 upstream.py --stdio                  # over standard input and output
    python3 upstream.py --http 8931              # Streamable HTTP at http://127.0.0.1:8931/mcp

Written for Writ; nothing here is copied from the suite or its example servers.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import struct
import sys
import warnings
import wave
import zlib
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import uuid4

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.caching import CacheHint
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http import EventMessage, EventStore
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPError

# Logging, sampling, roots and client-to-server progress are deprecated on 2026-07-28 and the
# SDK says so at every use; the 2025-11-25 scenarios still need all of them.
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", module="mcp")
try:
    from mcp.shared.exceptions import MCPDeprecationWarning

    warnings.filterwarnings("ignore", category=MCPDeprecationWarning)
except ImportError:  # pragma: no cover - older SDKs
    pass

log = logging.getLogger("conformance-upstream")

INVALID_PARAMS = -32602
MISSING_REQUIRED_CLIENT_CAPABILITY = -32021


# --- media -------------------------------------------------------------------------------------


def _png_1x1_red() -> str:
    """A 1x1 red PNG, built here rather than pasted, as base64."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte, then R G B
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode()


def _wav_silence() -> str:
    """0.1 s of 8 kHz mono 16-bit silence, as base64."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)
    return base64.b64encode(buf.getvalue()).decode()


PNG = _png_1x1_red()
WAV = _wav_silence()


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def result(*content: dict[str, Any], is_error: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"content": list(content)}
    if is_error:
        out["isError"] = True
    return out


# --- requestState: HMAC-protected, so that a tampered echo is refused ------------------------------

STATE_KEY = secrets.token_bytes(32)


def seal(payload: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload, sort_keys=True).encode()).decode()
    tag = hmac.new(STATE_KEY, body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{tag}"


def unseal(token: str | None, tool: str) -> dict[str, Any] | None:
    """The payload of a state this server minted for `tool`; an MCP error for anything else."""
    if token is None:
        return None
    body, _, tag = token.rpartition(".")
    good = hmac.new(STATE_KEY, body.encode(), hashlib.sha256).hexdigest()
    if not body or not hmac.compare_digest(tag, good):
        raise MCPError(INVALID_PARAMS, "requestState failed its integrity check")
    try:
        payload = json.loads(base64.urlsafe_b64decode(body.encode()))
    except ValueError as e:
        raise MCPError(INVALID_PARAMS, "requestState is malformed") from e
    if payload.get("tool") != tool:
        raise MCPError(INVALID_PARAMS, "requestState belongs to another request")
    return payload


def input_required(requests: dict[str, Any], state: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"resultType": "input_required", "inputRequests": requests}
    if state is not None:
        out["requestState"] = seal(state)
    return out


def elicit_request(message: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "method": "elicitation/create",
        "params": {
            "message": message,
            "requestedSchema": {"type": "object", "properties": properties, "required": required},
        },
    }


def sampling_request(prompt: str, max_tokens: int) -> dict[str, Any]:
    return {
        "method": "sampling/createMessage",
        "params": {
            "messages": [{"role": "user", "content": text(prompt)}],
            "maxTokens": max_tokens,
        },
    }


ROOTS_REQUEST = {"method": "roots/list", "params": {}}


def answers(params: types.CallToolRequestParams | types.GetPromptRequestParams) -> dict[str, Any]:
    """The client's inputResponses as plain JSON (empty when there are none)."""
    got = params.input_responses or {}
    return {
        k: (v.model_dump(by_alias=True, mode="json", exclude_none=True) if hasattr(v, "model_dump") else v)
        for k, v in got.items()
    }


def accepted(response: Any) -> dict[str, Any] | None:
    """The content of an accepted elicitation response."""
    if isinstance(response, dict) and response.get("action") == "accept":
        content = response.get("content")
        return content if isinstance(content, dict) else {}
    return None


def sampled_text(response: Any) -> str | None:
    if not isinstance(response, dict):
        return None
    content = response.get("content")
    if isinstance(content, list):
        content = next((c for c in content if isinstance(c, dict) and c.get("type") == "text"), None)
    if isinstance(content, dict) and isinstance(content.get("text"), str):
        return content["text"]
    return None


def client_has(ctx: ServerRequestContext[Any, Any], capability: str) -> bool:
    caps = ctx.session.client_capabilities
    return caps is not None and getattr(caps, capability, None) is not None


# CONFORMANCE_UPSTREAM_ASK_ANYWAY=1: send sampling, elicitation and roots requests to a
# 2025-11-25 client even when it did not declare the capability, as some servers do, to see
# what a gateway answers in its client's place. Off by default: a conforming server does not.
ASK_ANYWAY = os.environ.get("CONFORMANCE_UPSTREAM_ASK_ANYWAY") == "1"


def may_ask(ctx: ServerRequestContext[Any, Any], capability: str) -> bool:
    return ASK_ANYWAY or client_has(ctx, capability)


# --- state shared by every connection ------------------------------------------------------------


class State:
    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        # Per handshake-era session: the level set by logging/setLevel.
        self.log_levels: dict[int, str] = {}
        self.subscriptions: set[str] = set()
        self.extra_tools = 0
        self.extra_prompts = 0


STATE = State()

LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


async def send_log(ctx: ServerRequestContext[Any, Any], level: str, message: str) -> None:
    """A `notifications/message` on the call's own stream, above the session's level."""
    wanted = STATE.log_levels.get(id(ctx.session._connection), "debug")  # noqa: SLF001
    if LEVELS.index(level) < LEVELS.index(wanted):
        return
    await ctx.session.send_log_message(level, message, logger="conformance-upstream", related_request_id=ctx.request_id)


# --- tools -------------------------------------------------------------------------------------

NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}

ToolFn = Callable[[ServerRequestContext[Any, Any], types.CallToolRequestParams], Awaitable[dict[str, Any]]]
TOOLS: dict[str, tuple[dict[str, Any], ToolFn]] = {}


def tool(name: str, description: str, schema: dict[str, Any] | None = None, **extra: Any):
    def register(fn: ToolFn) -> ToolFn:
        TOOLS[name] = ({"name": name, "description": description, "inputSchema": schema or NO_ARGS, **extra}, fn)
        return fn

    return register


@tool("test_simple_text", "Returns a simple text response")
async def _simple_text(ctx, params):
    return result(text("This is a simple text response for testing."))


@tool("test_image_content", "Returns a 1x1 red PNG image")
async def _image(ctx, params):
    return result({"type": "image", "data": PNG, "mimeType": "image/png"})


@tool("test_audio_content", "Returns a short WAV clip of silence")
async def _audio(ctx, params):
    return result({"type": "audio", "data": WAV, "mimeType": "audio/wav"})


@tool("test_embedded_resource", "Returns an embedded text resource")
async def _embedded(ctx, params):
    return result(
        {
            "type": "resource",
            "resource": {
                "uri": "test://embedded-resource",
                "mimeType": "text/plain",
                "text": "This is an embedded resource content.",
            },
        }
    )


@tool("test_multiple_content_types", "Returns text, an image and an embedded resource")
async def _mixed(ctx, params):
    return result(
        text("Multiple content types test:"),
        {"type": "image", "data": PNG, "mimeType": "image/png"},
        {
            "type": "resource",
            "resource": {
                "uri": "test://mixed-content-resource",
                "mimeType": "application/json",
                "text": json.dumps({"test": "data", "value": 123}),
            },
        },
    )


@tool("test_tool_with_logging", "Sends three log messages while it runs")
async def _with_logging(ctx, params):
    await send_log(ctx, "info", "Tool execution started")
    await anyio.sleep(0.05)
    await send_log(ctx, "info", "Tool processing data")
    await anyio.sleep(0.05)
    await send_log(ctx, "info", "Tool execution completed")
    return result(text("Tool with logging executed successfully"))


@tool("test_logging_tool", "Logs at every level; on 2026-07-28 only what the request's _meta asked for")
async def _logging_tool(ctx, params):
    for level in ("debug", "info", "warning", "error"):
        await ctx.session.send_log_message(level, f"{level} message", logger="conformance-upstream", related_request_id=ctx.request_id)
    return result(text("Logging tool executed"))


@tool("test_error_handling", "Always fails with isError")
async def _error(ctx, params):
    return result(text("This tool intentionally returns an error for testing"), is_error=True)


@tool("test_tool_with_progress", "Reports progress 0, 50, 100 of 100")
async def _with_progress(ctx, params):
    for step, value in enumerate((0, 50, 100)):
        if step:
            await anyio.sleep(0.05)
        await ctx.session.report_progress(value, 100, f"step {step + 1} of 3")
    return result(text("Tool with progress executed successfully"))


@tool(
    "test_sampling",
    "Asks the client's LLM (sampling/createMessage) and returns its answer",
    {"type": "object", "properties": {"prompt": {"type": "string", "description": "The prompt"}}, "required": ["prompt"]},
)
async def _sampling(ctx, params):
    if not may_ask(ctx, "sampling"):
        return result(text("The client does not support sampling"), is_error=True)
    prompt = (params.arguments or {}).get("prompt", "")
    answer = await ctx.session.create_message(
        messages=[types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
        max_tokens=100,
        related_request_id=ctx.request_id,
    )
    said = answer.content.text if isinstance(answer.content, types.TextContent) else json.dumps(answer.model_dump(mode="json"))
    return result(text(f"LLM response: {said}"))


async def _elicit(ctx, message: str, schema: dict[str, Any]) -> types.ElicitResult | None:
    if not may_ask(ctx, "elicitation"):
        return None
    return await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)


@tool(
    "test_elicitation",
    "Asks the user (elicitation/create) for a username and an email",
    {"type": "object", "properties": {"message": {"type": "string", "description": "What to ask"}}, "required": ["message"]},
)
async def _elicitation(ctx, params):
    message = (params.arguments or {}).get("message", "Please provide your information")
    answer = await _elicit(
        ctx,
        message,
        {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        },
    )
    if answer is None:
        return result(text("The client does not support elicitation"), is_error=True)
    return result(text(f"User response: action={answer.action}, content={json.dumps(answer.content or {})}"))


@tool("test_elicitation_sep1034_defaults", "Elicitation whose schema has a default for every primitive type")
async def _elicitation_defaults(ctx, params):
    answer = await _elicit(
        ctx,
        "Please review and update the form fields with defaults",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {
                    "type": "string",
                    "description": "User status",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {"type": "boolean", "description": "Verification status", "default": True},
            },
            "required": [],
        },
    )
    if answer is None:
        return result(text("The client does not support elicitation"), is_error=True)
    return result(text(f"Elicitation completed: action={answer.action}, content={json.dumps(answer.content or {})}"))


@tool("test_elicitation_sep1330_enums", "Elicitation with the five enum forms of SEP-1330")
async def _elicitation_enums(ctx, params):
    answer = await _elicit(
        ctx,
        "Please choose from the enum fields",
        {
            "type": "object",
            "properties": {
                "untitledSingle": {"type": "string", "description": "Pick one", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {
                    "type": "string",
                    "description": "Pick one (titled)",
                    "oneOf": [
                        {"const": "value1", "title": "First Option"},
                        {"const": "value2", "title": "Second Option"},
                        {"const": "value3", "title": "Third Option"},
                    ],
                },
                "legacyEnum": {
                    "type": "string",
                    "description": "Pick one (legacy titles)",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "description": "Pick several",
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {
                    "type": "array",
                    "description": "Pick several (titled)",
                    "items": {
                        "anyOf": [
                            {"const": "value1", "title": "First Choice"},
                            {"const": "value2", "title": "Second Choice"},
                            {"const": "value3", "title": "Third Choice"},
                        ]
                    },
                },
            },
            "required": [],
        },
    )
    if answer is None:
        return result(text("The client does not support elicitation"), is_error=True)
    return result(text(f"Elicitation completed: action={answer.action}, content={json.dumps(answer.content or {})}"))


@tool("test_reconnection", "Closes the POST's SSE stream mid-call; the result comes after the client resumes")
async def _reconnection(ctx, params):
    await anyio.sleep(0.1)
    if ctx.close_sse_stream is not None:
        await ctx.close_sse_stream()
    await anyio.sleep(0.3)
    return result(text("Reconnection test completed"))


@tool(
    "json_schema_2020_12_tool",
    "Tool with JSON Schema 2020-12 features",
    {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "$anchor": "addressDef",
                "type": "object",
                "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
            }
        },
        "properties": {
            "name": {"type": "string"},
            "address": {"$ref": "#/$defs/address"},
            "contactMethod": {"type": "string", "enum": ["phone", "email"]},
            "phone": {"type": "string"},
            "email": {"type": "string"},
        },
        "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
        "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
        "then": {"required": ["phone"]},
        "else": {"required": ["email"]},
        "additionalProperties": False,
    },
)
async def _json_schema(ctx, params):
    return result(text(f"Received: {json.dumps(params.arguments or {})}"))


@tool(
    "test_header_param",
    "Echoes a parameter that a 2026-07-28 client also sends as the Mcp-Param-Region header (SEP-2243)",
    {
        "type": "object",
        "properties": {"region": {"type": "string", "description": "Where to run", "x-mcp-header": "Region"}},
        "required": ["region"],
    },
)
async def _header_param(ctx, params):
    return result(text(f"region={(params.arguments or {}).get('region')}"))


@tool(
    "test_structured_content",
    "Returns structured content that matches its output schema (not called by the suite: the probe "
    "checks that definitions and results pass through a gateway unchanged)",
    title="Structured content",
    outputSchema={
        "type": "object",
        "properties": {"temperature": {"type": "number"}, "conditions": {"type": "string"}},
        "required": ["temperature", "conditions"],
    },
    annotations={"title": "Weather (fixed)", "readOnlyHint": True, "idempotentHint": True, "openWorldHint": False},
    icons=[{"src": "data:image/png;base64," + PNG, "mimeType": "image/png", "sizes": ["1x1"]}],
    execution={"taskSupport": "forbidden"},
)
async def _structured(ctx, params):
    data = {"temperature": 22.5, "conditions": "sunny"}
    return {"content": [text(json.dumps(data))], "structuredContent": data}


# 2026-07-28: multi-round-trip requests (InputRequiredResult) ---------------------------------------

NAME_REQUEST = elicit_request("What is your name?", {"name": {"type": "string"}}, ["name"])


@tool("test_input_required_result_elicitation", "Asks for the user's name through an input-required result")
async def _irr_elicitation(ctx, params):
    got = answers(params)
    content = accepted(got.get("user_name"))
    if content is None or not isinstance(content.get("name"), str):
        # Missing, wrong or unusable answers: ask again (not an error).
        return input_required({"user_name": NAME_REQUEST})
    return result(text(f"Hello, {content['name']}!"))


@tool("test_input_required_result_sampling", "Asks the client's LLM through an input-required result")
async def _irr_sampling(ctx, params):
    said = sampled_text(answers(params).get("capital_question"))
    if said is None:
        return input_required({"capital_question": sampling_request("What is the capital of France?", 100)})
    return result(text(f"The model said: {said}"))


@tool("test_input_required_result_list_roots", "Asks for the client's roots through an input-required result")
async def _irr_roots(ctx, params):
    roots = answers(params).get("client_roots")
    if not isinstance(roots, dict) or not isinstance(roots.get("roots"), list):
        return input_required({"client_roots": ROOTS_REQUEST})
    uris = [r.get("uri") for r in roots["roots"] if isinstance(r, dict)]
    return result(text(f"Client roots: {', '.join(str(u) for u in uris) or '(none)'}"))


@tool("test_input_required_result_request_state", "Round-trips an integrity-protected requestState")
async def _irr_state(ctx, params):
    name = "test_input_required_result_request_state"
    state = unseal(params.request_state, name)
    content = accepted(answers(params).get("confirm"))
    if state is None or content is None:
        return input_required(
            {"confirm": elicit_request("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])},
            {"tool": name, "nonce": uuid4().hex},
        )
    return result(text(f"state-ok: confirmed={content.get('ok')}"))


@tool("test_input_required_result_multiple_inputs", "Asks for an elicitation, a sampling and the roots at once")
async def _irr_multiple(ctx, params):
    name = "test_input_required_result_multiple_inputs"
    state = unseal(params.request_state, name)
    got = answers(params)
    who = accepted(got.get("user_name"))
    greeting = sampled_text(got.get("greeting"))
    roots = got.get("client_roots")
    if state is None or who is None or greeting is None or not isinstance(roots, dict):
        return input_required(
            {
                "user_name": NAME_REQUEST,
                "greeting": sampling_request("Generate a greeting", 50),
                "client_roots": ROOTS_REQUEST,
            },
            {"tool": name, "nonce": uuid4().hex},
        )
    return result(text(f"{greeting} {who.get('name')} ({len(roots.get('roots') or [])} roots)"))


@tool("test_input_required_result_multi_round", "Two rounds of questions, with a requestState that evolves")
async def _irr_multi_round(ctx, params):
    name = "test_input_required_result_multi_round"
    state = unseal(params.request_state, name)
    got = answers(params)
    step1 = elicit_request("Step 1: What is your name?", {"name": {"type": "string"}}, ["name"])
    step2 = elicit_request("Step 2: What is your favorite color?", {"color": {"type": "string"}}, ["color"])
    if state is None:
        return input_required({"step1": step1}, {"tool": name, "round": 1})
    if state.get("round") == 1:
        who = accepted(got.get("step1"))
        if who is None:
            return input_required({"step1": step1}, {"tool": name, "round": 1})
        return input_required({"step2": step2}, {"tool": name, "round": 2, "name": who.get("name")})
    color = accepted(got.get("step2"))
    if color is None:
        return input_required({"step2": step2}, state)
    return result(text(f"{state.get('name')} likes {color.get('color')}"))


@tool("test_input_required_result_tampered_state", "Refuses a requestState that was changed by the client")
async def _irr_tampered(ctx, params):
    name = "test_input_required_result_tampered_state"
    state = unseal(params.request_state, name)  # a tampered state raises -32602
    content = accepted(answers(params).get("confirm"))
    if state is None or content is None:
        return input_required(
            {"confirm": elicit_request("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])},
            {"tool": name, "nonce": uuid4().hex},
        )
    return result(text("state-ok"))


@tool("test_input_required_result_capabilities", "Asks only for what the client declared it can answer")
async def _irr_capabilities(ctx, params):
    got = answers(params)
    requests: dict[str, Any] = {}
    if client_has(ctx, "sampling") and sampled_text(got.get("question")) is None:
        requests["question"] = sampling_request("Say something", 20)
    if client_has(ctx, "elicitation") and accepted(got.get("user_name")) is None:
        requests["user_name"] = NAME_REQUEST
    if requests:
        return input_required(requests)
    return result(text("capabilities-ok"))


@tool("test_streaming_elicitation", "Needs the user's name; on 2026-07-28 it asks in its result, never by a request")
async def _streaming_elicitation(ctx, params):
    content = accepted(answers(params).get("user_name"))
    if content is None:
        return input_required({"user_name": NAME_REQUEST})
    return result(text(f"Hello, {content.get('name')}!"))


@tool("test_missing_capability", "Needs the client's sampling capability; refuses a client without it")
async def _missing_capability(ctx, params):
    if not client_has(ctx, "sampling"):
        raise MCPError(
            MISSING_REQUIRED_CLIENT_CAPABILITY,
            "This tool requires the client's sampling capability",
            {"requiredCapabilities": {"sampling": {}}},
        )
    return result(text("sampling capability present"))


@tool("test_trigger_tool_change", "Adds a tool, so that the tool list changes")
async def _trigger_tools(ctx, params):
    STATE.extra_tools += 1
    await STATE.bus.publish(ToolsListChanged())
    await _legacy_notify(ctx, "tools")
    return result(text(f"tool list changed ({STATE.extra_tools} added)"))


@tool("test_trigger_prompt_change", "Adds a prompt, so that the prompt list changes")
async def _trigger_prompts(ctx, params):
    STATE.extra_prompts += 1
    await STATE.bus.publish(PromptsListChanged())
    await _legacy_notify(ctx, "prompts")
    return result(text(f"prompt list changed ({STATE.extra_prompts} added)"))


async def _legacy_notify(ctx, what: str) -> None:
    if is_modern(ctx):
        return
    if what == "tools":
        await ctx.session.send_tool_list_changed()
    else:
        await ctx.session.send_prompt_list_changed()


def all_tools() -> list[dict[str, Any]]:
    tools = [definition for definition, _ in TOOLS.values()]
    for i in range(STATE.extra_tools):
        tools.append({"name": f"dynamic_tool_{i + 1}", "description": "Added by test_trigger_tool_change", "inputSchema": NO_ARGS})
    return tools


async def list_tools(ctx, params) -> dict[str, Any]:
    return {"tools": all_tools()}


async def call_tool(ctx, params: types.CallToolRequestParams) -> dict[str, Any]:
    entry = TOOLS.get(params.name)
    if entry is None:
        if params.name.startswith("dynamic_tool_"):
            return result(text(f"{params.name} ran"))
        raise MCPError(INVALID_PARAMS, f"Unknown tool: {params.name}")
    return await in_this_era(ctx, params, entry[1])


def is_modern(ctx: ServerRequestContext[Any, Any]) -> bool:
    return ctx.protocol_version >= "2026-07-28"


async def in_this_era(ctx, params, handler) -> dict[str, Any]:
    """What `handler` answers, in the form the connection's protocol revision has.

    On 2026-07-28 a handler that needs the client's input returns an InputRequiredResult and the
    client retries. Before 2026-07-28 there is no such result: the server asks the client itself
    (elicitation/create, sampling/createMessage, roots/list on the call's own stream) and answers
    when it has the responses. Each handler is written once, for the new form; this runs its
    input requests as server-to-client requests on the older revisions (as a dual-era server
    would), so that a client such as Writ's upstream connection sees them the old way."""
    out = await handler(ctx, params)
    rounds = 0
    while not is_modern(ctx) and isinstance(out, dict) and out.get("resultType") == "input_required":
        rounds += 1
        if rounds > 5:
            return result(text("Too many rounds of input requests"), is_error=True)
        responses = {}
        for key, request in (out.get("inputRequests") or {}).items():
            try:
                responses[key] = await ask_client(ctx, request)
            except MCPError as e:
                return result(text(f"The client could not answer {request.get('method')}: {e.message}"), is_error=True)
            action = responses[key].get("action")
            if request.get("method") == "elicitation/create" and action != "accept":
                # The user said no: that is the answer (asking again would only nag).
                return result(text(f"User response: action={action}"))
        params = params.model_copy(update={"input_responses": responses, "request_state": out.get("requestState")})
        out = await handler(ctx, params)
    return out


async def ask_client(ctx, request: dict[str, Any]) -> dict[str, Any]:
    """One input request, sent to the client as a request on the call's stream; its answer as JSON."""
    from mcp.shared.message import ServerMessageMetadata

    method, p = request["method"], request.get("params") or {}
    needs = {"elicitation/create": "elicitation", "sampling/createMessage": "sampling", "roots/list": "roots"}
    if method in needs and not may_ask(ctx, needs[method]):
        raise MCPError(INVALID_PARAMS, f"the client did not declare the {needs[method]} capability")
    related = ServerMessageMetadata(related_request_id=ctx.request_id)
    if method == "elicitation/create":
        typed = types.ElicitRequest(params=types.ElicitRequestFormParams.model_validate(p, by_name=False))
        answer = await ctx.session.send_request(typed, types.ElicitResult, metadata=related)
    elif method == "sampling/createMessage":
        typed = types.CreateMessageRequest(params=types.CreateMessageRequestParams.model_validate(p, by_name=False))
        answer = await ctx.session.send_request(typed, types.CreateMessageResult, metadata=related)
    elif method == "roots/list":
        answer = await ctx.session.send_request(types.ListRootsRequest(), types.ListRootsResult, metadata=related)
    else:
        raise MCPError(INVALID_PARAMS, f"cannot ask the client for {method}")
    return answer.model_dump(by_alias=True, mode="json", exclude_none=True)


def input_schema(name: str) -> dict[str, Any] | None:
    entry = TOOLS.get(name)
    return entry[0]["inputSchema"] if entry else None


# --- resources ---------------------------------------------------------------------------------

STATIC_TEXT = "This is the content of the static text resource."
RESOURCES = [
    {
        "uri": "test://static-text",
        "name": "static-text",
        "description": "A static text resource",
        "mimeType": "text/plain",
    },
    {
        "uri": "test://static-binary",
        "name": "static-binary",
        "description": "A static binary resource (a PNG image)",
        "mimeType": "image/png",
    },
    {
        "uri": "test://watched-resource",
        "name": "watched-resource",
        "description": "A resource clients may subscribe to",
        "mimeType": "text/plain",
    },
]
TEMPLATE_PREFIX, TEMPLATE_SUFFIX = "test://template/", "/data"


async def list_resources(ctx, params) -> dict[str, Any]:
    return {"resources": RESOURCES}


async def list_templates(ctx, params) -> dict[str, Any]:
    return {
        "resourceTemplates": [
            {
                "uriTemplate": "test://template/{id}/data",
                "name": "template-data",
                "description": "Data for an id",
                "mimeType": "application/json",
            }
        ]
    }


async def read_resource(ctx, params: types.ReadResourceRequestParams) -> dict[str, Any]:
    uri = str(params.uri)
    if uri == "test://static-text":
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": STATIC_TEXT}]}
    if uri == "test://static-binary":
        return {"contents": [{"uri": uri, "mimeType": "image/png", "blob": PNG}]}
    if uri == "test://watched-resource":
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": "Watched resource content"}]}
    if uri.startswith(TEMPLATE_PREFIX) and uri.endswith(TEMPLATE_SUFFIX):
        rid = uri[len(TEMPLATE_PREFIX) : -len(TEMPLATE_SUFFIX)]
        if rid and "/" not in rid:
            body = {"id": rid, "templateTest": True, "data": f"Data for ID: {rid}"}
            return {"contents": [{"uri": uri, "mimeType": "application/json", "text": json.dumps(body)}]}
    raise MCPError(INVALID_PARAMS, "Resource not found", {"uri": uri})


async def subscribe(ctx, params: types.SubscribeRequestParams) -> dict[str, Any]:
    STATE.subscriptions.add(str(params.uri))
    return {}


async def unsubscribe(ctx, params: types.UnsubscribeRequestParams) -> dict[str, Any]:
    STATE.subscriptions.discard(str(params.uri))
    return {}


# --- prompts -----------------------------------------------------------------------------------

PROMPTS = [
    {"name": "test_simple_prompt", "description": "A simple prompt without arguments"},
    {
        "name": "test_prompt_with_arguments",
        "description": "A prompt with two required arguments",
        "arguments": [
            {"name": "arg1", "description": "First test argument", "required": True},
            {"name": "arg2", "description": "Second test argument", "required": True},
        ],
    },
    {
        "name": "test_prompt_with_embedded_resource",
        "description": "A prompt that embeds a resource",
        "arguments": [{"name": "resourceUri", "description": "URI of the resource to embed", "required": True}],
    },
    {"name": "test_prompt_with_image", "description": "A prompt with an image"},
    {"name": "test_input_required_result_prompt", "description": "A prompt that asks the user for context first"},
]


def user(content: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": content}


async def list_prompts(ctx, params) -> dict[str, Any]:
    prompts = list(PROMPTS)
    for i in range(STATE.extra_prompts):
        prompts.append({"name": f"dynamic_prompt_{i + 1}", "description": "Added by test_trigger_prompt_change"})
    return {"prompts": prompts}


async def get_prompt(ctx, params: types.GetPromptRequestParams) -> dict[str, Any]:
    return await in_this_era(ctx, params, prompt_messages)


async def prompt_messages(ctx, params: types.GetPromptRequestParams) -> dict[str, Any]:
    args = params.arguments or {}
    if params.name == "test_simple_prompt":
        return {"messages": [user(text("This is a simple prompt for testing."))]}
    if params.name == "test_prompt_with_arguments":
        missing = [a for a in ("arg1", "arg2") if a not in args]
        if missing:
            raise MCPError(INVALID_PARAMS, f"Missing required arguments: {', '.join(missing)}")
        return {"messages": [user(text(f"Prompt with arguments: arg1='{args['arg1']}', arg2='{args['arg2']}'"))]}
    if params.name == "test_prompt_with_embedded_resource":
        uri = args.get("resourceUri")
        if not uri:
            raise MCPError(INVALID_PARAMS, "Missing required argument: resourceUri")
        return {
            "messages": [
                user(
                    {
                        "type": "resource",
                        "resource": {"uri": uri, "mimeType": "text/plain", "text": "Embedded resource content for testing."},
                    }
                ),
                user(text("Please process the embedded resource above.")),
            ]
        }
    if params.name == "test_prompt_with_image":
        return {
            "messages": [
                user({"type": "image", "data": PNG, "mimeType": "image/png"}),
                user(text("Please analyze the image above.")),
            ]
        }
    if params.name == "test_input_required_result_prompt":
        content = accepted(answers(params).get("user_context"))
        if content is None:
            return input_required(
                {
                    "user_context": elicit_request(
                        "What context should the prompt use?", {"context": {"type": "string"}}, ["context"]
                    )
                }
            )
        return {"messages": [user(text(f"Use this context: {content.get('context')}"))]}
    if params.name.startswith("dynamic_prompt_"):
        return {"messages": [user(text(f"{params.name}"))]}
    raise MCPError(INVALID_PARAMS, f"Unknown prompt: {params.name}")


# --- completion, logging -----------------------------------------------------------------------

COMPLETIONS = {
    "arg1": ["paris", "park", "party", "test-value-1", "test-value-2"],
    "arg2": ["alpha", "beta", "gamma"],
    "id": ["1", "42", "123"],
}


async def complete(ctx, params: types.CompleteRequestParams) -> dict[str, Any]:
    candidates = COMPLETIONS.get(params.argument.name, [])
    values = [v for v in candidates if v.startswith(params.argument.value)]
    return {"completion": {"values": values, "total": len(values), "hasMore": False}}


async def set_level(ctx, params: types.SetLevelRequestParams) -> dict[str, Any]:
    STATE.log_levels[id(ctx.session._connection)] = params.level  # noqa: SLF001
    return {}


# --- the server --------------------------------------------------------------------------------


def completes(handler):
    """The handler, with `resultType: "complete"` on what it returns: 2026-07-28 requires it on
    every result, and the SDK strips it again from results on the older revisions."""

    async def wrapped(ctx, params):
        out = await handler(ctx, params)
        if isinstance(out, dict) and "resultType" not in out:
            out = {**out, "resultType": "complete"}
        return out

    return wrapped


def build() -> Server[Any]:
    hint = CacheHint(ttl_ms=0, scope="private")
    server: Server[Any] = Server(
        "writ-conformance-upstream",
        version="1.0.0",
        instructions="The MCP server of the official conformance suite's server scenarios.",
        cache_hints={
            "tools/list": hint,
            "prompts/list": hint,
            "resources/list": hint,
            "resources/templates/list": hint,
            "resources/read": hint,
        },
        get_tool_input_schema=input_schema,
        on_list_tools=completes(list_tools),
        on_call_tool=completes(call_tool),
        on_list_resources=completes(list_resources),
        on_list_resource_templates=completes(list_templates),
        on_read_resource=completes(read_resource),
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=unsubscribe,
        on_subscriptions_listen=ListenHandler(STATE.bus),
        on_list_prompts=completes(list_prompts),
        on_get_prompt=completes(get_prompt),
        on_completion=completes(complete),
        on_set_logging_level=set_level,
    )
    server.middleware.append(log_initialize)
    return server


async def log_initialize(ctx, call_next):
    """Who connected, with which revision and capabilities (on stderr: evidence for the docs)."""
    if ctx.method == "initialize" and isinstance(ctx.params, dict):
        p = ctx.params
        print(
            f"initialize: protocolVersion={p.get('protocolVersion')} clientInfo={json.dumps(p.get('clientInfo'))}"
            f" capabilities={json.dumps(p.get('capabilities'))}",
            file=sys.stderr,
            flush=True,
        )
    return await call_next(ctx)


class MemoryEventStore(EventStore):
    """Every SSE event of this process, so that a client can resume a stream (Last-Event-ID)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []  # (event id, stream id, message)

    async def store_event(self, stream_id, message):
        event_id = f"{len(self.events) + 1}-{uuid4().hex[:8]}"
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback):
        index = next((i for i, (eid, _, _) in enumerate(self.events) if eid == last_event_id), None)
        if index is None:
            return None
        stream_id = self.events[index][1]
        for eid, sid, message in self.events[index + 1 :]:
            if sid == stream_id and message is not None:
                await send_callback(EventMessage(message, eid))
        return stream_id


def serve_http(host: str, port: int) -> None:
    import uvicorn

    from mcp.server.transport_security import TransportSecuritySettings

    server = build()
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        event_store=MemoryEventStore(),
        retry_interval=1000,
        host=host,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        ),
    )
    print(f"conformance upstream on http://{host}:{port}/mcp", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level=os.environ.get("UPSTREAM_LOG", "warning"))


async def serve_stdio() -> None:
    from mcp.server.stdio import stdio_server

    server = build()
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--stdio", action="store_true", help="serve over standard input and output")
    how.add_argument("--http", type=int, metavar="PORT", help="serve Streamable HTTP at http://HOST:PORT/mcp")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on with --http (default 127.0.0.1)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.stdio:
        anyio.run(serve_stdio)
    else:
        serve_http(args.host, args.http)


if __name__ == "__main__":
    main()
