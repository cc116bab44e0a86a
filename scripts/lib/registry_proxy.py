"""The only way out of scripts/fresh-machine's network namespace: an allow-listed HTTP proxy.

Two halves, because the namespace has nothing but its own loopback (no veth, no route, so the
host's services cannot stand in for a missing step):

* ``serve --socket PATH --allow HOST ...`` runs on the host. It listens on a Unix socket (a path
  on the shared filesystem, reachable from any network namespace) and forwards ``CONNECT host:443``
  (https: pip, npm) and absolute-form ``GET http://host/...`` (apt) to allow-listed hosts only;
  anything else gets 403.
* ``relay --socket PATH --port N`` runs inside the namespace (``ip netns exec``) and relays each
  TCP connection to 127.0.0.1:N to that socket, so clients use ``http_proxy=http://127.0.0.1:N``.

Standard library only: it runs with the host's python3 before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys

HEADER_LIMIT_BYTES = 64 * 1024
CONNECT_TIMEOUT_SECONDS = 30.0


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter], b: tuple) -> None:
    await asyncio.gather(pipe(a[0], b[1]), pipe(b[0], a[1]))


def log(message: str) -> None:
    print(f"[registry-proxy] {message}", file=sys.stderr, flush=True)


class Proxy:
    def __init__(self, allow: set[str]) -> None:
        self.allow = allow

    def allowed(self, host: str) -> bool:
        return host in self.allow

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = (lines[0].split(" ") + ["", "", ""])[:3]
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            await self.tunnel(reader, writer, host, int(port or 443))
        elif target.startswith("http://"):
            await self.forward(reader, writer, method, target, version, lines[1:])
        else:
            await self.refuse(writer, "only CONNECT and absolute http:// requests")

    async def refuse(self, writer: asyncio.StreamWriter, why: str) -> None:
        log(f"refused: {why}")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def open(self, host: str, port: int):
        return await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_SECONDS)

    async def tunnel(self, reader, writer, host: str, port: int) -> None:
        if not self.allowed(host) or port != 443:
            await self.refuse(writer, f"CONNECT {host}:{port}")
            return
        try:
            upstream = await self.open(host, port)
        except (TimeoutError, OSError) as exc:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            log(f"CONNECT {host}:{port} failed: {exc!r}")
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await splice((reader, writer), upstream)

    async def forward(self, reader, writer, method: str, target: str, version: str, headers: list[str]) -> None:
        rest = target.removeprefix("http://")
        authority, _, path = rest.partition("/")
        host, _, port = authority.partition(":")
        if not self.allowed(host):
            await self.refuse(writer, f"{method} http://{host}")
            return
        try:
            upstream = await self.open(host, int(port or 80))
        except (TimeoutError, OSError) as exc:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            log(f"{host} failed: {exc!r}")
            writer.close()
            return
        # One request per connection (Connection: close): a client reusing the connection for
        # another host would otherwise reach the first one.
        kept = [h for h in headers if h and not h.lower().startswith(("connection:", "proxy-connection:"))]
        request = "\r\n".join([f"{method} /{path} {version}", *kept, "Connection: close", "", ""])
        upstream[1].write(request.encode("latin-1"))
        await upstream[1].drain()
        await splice((reader, writer), upstream)


async def serve(socket_path: str, allow: set[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    proxy = Proxy(allow)
    server = await asyncio.start_unix_server(proxy.handle, socket_path, limit=HEADER_LIMIT_BYTES)
    os.chmod(socket_path, 0o600)
    log(f"serving on {socket_path} for {', '.join(sorted(allow))}")
    async with server:
        await server.serve_forever()


async def relay(socket_path: str, port: int) -> None:
    async def handle(reader, writer):
        try:
            upstream = await asyncio.open_unix_connection(socket_path)
        except OSError:
            writer.close()
            return
        await splice((reader, writer), upstream)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    log(f"relaying 127.0.0.1:{port} -> {socket_path}")
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--socket", required=True)
    s.add_argument("--allow", nargs="+", required=True)
    r = sub.add_parser("relay")
    r.add_argument("--socket", required=True)
    r.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        if args.mode == "serve":
            asyncio.run(serve(args.socket, set(args.allow)))
        else:
            asyncio.run(relay(args.socket, args.port))


if __name__ == "__main__":
    main()
