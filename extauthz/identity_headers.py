"""The identity headers the upstream receives, and the spoofed copies that are removed.

Every incoming header that looks like ours (the configured prefix, any
``impersonate-*``, the kube-apiserver front-proxy's ``x-remote-*``) is removed on every
allowed request unless we set it ourselves, in which case our value overwrites it.
Either way no client-sent value survives.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from extauthz.cache import BoundedCache
from extauthz.config import KUBERNETES_RESERVED, HeaderSettings
from extauthz.errors import ExtAuthzError
from extauthz.identity.model import Identity
from extauthz.request import RequestView

Headers = tuple[tuple[str, str], ...]
log = logging.getLogger("extauthz.identity_headers")


class ImpersonationRefused(ExtAuthzError):
    """A username the kube-apiserver reserves (``system:…``) would be impersonated. Config
    makes this unreachable (every issuer has a non-system prefix); if it happens anyway the
    check fails closed (a 503 deny), it never impersonates."""

    code = "impersonation_refused"


IDENTITY_FIELDS = ("subject", "issuer", "username", "email", "groups", "scopes", "acr",
                   "auth_time", "policy")


@dataclass(frozen=True, slots=True)
class HeaderNames:
    subject: str
    issuer: str
    username: str
    email: str
    groups: str
    scopes: str
    acr: str
    auth_time: str
    policy: str
    decision_id: str
    prefix: str

    @classmethod
    def with_prefix(cls, prefix: str) -> HeaderNames:
        return cls(**{f: prefix + f.replace("_", "-") for f in (*IDENTITY_FIELDS, "decision_id")},
                   prefix=prefix)

    def identity(self) -> tuple[str, ...]:
        """The names of the identity and policy headers (not the decision id's)."""
        return tuple(getattr(self, f) for f in IDENTITY_FIELDS)


IMPERSONATE_PREFIX = "impersonate-"
# kube-apiserver's front-proxy identity (--requestheader-username-headers and friends):
# X-Remote-User, X-Remote-Group, X-Remote-Uid, X-Remote-Extra-*. No client may send them.
FRONT_PROXY_PREFIX = "x-remote-"
# The names of those families an upstream acts on (kube-apiserver), for transports that name
# headers to remove without seeing them all.
SPOOFABLE_BY_NAME = ("impersonate-user", "impersonate-group", "impersonate-uid",
                     "x-remote-user", "x-remote-group", "x-remote-uid")


def _clean(value: str) -> str:
    """Header values must not carry CR, LF or NUL (they would split or break the header)."""
    if "\r" in value or "\n" in value or "\0" in value:
        return value.replace("\r", " ").replace("\n", " ").replace("\0", " ")
    return value


def identity_headers(
    identity: Identity | None,
    names: HeaderNames,
    settings: HeaderSettings,
    *,
    policy_id: str | None,
) -> Headers:
    """Who the caller is, for the upstream. The decision id header is added by the
    response encoder (it is the one value that differs on every check)."""
    out: list[tuple[str, str]] = []
    if policy_id:
        out.append((names.policy, policy_id))
    if identity is None:
        return tuple(out)
    out.append((names.subject, _clean(identity.subject)))
    out.append((names.issuer, _clean(identity.issuer)))
    if identity.username:
        out.append((names.username, _clean(identity.username)))
    if identity.email:
        out.append((names.email, _clean(identity.email)))
    if identity.groups:
        out.append((names.groups, _clean(",".join(identity.groups))))
    if identity.scopes:
        out.append((names.scopes, _clean(" ".join(identity.scopes))))
    if identity.acr:
        out.append((names.acr, _clean(identity.acr)))
    if identity.auth_time is not None:
        out.append((names.auth_time, str(identity.auth_time)))
    if settings.kubernetes_impersonation and identity.username:
        out.extend(_impersonation(identity.username, identity))
    return tuple(out)


def _reserved(name: str) -> bool:
    """As the apiserver will read it: header values lose surrounding blanks."""
    return _clean(name).strip(" \t").startswith(KUBERNETES_RESERVED)


def _impersonation(username: str, identity: Identity) -> Headers:
    """Impersonate-User / Impersonate-Group, never a name the apiserver reserves
    (``system:masters`` is cluster-admin whatever RBAC says)."""
    if _reserved(username):
        raise ImpersonationRefused(f"refusing to impersonate the reserved username "
                                   f"{username!r} (issuer {identity.issuer!r})")
    out = [("impersonate-user", _clean(username))]
    for g in identity.groups:
        if _reserved(g):
            log.warning("not impersonating the reserved group %r for %r (issuer %r)", g,
                        username, identity.issuer)
        else:
            out.append(("impersonate-group", _clean(g)))
    return tuple(out)


_MEMO_NAMES, _MEMO_NAME_BYTES = 48, 1024  # name sets larger than this are not kept


def lookalikes(header_names: tuple[str, ...], prefix: str, managed: frozenset[str]) -> tuple[str, ...]:
    """The incoming header names that look like ours: the identity prefix, ``impersonate-``,
    ``x-remote-`` or a policy's template header, with '_' read as '-'. Clients send the same few sets
    of names over and over, so the answer is kept per set (sets of ordinary size only)."""
    if len(header_names) <= _MEMO_NAMES and sum(map(len, header_names)) <= _MEMO_NAME_BYTES:
        key = (header_names, prefix, managed)
        kept = _LOOKALIKES.get(key)
        if kept is None:
            kept = _LOOKALIKES.put(key, _lookalikes(header_names, prefix, managed))
        return kept
    return _lookalikes(header_names, prefix, managed)


def _lookalikes(header_names: tuple[str, ...], prefix: str, managed: frozenset[str]) -> tuple[str, ...]:
    out = []
    for k in header_names:
        canon = k.replace("_", "-") if "_" in k else k
        if canon.startswith((prefix, IMPERSONATE_PREFIX, FRONT_PROXY_PREFIX)) or canon in managed:
            out.append(k)
    return tuple(out)


_LOOKALIKES: BoundedCache[tuple[tuple[str, ...], str, frozenset[str]], tuple[str, ...]] = \
    BoundedCache(2048)


def headers_to_remove(
    view: RequestView, names: HeaderNames, settings: HeaderSettings, added: Headers,
    managed: frozenset[str] = frozenset(),
) -> tuple[str, ...]:
    """Incoming headers that look like ours (identity names, any policy's template headers)
    and that we do not overwrite, plus credentials that are not forwarded. Names are
    compared with '_' read as '-': many upstreams (CGI, WSGI, Rack, PHP) treat both alike."""
    remove = list(lookalikes(tuple(view.headers), names.prefix, managed))
    if remove:
        ours = {k for k, _ in added}
        ours.add(names.decision_id)  # set by the response encoder: overwritten, not removed
        remove = [k for k in remove if k not in ours]
    if not settings.forward_authorization and "authorization" in view.headers:
        remove.append("authorization")
    return tuple(remove)
