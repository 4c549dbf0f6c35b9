"""The plain-HTTP transport floor: an asyncio protocol on uvloop, parsed by httptools
(llhttp), answering every request with a constant ``200``. It is what Envoy's
``http_service`` ext_authz costs with no decision at all, as benchmarks/floor.py is for
``grpc_service``: `http-allow-cached / http-floor` is what extauthz's logic and its HTTP
server cost over the bare transport.

Keep-alive and pipelining as Envoy uses them: answers go out in request order, and a
request without a body (every check) is answered as soon as its headers end.

    python -m benchmarks.http_floor --listen 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
from typing import cast

import httptools
import uvloop

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
CLOSE = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class ConstantOk(asyncio.Protocol):
    """One connection: every complete request gets ``ANSWER``; a parse error, 400 and close."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(CLOSE)
            self.transport.close()

    def on_message_complete(self) -> None:  # httptools' callback
        assert self.transport is not None
        self.transport.write(ANSWER)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ConstantOk, host, int(port), backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"http-floor: listening on {listen}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_floor",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    uvloop.run(serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()
