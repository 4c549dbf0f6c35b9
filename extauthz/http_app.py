"""The HTTP side (port 9002): health, readiness and the demo issuer's discovery and JWKS.

Step-up pages and metrics join it under their own paths as they are built.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from extauthz.demo.issuer import DemoIssuer

ReadyCheck = Callable[[], tuple[bool, str]]


def http_app(ready: ReadyCheck, demo: DemoIssuer | None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        ok, why = ready()
        return web.Response(text=why + "\n", status=200 if ok else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if demo is not None:
        discovery, jwks = demo.discovery, demo.jwks

        async def openid_configuration(_: web.Request) -> web.Response:
            return web.json_response(discovery)

        async def jwks_json(_: web.Request) -> web.Response:
            return web.json_response(jwks, headers={"cache-control": "public, max-age=300"})

        app.router.add_get("/.well-known/openid-configuration", openid_configuration)
        app.router.add_get("/.well-known/jwks.json", jwks_json)
    return app
