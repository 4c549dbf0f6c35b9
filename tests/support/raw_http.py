"""A tiny HTTP/1.1 server that records the raw header lines of every request it receives.

Envoy may send a multi-valued header as several lines or as one comma-joined line; a parsed
header map (aiohttp's, the echo upstream's) hides which. This server keeps the bytes: each
request's header lines in order, exactly as they arrived. It answers through a handler, so the
same server is the recording upstream of the end-to-end tests and, in the Envoy semantics
tests, a throwaway ext_authz HTTP server scripted by the test. It runs on its own event loop
in a thread of the test process; keep-alive and Envoy's connection pooling are supported,
chunked request bodies are read and discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tests.support.ports import free_port

_MAX_HEAD = 256 * 1024


class RawRequest(NamedTuple):
    """One request as it arrived: request line and header lines (name as sent, value
    stripped of the surrounding whitespace), in order."""

    method: str
    target: str
    lines: tuple[tuple[str, str], ...]
    body: bytes

    def values(self, name: str) -> list[str]:
        """Every line's value for ``name`` (case-insensitive), in order, one per line."""
        low = name.lower()
        return [v for k, v in self.lines if k.lower() == low]

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.lines}


class RawAnswer(NamedTuple):
    status: int
    lines: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


Handler = Callable[[RawRequest], RawAnswer]


def echo_lines(request: RawRequest) -> RawAnswer:
    """The default handler: 200 with the request (method, target, header lines) as JSON."""
    body = json.dumps({"method": request.method, "path": request.target,
                       "lines": [list(line) for line in request.lines]}).encode()
    return RawAnswer(200, (("content-type", "application/json"),), body)


_REASONS = {200: "OK", 302: "Found", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class RawHttpServer:
    """Serve ``handler`` on 127.0.0.1:``port``; ``requests`` holds every request received."""

    handler: Handler = echo_lines
    port: int = field(default_factory=free_port)
    requests: list[RawRequest] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.AbstractServer | None = None

    def start(self) -> RawHttpServer:
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, "127.0.0.1", self.port, limit=_MAX_HEAD))
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"raw-http-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise TimeoutError(f"raw HTTP server on {self.port} did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def last(self) -> RawRequest:
        return self.requests[-1]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request_line, *raw_lines = head[:-4].decode("latin-1").split("\r\n")
                method, target, _version = request_line.split(" ", 2)
                lines = tuple((k, v.strip()) for k, _, v in (ln.partition(":") for ln in raw_lines))
                body = await _read_body(reader, lines)
                request = RawRequest(method, target, lines, body)
                self.requests.append(request)
                answer = self.handler(request)
                writer.write(_encode(answer, head_only=method == "HEAD"))
                await writer.drain()
        finally:
            with contextlib.suppress(ConnectionError):
                writer.close()


async def _read_body(reader: asyncio.StreamReader, lines: tuple[tuple[str, str], ...]) -> bytes:
    names = {k.lower(): v for k, v in lines}
    if "chunked" in names.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()  # the empty trailer section
                return body
            body += await reader.readexactly(size)
            await reader.readline()
    length = int(names.get("content-length", "0") or "0")
    return await reader.readexactly(length) if length else b""


def _encode(answer: RawAnswer, *, head_only: bool) -> bytes:
    head = [f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Status')}"]
    head += [f"{k}: {v}" for k, v in answer.lines]
    head.append(f"content-length: {len(answer.body)}")
    out = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    return out if head_only else out + answer.body


class RawResponse(NamedTuple):
    """A response as it arrived: status, header lines (names lower-cased) in order, body."""

    status: int
    lines: tuple[tuple[str, str], ...]
    body: bytes

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.lines if k == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def raw_exchange(port: int, target: str, headers: list[tuple[str, str]], *,
                 method: str = "GET", timeout: float = 10) -> RawResponse:
    """One HTTP/1.1 request to 127.0.0.1:``port`` written byte for byte (repeated and odd
    headers and targets as given: no client library normalises them), then its response."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers), "connection: close"]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = tuple((k.strip().lower(), v.strip())
                   for k, _, v in (h.partition(":") for h in header_lines))
    if ("transfer-encoding", "chunked") in parsed:
        body = _dechunk(body)
    return RawResponse(int(status_line.split()[1]), parsed, body)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out
