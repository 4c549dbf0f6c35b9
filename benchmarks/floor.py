"""The transport floor: a bare grpc.aio Check server that answers every request with a
constant allow. Same grpcio, same server options and the same request decoding as
extauthz, and nothing else, so `scenario / floor` is what extauthz's own logic costs.

    python -m benchmarks.floor --listen 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
from google.rpc import status_pb2

from extauthz.pb.envoy.service.auth.v3 import external_auth_pb2 as ext
from extauthz.pb.envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
from extauthz.server import grpc_server_options

ALLOW = ext.CheckResponse(status=status_pb2.Status(code=0), ok_response=ext.OkHttpResponse())


class ConstantAllow(ext_grpc.AuthorizationServicer):
    async def Check(self, request: Any, context: Any) -> Any:
        return ALLOW


async def serve(listen: str) -> None:
    server = grpc.aio.server(options=grpc_server_options(reuse_port=False))
    ext_grpc.add_AuthorizationServicer_to_server(ConstantAllow(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"floor: listening on {listen}", flush=True)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    asyncio.run(serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()
