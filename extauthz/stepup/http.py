"""The step-up pages and endpoints under /.extauthz/ (Envoy routes that prefix here, so
cookies are first-party and the RP ID is the site's own host).

Every endpoint verifies the caller's token itself (the engine's verifier, as Check) and
never trusts identity headers; "is this user stepped up" is the engine's step-up gate, as
for Check. POSTs need an ``Origin`` from ``stepup.origins`` (CSRF); bodies are small JSON
objects; errors are JSON ``{"error", "error_description"}`` a person can read.
"""

from __future__ import annotations

import datetime
import html
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from extauthz import pages
from extauthz.denials import login_redirect
from extauthz.errors import StoreUnavailable, TokenError
from extauthz.identity.model import Identity
from extauthz.policy.model import WEBAUTHN_ACR, StepupRequirement
from extauthz.request import RequestView
from extauthz.stepup.ceremonies import CeremonyError, passkey_name
from extauthz.stepup.enrolment import REGISTER_PAGE, FirstEnrolment, FreshSignInNeeded, span
from extauthz.stepup.gate import BASE, STEPUP_PAGE, stepup_url
from extauthz.stepup.removal import end_stepups
from extauthz.stepup.store import Passkey, user_key
from extauthz.table import printable
from extauthz.telemetry import tracing

if TYPE_CHECKING:
    from extauthz.engine import Engine

log = logging.getLogger("extauthz.stepup")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SECURITY_HEADERS = dict(pages.SECURITY_HEADERS)
ACCOUNT_PAGE = f"{BASE}/account"
_CHANGING_PASSKEYS = (ACCOUNT_PAGE, REGISTER_PAGE)  # pages that need a fresh step-up to change


def safe_rd(rd: str | None) -> str:
    """A same-site relative path (``/x?y``); anything else becomes ``/`` (no open redirect)."""
    if not rd or not rd.startswith("/") or rd.startswith(("//", "/\\")):
        return "/"
    if any(c in rd for c in "\\\r\n\t\0") or any(ord(c) < 0x20 for c in rd):
        return "/"
    return rd


_asset = pages.asset


def _added_notice(passkeys: list[Passkey]) -> str:
    """On the step-up page: when the newest passkey was added, so a user whose own key is
    refused learns that someone added another (and a new user sees theirs)."""
    newest = max(passkeys, key=lambda p: p.created)
    when = datetime.datetime.fromtimestamp(newest.created, datetime.UTC)
    return (f'<p id="added" class="small">Your newest passkey, '
            f'\u201c{html.escape(printable(newest.name))}\u201d, was added on '
            f'{when:%Y-%m-%d at %H:%M} UTC. If you did not add it, tell an administrator.</p>')


def _json_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status,
                             headers={"cache-control": "no-store"})


class StepupNeeded(CeremonyError):
    code = "stepup_required"
    status = 403


def _view(request: web.Request) -> RequestView:
    """The request's headers as Check sees them: lower-case names, a repeated header's
    values joined with ',' (so a credential cookie sent twice is refused, never picked)."""
    headers: dict[str, str] = {}
    for key, value in request.headers.items():
        name = key.lower()
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return RequestView(method=request.method, scheme="", host="", path=request.path, query="",
                       headers=headers, context_extensions={}, source_address="", request_id="")


