"""A hostile model server for tests: a raw HTTP/1.1 socket server that answers ``POST /infer``
in whichever bad way its mode says (issue 11, defect 2/3/11).

    python -m tests.support.hostile_server --port 8123 [--mode ok]
    POST /admin/mode {"mode": "nan"}     change the mode at run time
    GET  /admin/count                    {"calls": N}: /infer requests read so far
    GET  /healthz                        200

Modes are the keys of ``ANSWERS`` plus:

* ``slow_drip``: a valid answer, one byte every DRIP_PAUSE_S;
* ``truncated``: Content-Length promises more than is sent, then the connection closes;
* ``slow_500``: works SLOW_S, then answers 500;
* ``drop``: every request is read and counted, and the connection closed without an answer;
* ``stale``: a valid answer with keep-alive, but the next request on the same connection is
  read and the connection closed without a byte of answer (a server closing an idle
  keep-alive connection just as the client reuses it).

Raw sockets, not a framework, so each byte on the wire is the test's choice.
"""

from __future__ import annotations

import gzip
import json
import socket
import socketserver
import threading
import time

import click

GOOD = {"risk_level": "low", "flagged_domains": [], "rationale": "hostile server, good answer", "model_version": "h1"}
JSON = "application/json"
DRIP_PAUSE_S = 0.3


def _json(data: object) -> bytes:
    return json.dumps(data).encode()


ANSWERS: dict[str, tuple[int, dict[str, str], bytes]] = {
    # mode: (status, headers, body)
    "ok": (200, {"Content-Type": JSON}, _json(GOOD)),
    "risk_list": (200, {"Content-Type": JSON}, _json({**GOOD, "risk_level": ["high"]})),
    "deep_brackets": (200, {"Content-Type": JSON}, b"[" * 1_000_000),
    "gzip_garbage": (200, {"Content-Type": JSON, "Content-Encoding": "gzip"}, b"\x1f\x8b\x08\x00garbage" * 20),
    "nan": (200, {"Content-Type": JSON}, _json(GOOD)[:-1] + b', "score": NaN}'),
    "infinity": (200, {"Content-Type": JSON}, _json(GOOD)[:-1] + b', "score": -Infinity}'),
    "nul": (200, {"Content-Type": JSON}, _json({**GOOD, "rationale": "a\u0000b"})),
    "lone_surrogate": (200, {"Content-Type": JSON}, _json(GOOD)[:-1] + b', "note": "\\ud800"}'),
    "html_200": (200, {"Content-Type": "text/html"}, b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    "json_as_text": (200, {"Content-Type": "text/plain"}, _json(GOOD)),
    "redirect": (302, {"Location": "http://127.0.0.1:9/elsewhere", "Content-Type": JSON}, b"{}"),
    "gzip_valid": (200, {"Content-Type": JSON, "Content-Encoding": "gzip"}, gzip.compress(_json(GOOD))),
    "insufficient": (200, {"Content-Type": JSON}, _json({**GOOD, "risk_level": "insufficient_information"})),
    "http_500": (500, {"Content-Type": JSON}, b'{"error": "boom"}'),
}
MODES = (*ANSWERS, "slow_drip", "truncated", "stale", "drop", "slow_500")
SLOW_S = 1.5
"""How long ``slow_500`` works before it answers 500 (s)."""


class State:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls = 0
        self.lock = threading.Lock()


def _read_request(stream) -> tuple[str, str, bytes] | None:
    """(method, path, body) of the next request on the connection, or None at its end."""
    line = stream.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    length = 0
    while True:
        header = stream.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return method, path, stream.read(length) if length else b""


def _head(status: int, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Handler(socketserver.StreamRequestHandler):
    state: State

    def handle(self) -> None:
        served_here = 0
        while True:
            request = _read_request(self.rfile)
            if request is None:
                return
            method, path, body = request
            if path.startswith("/admin/mode"):
                self.state.mode = json.loads(body)["mode"]
                self._send(200, {"Content-Type": JSON}, _json({"mode": self.state.mode}))
                continue
            if path.startswith("/admin/count"):
                self._send(200, {"Content-Type": JSON}, _json({"calls": self.state.calls}))
                continue
            if path.startswith("/healthz"):
                self._send(200, {"Content-Type": JSON}, b"{}")
                continue
            mode = self.state.mode
            if mode == "stale" and served_here >= 1:
                return  # read the request, then close without a byte of answer
            with self.state.lock:
                self.state.calls += 1
            if mode == "drop":
                return  # took the request (it may have done the work), then the connection broke
            served_here += 1
            if not self._answer(mode):
                return

    def _answer(self, mode: str) -> bool:
        """Answer one /infer in ``mode``; False when the connection must close."""
        if mode == "slow_drip":
            payload = _json(GOOD)
            self.wfile.write(_head(200, {"Content-Type": JSON}, len(payload)))
            for byte in payload:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(DRIP_PAUSE_S)
            return True
        if mode == "slow_500":
            time.sleep(SLOW_S)
            self._send(*ANSWERS["http_500"])
            return True
        if mode == "truncated":
            payload = _json(GOOD)
            self.wfile.write(_head(200, {"Content-Type": JSON}, len(payload) + 100) + payload[:20])
            self.wfile.flush()
            return False
        status, headers, payload = ANSWERS["ok" if mode == "stale" else mode]
        self._send(status, headers, payload)
        return True

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.wfile.write(_head(status, headers, len(payload)) + payload)
        self.wfile.flush()


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(port: int, mode: str) -> Server:
    """Start serving in a daemon thread (for in-process tests); returns the server."""
    state = State(mode)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = Server(("127.0.0.1", port), handler)
    server.state = state
    server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@click.command()
@click.option("--port", type=int, required=True)
@click.option("--mode", type=click.Choice(MODES), default="ok")
def main(port: int, mode: str) -> None:
    server = serve(port, mode)
    try:
        threading.Event().wait()
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
