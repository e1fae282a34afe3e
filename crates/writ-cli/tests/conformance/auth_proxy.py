#!/usr/bin/env python3
"""A loopback HTTP/1.1 proxy that adds fixed headers (the agent's credentials) to every request.

The official MCP conformance suite (`@modelcontextprotocol/conformance` 0.1.16 and
0.2.0-alpha.12) tests a server reachable at `--url` and has no way to send an `Authorization`
header: its MCP client, its raw `fetch` probes and its `undici` probes all send only their own
headers (upstream feature request: modelcontextprotocol/conformance#453). Writ's `/mcp` requires
an authenticated caller. This proxy stands between the two: the suite talks to the proxy, the proxy
adds `Authorization: Bearer <delegated token>` (and whatever else it was given) and forwards
everything else as it was sent, in particular `Host` and `Origin`, so that the suite's
DNS-rebinding scenario tests Writ's own checks. Request and response bodies are relayed as they
arrive (an SSE event is never held back); keep-alive connections with several requests work
(bodies framed by `Content-Length` or chunked coding).

Two diagnostic options, off by default:

- `--log FILE` writes every exchange as JSON lines: request line, headers (credentials left
  out), JSON body; response status, headers, and each JSON message of the body or SSE stream
  (long strings shortened). This is the evidence behind docs/mcp-conformance.md.
- `--rename PREFIX` simulates the "keep the upstream's names" feature Writ lacks: a `tools/call`
  for `X` is sent to Writ as `PREFIX` + `X` (body and `Mcp-Name` header), and `PREFIX` is
  stripped from the tool names of every `tools/list` answer. The suite then shows what fails
  *besides* the names. A score with it is a diagnosis, never Writ's score.

    CONFORMANCE_PROXY_HEADERS='Authorization: Bearer ey...' \\
        python3 auth_proxy.py --listen 18931 --target 127.0.0.1:18080 [--log x.jsonl] [--rename conformance.]

The header values come from the environment (one `Name: value` per line), never from the command
line, so they do not show in process listings. The proxy prints `listening on PORT` when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time

MAX_HEAD = 64 * 1024
CONNECTIONS = itertools.count(1)


def parse_headers(spec: str) -> list[tuple[bytes, bytes]]:
    out = []
    for line in spec.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"CONFORMANCE_PROXY_HEADERS: not a `Name: value` line: {line.split(':')[0]!r}...")
        out.append((name.strip().encode("latin-1"), value.strip().encode("latin-1")))
    return out


def split_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    lines = head.split(b"\r\n")
    fields = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            fields.append((name.strip(), value.strip()))
    return lines[0], fields


def join_head(first: bytes, fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"\r\n".join([first, *(n + b": " + v for n, v in fields)]) + b"\r\n\r\n"


def field(fields: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for n, v in fields:
        if n.lower() == name:
            return v
    return None


def shorten(value, limit: int = 300):
    """A copy of a JSON value with long strings cut (images, audio)."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"...[{len(value)} chars]"
    if isinstance(value, list):
        return [shorten(v, limit) for v in value]
    if isinstance(value, dict):
        return {k: shorten(v, limit) for k, v in value.items()}
    return value


