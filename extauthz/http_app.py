"""The HTTP side (port 9002): health, readiness and the demo issuer's discovery and JWKS.

Step-up pages and metrics join it under their own paths as they are built.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from extauthz.config import Settings
from extauthz.demo.issuer import DemoIssuer

ReadyCheck = Callable[[], tuple[bool, str]]


def http_app(ready: ReadyCheck, demo: DemoIssuer | None, settings: Settings,
             extra: Sequence[Callable[[web.Application], None]] = ()) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    for add in extra:
        add(app)

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
        if settings.token.cookie:
            app.router.add_get("/.extauthz/demo/login", _demo_login(demo, settings.token.cookie))
    return app


def _demo_login(demo: DemoIssuer, cookie: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Demo only: sign in as anyone (?sub=alice&groups=sre) by getting a demo token cookie."""
    from extauthz.stepup.http import safe_rd

    async def login(request: web.Request) -> web.Response:
        q = request.query
        sub = q.get("sub", "alice")
        groups = tuple(g for g in q.get("groups", "sre").split(",") if g)
        token = demo.mint(subject=sub, email=q.get("email") or f"{sub}@example.com", groups=groups,
                          scopes=tuple(q.get("scope", "").split()))
        response = web.Response(status=302, headers={"location": safe_rd(q.get("rd")),
                                                      "cache-control": "no-store"})
        response.set_cookie(cookie, token, path="/", httponly=True, samesite="Lax", max_age=3600)
        return response
    return login
