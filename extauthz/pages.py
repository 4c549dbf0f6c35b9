"""The HTML a person's browser gets from extauthz: one layout, one stylesheet, one CSP.

The step-up pages (``stepup/http.py``) and the denials a browser navigation gets
(``denials.py``: 401, 403, 503 as a small page instead of JSON) are rendered here, so they
look alike and carry the same security headers. Every value that comes from a token, a
policy or a request is HTML-escaped here, once, as it is put in (``fill`` substitutes in
one pass, so a value can never bring a ``{{slot}}`` of its own). Pages say who the user is
signed in as (email, else username, else subject) and never show token contents.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from importlib import resources

from extauthz.decision import Headers
from extauthz.identity.model import Identity

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY_HEADERS: Headers = (
    ("cache-control", "no-store"),
    ("content-security-policy", CSP),
    ("referrer-policy", "same-origin"),
    ("x-content-type-options", "nosniff"),
)
HTML_TYPE = "text/html; charset=utf-8"
_SCRIPT = '<script src="/.extauthz/static/webauthn.js" defer></script>\n'
_SLOT = re.compile(r"\{\{(\w+)\}\}")


def asset(name: str) -> str:
    """A file of ``stepup/assets/`` (the pages' HTML, CSS and JS)."""
    return resources.files("extauthz.stepup").joinpath("assets", name).read_text(encoding="utf-8")


_LAYOUT = asset("layout.html")


def fill(template: str, values: Mapping[str, str]) -> str:
    """``{{name}}`` slots replaced by ``values`` (already HTML), in one pass."""
    return _SLOT.sub(lambda m: values[m.group(1)], template)


def render(page: str, title: str, body: str, *, script: bool = True) -> str:
    """A whole page: ``body`` is HTML (escape what goes into it), ``title`` is text."""
    return fill(_LAYOUT, {"title": html.escape(title), "page": html.escape(page),
                          "script": _SCRIPT if script else "", "body": body})


def who(identity: Identity) -> str:
    """How a page names the signed-in user: email, else username, else subject (text)."""
    return identity.email or identity.username or identity.subject


def _link(url: str, text: str, *, element_id: str, button: bool = False) -> str:
    css = ' class="button"' if button else ""
    return f'<a id="{element_id}"{css} href="{html.escape(url)}">{html.escape(text)}</a>'


def _details(details: str) -> str:
    return f'<p class="small details">Details: {html.escape(details)}</p>'


def forbidden_page(*, identity: Identity | None, needs: str | None, details: str,
                   signin_url: str | None) -> str:
    """403: who they are, what the route needs (the policy's ``description``), what to do."""
    parts = []
    if identity is not None:
        parts.append(f'<p>You are signed in as <strong class="who">{html.escape(who(identity))}'
                     "</strong>.</p>")
        if needs:
            parts.append("<p>This page needs something your account does not have:</p>"
                         f'<p class="needs">{html.escape(needs)}</p>')
        else:
            parts.append("<p>This page needs something your account does not have.</p>")
        parts.append("<p>If you should have access, ask the owner of this page or an "
                     "administrator to give it to you.</p>")
    else:
        parts.append("<p>This page is closed: no rule here lets anyone in.</p>")
        if needs:
            parts.append(f'<p class="needs">{html.escape(needs)}</p>')
        parts.append("<p>If you think it should be open to you, tell the owner of this page "
                     "or an administrator.</p>")
    parts.append(_details(details))
    if signin_url and identity is not None:
        parts.append('<p class="small">'
                     f"{_link(signin_url, 'Sign in as someone else', element_id='signin')}</p>")
    return render("denied", "You don't have access to this page", "\n".join(parts), script=False)


def unauthenticated_page(*, token_sent: bool, details: str, signin_url: str | None) -> str:
    """401: not signed in, or a sign-in that cannot be used; a link to sign in if there is one."""
    if token_sent:
        title = "Sign in again"
        text = ("<p>You are signed in, but that sign-in cannot be used here "
                "(it may have expired or been ended).</p>")
    else:
        title = "Sign in first"
        text = "<p>This page is only for signed-in users, and you are not signed in.</p>"
    if signin_url:
        action = f"<p>{_link(signin_url, title, element_id='signin', button=True)}</p>"
    else:
        action = ("<p>Sign in with your organisation's account, then reload this page. If this "
                  "keeps happening, clear this site's cookies or ask an administrator.</p>")
    return render("signin", title, text + "\n" + action + "\n" + _details(details), script=False)


def idp_stepup_page(*, identity: Identity | None, max_age: int, signin_url: str | None) -> str:
    """401 for a step-up only the identity provider can give (the policy does not accept
    ours): sign in again there, recently."""
    signed_in = (f'<p>You are signed in as <strong class="who">{html.escape(who(identity))}'
                 "</strong>.</p>" if identity is not None else "")
    text = ("<p>This page needs a recent, strong sign-in at your identity provider (within the "
            f"last {max_age} seconds).</p>")
    action = (f"<p>{_link(signin_url, 'Sign in again', element_id='signin', button=True)}</p>"
              if signin_url else "<p>Sign in again at your identity provider, then reload "
                                 "this page.</p>")
    return render("signin", "Sign in again to continue", signed_in + text + "\n" + action,
                  script=False)


def unavailable_page(*, details: str) -> str:
    """503: we could not decide; nothing is wrong with the user."""
    return render("unavailable", "Try again shortly",
                  "<p>Your access to this page cannot be checked right now. Nothing is wrong "
                  "with your account: try again in a moment.</p>\n" + _details(details),
                  script=False)