class Proxy:
    def __init__(self, target_host: str, target_port: int, headers, log_path: str | None, rename: str | None):
        self.target_host = target_host
        self.target_port = target_port
        self.headers = headers
        self.replaced = {name.lower() for name, _ in headers}
        self.log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115
        self.rename = rename

    # --- evidence ---------------------------------------------------------------------------------

    def record(self, conn: int, what: str, **data) -> None:
        if self.log:
            self.log.write(json.dumps({"t": round(time.time(), 3), "conn": conn, "what": what, **data}) + "\n")

    @staticmethod
    def shown(fields) -> dict[str, str]:
        hidden = {b"authorization", b"cookie", b"writ-grant"}
        return {n.decode("latin-1"): ("[hidden]" if n.lower() in hidden else v.decode("latin-1")) for n, v in fields}

    # --- the names simulation -------------------------------------------------------------------

    def rename_request(self, message):
        if isinstance(message, list):
            return [self.rename_request(m) for m in message]
        if isinstance(message, dict) and message.get("method") == "tools/call":
            params = message.get("params")
            if isinstance(params, dict) and isinstance(params.get("name"), str):
                name = params["name"]
                if not name.startswith(self.rename) and not name.startswith("writ."):
                    params["name"] = self.rename + name
        return message

    @staticmethod
    def tool_name(message) -> str | None:
        if isinstance(message, dict) and message.get("method") == "tools/call":
            params = message.get("params")
            if isinstance(params, dict) and isinstance(params.get("name"), str):
                return params["name"]
        return None

    def rename_response(self, message):
        if isinstance(message, list):
            return [self.rename_response(m) for m in message]
        if isinstance(message, dict):
            result = message.get("result")
            if isinstance(result, dict) and isinstance(result.get("tools"), list):
                for tool in result["tools"]:
                    if isinstance(tool, dict) and str(tool.get("name", "")).startswith(self.rename):
                        tool["name"] = tool["name"][len(self.rename) :]
        return message

    # --- client → target ------------------------------------------------------------------------

    async def requests(self, conn, client: asyncio.StreamReader, upstream: asyncio.StreamWriter, pending) -> None:
        try:
            while True:
                try:
                    head = await client.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return  # the client closed between requests
                first, fields = split_head(head[:-4])
                fields = [(n, v) for n, v in fields if n.lower() not in self.replaced]
                fields.extend(self.headers)
                length = field(fields, b"content-length")
                chunked = b"chunked" in (field(fields, b"transfer-encoding") or b"").lower()
                body = None
                if length is not None and not chunked:
                    body = await client.readexactly(int(length))
                    message = None
                    try:
                        message = json.loads(body) if body else None
                    except ValueError:
                        pass
                    if self.rename and message is not None:
                        before = self.tool_name(message)
                        message = self.rename_request(message)
                        body = json.dumps(message).encode()
                        fields = [(n, v) for n, v in fields if n.lower() != b"content-length"]
                        fields.append((b"Content-Length", str(len(body)).encode()))
                        # The Mcp-Name header follows the body's name, unless the client sent a
                        # mismatch on purpose (the suite's header-validation probes).
                        header = field(fields, b"mcp-name")
                        after = self.tool_name(message)
                        if header is not None and before and header.strip().decode() == before and after != before:
                            fields = [(n, v) for n, v in fields if n.lower() != b"mcp-name"]
                            fields.append((b"Mcp-Name", after.encode()))
                    self.record(
                        conn,
                        "request",
                        line=first.decode("latin-1"),
                        headers=self.shown(fields),
                        body=shorten(message) if message is not None else body[:300].decode(errors="replace"),
                    )
                else:
                    self.record(conn, "request", line=first.decode("latin-1"), headers=self.shown(fields))
                pending.append(first.split(b" ")[0])
                upstream.write(join_head(first, fields))
                if body is not None:
                    upstream.write(body)
                elif chunked:
                    await self.copy_chunked(client, upstream)
                await upstream.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return

    @staticmethod
    async def copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    line = await reader.readuntil(b"\r\n")
                    writer.write(line)
                    if line == b"\r\n":
                        return
            writer.write(await reader.readexactly(size + 2))

    # --- target → client ------------------------------------------------------------------------

    async def responses(self, conn, upstream: asyncio.StreamReader, client: asyncio.StreamWriter, pending) -> None:
        try:
            while True:
                try:
                    head = await upstream.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as e:
                    if e.partial:
                        client.write(e.partial)
                    return
                first, fields = split_head(head[:-4])
                status = int(first.split(b" ")[1])
                method = pending.pop(0) if pending and status >= 200 else b"GET"
                ctype = (field(fields, b"content-type") or b"").decode("latin-1")
                self.record(conn, "response", line=first.decode("latin-1"), headers=self.shown(fields))
                if 100 <= status < 200:
                    client.write(head)
                    continue
                length = field(fields, b"content-length")
                chunked = b"chunked" in (field(fields, b"transfer-encoding") or b"").lower()
                if method == b"HEAD" or status in (204, 304):
                    client.write(head)
                elif chunked:
                    client.write(head)
                    await self.relay_chunked(conn, upstream, client, ctype)
                elif length is not None:
                    body = await upstream.readexactly(int(length))
                    body = self.transform_whole(conn, body, ctype)
                    fields = [(n, v) for n, v in fields if n.lower() != b"content-length"]
                    fields.append((b"content-length", str(len(body)).encode()))
                    client.write(join_head(first, fields) + body)
                else:  # until the target closes
                    client.write(head)
                    stream = SseRewriter(self, conn) if "event-stream" in ctype else None
                    while chunk := await upstream.read(65536):
                        client.write(stream.feed(chunk) if stream else chunk)
                        await client.drain()
                    return
                await client.drain()
        except ConnectionError:
            return

    def transform_whole(self, conn, body: bytes, ctype: str) -> bytes:
        if "json" in ctype:
            try:
                message = json.loads(body)
            except ValueError:
                self.record(conn, "body", text=body[:300].decode(errors="replace"))
                return body
            self.record(conn, "message", body=shorten(message))
            if self.rename:
                return json.dumps(self.rename_response(message)).encode()
            return body
        if "event-stream" in ctype:
            return SseRewriter(self, conn).feed(body, final=True)
        if body:
            self.record(conn, "body", text=body[:300].decode(errors="replace"))
        return body

    async def relay_chunked(self, conn, upstream, client, ctype: str) -> None:
        stream = SseRewriter(self, conn) if "event-stream" in ctype else None
        whole = bytearray() if stream is None and "json" in ctype else None
        while True:
            size_line = await upstream.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await upstream.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers are dropped
                if whole is not None:
                    data = self.transform_whole(conn, bytes(whole), ctype)
                    client.write(b"%x\r\n%s\r\n" % (len(data), data) if data else b"")
                if stream is not None:
                    rest = stream.feed(b"", final=True)
                    if rest:
                        client.write(b"%x\r\n%s\r\n" % (len(rest), rest))
                client.write(b"0\r\n\r\n")
                await client.drain()
                return
            data = (await upstream.readexactly(size + 2))[:-2]
            if whole is not None:
                whole.extend(data)
                continue
            if stream is not None:
                data = stream.feed(data)
            if data:
                client.write(b"%x\r\n%s\r\n" % (len(data), data))
                await client.drain()

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        conn = next(CONNECTIONS)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port, limit=MAX_HEAD)
        except OSError:
            client_writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            client_writer.close()
            return
        pending: list[bytes] = []
        forward = asyncio.create_task(self.requests(conn, client_reader, up_writer, pending))
        back = asyncio.create_task(self.responses(conn, up_reader, client_writer, pending))
        # HTTP clients do not half-close while they wait for an answer: when either side is done,
        # the exchange is over.
        await asyncio.wait({forward, back}, return_when=asyncio.FIRST_COMPLETED)
        for task in (forward, back):
            task.cancel()
        for writer in (up_writer, client_writer):
            try:
                writer.close()
            except OSError:
                pass