class StepupHttp:
    def __init__(self, *, engine: Engine) -> None:
        settings = engine.settings
        self._metrics = engine.metrics
        self._revocations = engine.revocation_store
        self._settings = settings
        self._verifier = engine.verifier
        self._ceremonies = engine.ceremonies
        self._store = engine.stepup_store
        self._stepups = engine.stepups
        # Changing passkeys needs a step-up with one of them this recent (never an IdP's).
        self._to_change = StepupRequirement(max_age=settings.stepup.enrol_max_age,
                                            acr_values=(WEBAUTHN_ACR,))
        self._first = FirstEnrolment(settings, self._store, self._ceremonies.now)

    def _on_ceremony(self, ceremony: str, outcome: str) -> None:
        self._metrics.stepup.add(1, {"ceremony": ceremony, "outcome": outcome})

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(STEPUP_PAGE, self._page("stepup", "Confirm it's you"))
        r.add_get(f"{BASE}/webauthn/register", self._page("register", "Add a passkey"))
        r.add_get(ACCOUNT_PAGE, self._page("account", "Your passkeys"))
        r.add_post(f"{BASE}/stepup/begin", self._api(self._stepup_begin))
        r.add_post(f"{BASE}/stepup/finish", self._api(self._stepup_finish))
        r.add_post(f"{BASE}/webauthn/register/begin", self._api(self._register_begin))
        r.add_post(f"{BASE}/webauthn/register/finish", self._api(self._register_finish))
        r.add_get(f"{BASE}/webauthn/passkeys", self._api(self._list))
        r.add_post(f"{BASE}/webauthn/passkeys/remove", self._api(self._remove))
        r.add_get(f"{BASE}/static/webauthn.js", self._static("webauthn.js", "text/javascript"))
        r.add_get(f"{BASE}/static/extauthz.css", self._static("extauthz.css", "text/css"))

    # --- who is asking ----------------------------------------------------------------
    async def _identity(self, request: web.Request) -> Identity | None:
        return await self._verifier.identity_of(_view(request), self._settings.token.cookie)

    # --- pages ------------------------------------------------------------------------
    def _render(self, page: str, title: str, body: str, status: int = 200) -> web.Response:
        return web.Response(text=pages.render(page, title, body), status=status,
                            content_type="text/html", headers=_SECURITY_HEADERS)

    def _page(self, page: str, title: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            rd = safe_rd(request.query.get("rd"))
            identity = await self._identity(request)
            if identity is None:
                login = self._settings.login_url
                link = ""
                if login:
                    target = html.escape(login_redirect(login, request.path_qs))
                    link = f'\n<p><a id="signin" class="button" href="{target}">Sign in</a></p>'
                return self._render("signin", "Sign in first",
                                    f"<p>You are not signed in, or your session expired.</p>{link}",
                                    status=401)
            values = self._values(identity, rd)
            try:
                if page == "register":
                    refused = await self._first_enrolment_refused(request, identity)
                    if refused is not None:
                        return refused
                elif page == "stepup":
                    passkeys = await self._store.passkeys(user_key(identity.issuer,
                                                                   identity.subject))
                    if not passkeys:  # nothing to confirm with: adding one is the first step
                        return self._render("stepup-first", "Add a passkey to continue",
                                            pages.fill(_asset("stepup-first.html"), values))
                    values["added"] = _added_notice(passkeys)
            except StoreUnavailable as e:
                log.warning("stepup: store unavailable: %s", e.message)
                return self._render("error", "Try again shortly", "<p>Passkeys cannot be "
                                    "reached right now; try again shortly.</p>", status=503)
            return self._render(page, title, pages.fill(_asset(f"{page}.html"), values))
        return handler

    def _values(self, identity: Identity, rd: str) -> dict[str, str]:
        """The pages' ``{{slots}}``, as HTML."""
        changing = rd.split("?", 1)[0] in _CHANGING_PASSKEYS
        minutes = span(self._settings.stepup.enrol_max_age)
        why = (f'<p class="notice" id="why">Changing your passkeys needs a confirmation with one '
               f"of them from the last {minutes}, so that someone who has only your signed-in "
               "session cannot add or remove passkeys.</p>") if changing else ""
        reason = ("To change your passkeys, confirm it's you with one of them first."
                  if changing else "The page you asked for needs a recent confirmation with "
                                   "your passkey.")
        after = rd if rd != "/" else ACCOUNT_PAGE
        return {"who": html.escape(pages.who(identity)), "rd": html.escape(rd),
                "rd_url": html.escape(quote(rd, safe="")), "added": "", "why": why,
                "reason": html.escape(reason), "minutes": html.escape(minutes),
                "next": html.escape(after),
                "next_text": "Continue" if rd != "/" else "Back to your passkeys"}

    async def _first_enrolment_refused(self, request: web.Request, identity: Identity
                                       ) -> web.Response | None:
        """The register page, for a user with no passkey yet who may not add one now: say
        why, with a link to sign in again (coming back here)."""
        if await self._has_passkeys(identity) or await self._first.allowed_by(identity):
            return None
        url = self._first.signin_url(request.path_qs)
        link = (f'\n<p><a id="signin" class="button" href="{html.escape(url)}">Sign in again</a></p>'
                if url else "")
        return self._render("signin", "Sign in again",
                            f"<p>{html.escape(self._first.refusal)}</p>{link}", status=401)

    def _static(self, name: str, content_type: str) -> Handler:
        text = _asset(name)

        async def handler(_: web.Request) -> web.Response:
            return web.Response(text=text, content_type=content_type,
                                headers={"cache-control": "public, max-age=300",
                                         "x-content-type-options": "nosniff"})
        return handler

    # --- JSON API ---------------------------------------------------------------------
    def _api(self, fn: Callable[[web.Request, Identity, dict[str, Any]], Awaitable[web.Response]]
             ) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            if request.method == "POST":
                origin = request.headers.get("origin")
                if origin not in self._settings.stepup.origins:
                    return _json_error(403, "forbidden", "cross-site request refused: the Origin "
                                                         "is not one of this site's origins")
            identity = await self._identity(request)
            if identity is None:
                return _json_error(401, "unauthorized", "sign in first: no valid token")
            body: dict[str, Any] = {}
            if request.method == "POST":
                try:
                    parsed = await request.json(loads=json.loads)
                except (ValueError, UnicodeDecodeError):
                    return _json_error(400, "bad_request", "the body must be a JSON object")
                if not isinstance(parsed, dict):
                    return _json_error(400, "bad_request", "the body must be a JSON object")
                body = parsed
            ceremony = ("register" if "/register/" in request.path else "stepup"
                        if "/stepup/" in request.path else "")
            step = request.path.rsplit("/", 1)[-1]
            try:
                with tracing.span(f"extauthz.stepup.{ceremony or 'passkeys'}.{step}"):
                    response = await fn(request, identity, body)
                if ceremony and step == "finish":
                    self._on_ceremony(ceremony, "ok")
                return response
            except CeremonyError as e:
                if ceremony:
                    self._on_ceremony(ceremony, e.code)
                return self._ceremony_error(request, e)
            except StoreUnavailable as e:
                log.warning("stepup: store unavailable: %s", e.message)
                return _json_error(503, "temporarily_unavailable",
                                   "passkeys cannot be reached right now; try again shortly")
        return handler

    def _ceremony_error(self, request: web.Request, e: CeremonyError) -> web.Response:
        if isinstance(e, FreshSignInNeeded):  # RFC 9470: sign in again, recently
            answer: dict[str, Any] = {"error": e.code, "error_description": e.message,
                                      "max_age": self._first.max_age}
            url = self._first.signin_url()
            if url:
                answer["signin_url"] = url
            return web.json_response(answer, status=e.status, headers={
                "cache-control": "no-store", "www-authenticate": self._first.challenge})
        if isinstance(e, StepupNeeded):
            back = "/.extauthz/account" if request.path.endswith("/remove") else (
                "/.extauthz/webauthn/register")
            return web.json_response(
                {"error": e.code, "error_description": e.message,
                 "stepup_url": stepup_url(back)},
                status=e.status, headers={"cache-control": "no-store"})
        return _json_error(e.status, e.code, e.message)

    @staticmethod
    def _credential(body: dict[str, Any]) -> dict[str, Any]:
        credential = body.get("credential")
        if not isinstance(credential, dict) or not isinstance(credential.get("response"), dict):
            raise CeremonyError("The request has no passkey response ('credential').")
        return credential

    async def _has_passkeys(self, identity: Identity) -> bool:
        return bool(await self._store.passkeys(user_key(identity.issuer, identity.subject)))

    async def _may_enrol(self, request: web.Request, identity: Identity) -> str | None:
        """None when the user has passkeys (and just confirmed with one); else how their
        first passkey is allowed (enrolment.SIGNIN or GRANT). Raises when it is not."""
        if await self._has_passkeys(identity):
            self._require_recent_stepup(request, identity)
            return None
        return await self._first.require(identity)

    def _require_recent_stepup(self, request: web.Request, identity: Identity) -> None:
        """A user who has passkeys changes them only right after confirming with one, so a
        stolen token alone cannot enrol the thief's authenticator or remove the user's."""
        try:
            stepped = self._stepups.stepped_up(self._to_change, identity,
                                               _view(request).headers.get("cookie"))
        except TokenError:  # the step-up cookie twice: neither counts
            stepped = None
        if stepped is None:
            raise StepupNeeded("Confirm with one of your passkeys first, then try again.")

    async def _register_begin(self, request: web.Request, identity: Identity, body: dict[str, Any]
                              ) -> web.Response:
        await self._may_enrol(request, identity)
        options = await self._ceremonies.registration_options(identity)
        return web.json_response({"options": json.loads(options)},
                                 headers={"cache-control": "no-store"})

    async def _register_finish(self, request: web.Request, identity: Identity, body: dict[str, Any]
                               ) -> web.Response:
        first = await self._may_enrol(request, identity)
        name = passkey_name(body.get("name", "Passkey"))
        passkey = await self._ceremonies.register(
            identity, self._credential(body), name,
            before_save=self._first.use_grant(identity, first) if first else None)
        # The registration verified the user with the new passkey (user verification is
        # required), as a step-up does: it counts as one, so the page they came for does not
        # ask for a second prompt right after.
        cookie = self._stepups.mint(identity, passkey.credential_id)
        response = web.json_response({"registered": passkey.name, "id": passkey.credential_id,
                                      "confirmed": cookie is not None})
        self._set_stepup_cookie(response, cookie)
        return response

    def _set_stepup_cookie(self, response: web.Response, cookie: str | None) -> None:
        if cookie is not None:
            response.set_cookie(self._settings.stepup.cookie_name, cookie, path="/", secure=True,
                                httponly=True, samesite="Lax",
                                max_age=self._settings.stepup.max_age_limit)

    async def _stepup_begin(self, _: web.Request, identity: Identity, body: dict[str, Any]
                            ) -> web.Response:
        options = await self._ceremonies.authentication_options(identity)
        if options is None:
            return web.json_response({"enroll": True, "message": "You have no passkey (any "
                                      "more). Add one: adding it confirms it's you too."},
                                     headers={"cache-control": "no-store"})
        return web.json_response({"options": json.loads(options)},
                                 headers={"cache-control": "no-store"})

    async def _stepup_finish(self, _: web.Request, identity: Identity, body: dict[str, Any]
                             ) -> web.Response:
        rd = body.get("rd")
        passkey = await self._ceremonies.authenticate(identity, self._credential(body))
        cookie = self._stepups.mint(identity, passkey.credential_id)
        if cookie is None:
            return _json_error(503, "temporarily_unavailable", "the step-up key is not loaded yet")
        response = web.json_response({"redirect": safe_rd(rd if isinstance(rd, str) else None)})
        self._set_stepup_cookie(response, cookie)
        log.info("stepup: %r confirmed with passkey %r", identity.subject, passkey.name)
        return response

    async def _list(self, _: web.Request, identity: Identity, body: dict[str, Any]) -> web.Response:
        passkeys = await self._store.passkeys(user_key(identity.issuer, identity.subject))
        return web.json_response({"user": pages.who(identity), "passkeys": [
            {"id": p.credential_id, "name": p.name, "created": p.created, "last_used": p.last_used}
            for p in passkeys]}, headers={"cache-control": "no-store"})

    async def _remove(self, request: web.Request, identity: Identity, body: dict[str, Any]
                      ) -> web.Response:
        user = user_key(identity.issuer, identity.subject)
        passkeys = await self._store.passkeys(user)
        if passkeys:
            self._require_recent_stepup(request, identity)
        cid = body.get("id")
        if not isinstance(cid, str):
            raise CeremonyError("Say which passkey to remove ('id').")
        if not any(p.credential_id == cid for p in passkeys):
            raise CeremonyError(f"No such passkey for {pages.who(identity)}.")
        # First end every step-up made so far (in every worker), then remove: fail closed.
        await end_stepups(self._revocations, identity.issuer, identity.subject,
                          int(self._ceremonies.now()), "passkey removed on the account page")
        if not await self._store.remove_passkey(user, cid):
            raise CeremonyError(f"No such passkey for {pages.who(identity)}.")
        # And again once it is gone: a ceremony with this passkey that finished in between
        # (a second later) is ended too.
        await end_stepups(self._revocations, identity.issuer, identity.subject,
                          int(self._ceremonies.now()), "passkey removed on the account page")
        log.info("stepup: %r removed passkey %r; step-ups made before now are ended",
                 identity.subject, cid)
        return web.json_response({"removed": cid})
