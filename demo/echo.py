"""An upstream that answers every request with the method, path and headers it received.

The demo and the end-to-end tests put it behind Envoy to show exactly which identity
headers arrive (and that spoofed ones do not). ``python demo/echo.py --listen H:P``
"""

from __future__ import annotations

import argparse
import sys

from aiohttp import web


async def _echo(request: web.Request) -> web.Response:
    headers: dict[str, str | list[str]] = {}
    for key, value in request.headers.items():
        k = key.lower()
        prev = headers.get(k)
        if prev is None:
            headers[k] = value
        elif isinstance(prev, list):
            prev.append(value)
        else:
            headers[k] = [prev, value]
    return web.json_response({"method": request.method, "path": request.path_qs,
                              "headers": headers})


def echo_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


def echo_command(listen: str) -> list[str]:
    """The argv that serves it on ``listen`` (HOST:PORT): this file as a script, so it runs
    from any working directory."""
    return [sys.executable, __file__, "--listen", listen]


def main() -> None:
    parser = argparse.ArgumentParser(prog="extauthz-echo", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (default %(default)s)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    web.run_app(echo_app(), host=host, port=int(port), print=None)


if __name__ == "__main__":
    main()
