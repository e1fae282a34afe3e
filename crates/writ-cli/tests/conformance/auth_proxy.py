#!/usr/bin/env python3
"""A loopback HTTP/1.1 proxy that adds fixed headers (the agent's credentials) to every request.

The official MCP conformance suite (`@modelcontextprotocol/conformance` 0.1.16 and
0.2.0-alpha.12) tests a server reachable at `--url` and has no way to send an `Authorization`
header: its MCP client, its raw `fetch` probes and its `undici` probes all send only their own
headers (upstream feature request: modelcontextprotocol/conformance#453). Writ's `/mcp` requires
an authenticated caller. This proxy stands between the two: the suite talks to the proxy, the proxy
adds `Authorization: Bearer <delegated token>` (and whatever else it was given) and forwards the
bytes to Writ unchanged otherwise.

Everything else passes through as it was sent, in particular `Host` and `Origin`, so that the
suite's DNS-rebinding scenario tests Writ's own checks; responses (SSE streams included) are
relayed byte for byte as they arrive. Request bodies are framed by `Content-Length` or chunked
transfer coding, so keep-alive connections carrying several requests work.

    CONFORMANCE_PROXY_HEADERS='Authorization: Bearer ey...' \\
        python3 auth_proxy.py --listen 18931 --target 127.0.0.1:18080

The header values come from the environment (one `Name: value` per line), never from the command
line, so they do not show in process listings. The proxy prints `listening on PORT` when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

MAX_HEAD = 64 * 1024


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


class Proxy:
    def __init__(self, target_host: str, target_port: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.headers = headers
        self.replaced = {name.lower() for name, _ in headers}

    def rewrite(self, head: bytes) -> tuple[bytes, int | None, bool]:
        """The request head with the configured headers set; its body length, or chunked."""
        lines = head.split(b"\r\n")
        request_line, fields = lines[0], [line for line in lines[1:] if line]
        kept = []
        length: int | None = None
        chunked = False
        for field in fields:
            name, _, value = field.partition(b":")
            lname = name.strip().lower()
            if lname in self.replaced:
                continue
            if lname == b"content-length":
                length = int(value.strip())
            elif lname == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            kept.append(field)
        kept.extend(name + b": " + value for name, value in self.headers)
        return b"\r\n".join([request_line, *kept]) + b"\r\n\r\n", length, chunked

    async def copy_body(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length, chunked) -> None:
        if chunked:
            while True:
                size_line = await reader.readuntil(b"\r\n")
                writer.write(size_line)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    # Trailers, up to the empty line.
                    while True:
                        line = await reader.readuntil(b"\r\n")
                        writer.write(line)
                        if line == b"\r\n":
                            return
                writer.write(await reader.readexactly(size + 2))
        elif length:
            remaining = length
            while remaining:
                chunk = await reader.read(min(remaining, 65536))
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", remaining)
                writer.write(chunk)
                remaining -= len(chunk)

    async def requests(self, client: asyncio.StreamReader, upstream: asyncio.StreamWriter) -> None:
        """Client → target: each request's head rewritten, its body copied as framed."""
        try:
            while True:
                try:
                    head = await client.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed between requests
                except asyncio.LimitOverrunError:
                    return
                new_head, length, chunked = self.rewrite(head[:-4])
                upstream.write(new_head)
                await self.copy_body(client, upstream, length, chunked)
                await upstream.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            try:
                upstream.write_eof()
            except (OSError, RuntimeError):
                pass

    @staticmethod
    async def responses(upstream: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        """Target → client: bytes as they come (SSE events are not held back)."""
        try:
            while True:
                chunk = await upstream.read(65536)
                if not chunk:
                    return
                client.write(chunk)
                await client.drain()
        except ConnectionError:
            return

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port, limit=MAX_HEAD)
        except OSError:
            client_writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            client_writer.close()
            return
        forward = asyncio.create_task(self.requests(client_reader, up_writer))
        back = asyncio.create_task(self.responses(up_reader, client_writer))
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=int, required=True, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    proxy = Proxy(host or "127.0.0.1", int(port), parse_headers(os.environ.get("CONFORMANCE_PROXY_HEADERS", "")))
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", args.listen, limit=MAX_HEAD)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