class SseRewriter:
    """Passes an SSE stream line by line, logging (and with --rename, rewriting) each `data:` JSON."""

    def __init__(self, proxy: Proxy, conn: int) -> None:
        self.proxy = proxy
        self.conn = conn
        self.buffer = b""

    def feed(self, data: bytes, final: bool = False) -> bytes:
        """The complete lines so far (a partial line waits for its end; SSE events end with one)."""
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        out = b"".join(self.line(line) + b"\n" for line in lines)
        if final and self.buffer:
            out += self.line(self.buffer)
            self.buffer = b""
        return out

    def line(self, line: bytes) -> bytes:
        cr = line.endswith(b"\r")
        text = line[:-1] if cr else line
        if text.startswith(b"data:"):
            payload = text[5:].lstrip(b" ")
            try:
                message = json.loads(payload)
            except ValueError:
                return line
            self.proxy.record(self.conn, "event", body=shorten(message))
            if self.proxy.rename:
                text = b"data: " + json.dumps(self.proxy.rename_response(message)).encode()
        elif text.startswith((b"id:", b"retry:", b"event:")):
            self.proxy.record(self.conn, "event-field", text=text.decode(errors="replace"))
        return text + (b"\r" if cr else b"")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=int, required=True, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--log", help="write every exchange to this file (JSON lines)")
    parser.add_argument("--rename", help="simulate kept names: add this prefix to called tools, strip it from listed ones")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    proxy = Proxy(
        host or "127.0.0.1",
        int(port),
        parse_headers(os.environ.get("CONFORMANCE_PROXY_HEADERS", "")),
        args.log,
        args.rename,
    )
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", args.listen, limit=MAX_HEAD)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
