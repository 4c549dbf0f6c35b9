"""Policies: a validated document (``document.py``) compiled for the matcher.

``parse_policy`` checks what the declared schema cannot (RE2 compiles each regex, paths are
in the form requests are compared in, methods are standard, header templates name claims)
and builds the frozen ``Policy`` the matcher reads, with errors that name the policy, the
field and the fix. ``Policy.document`` is the canonical form, the one stored and shown by
``policy get``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import re2  # type: ignore[import-untyped]  # google-re2: no stubs; typed by Regex below
import yaml

from extauthz.errors import PolicyInvalid
from extauthz.nats.subjects import subject_problem
from extauthz.policy.document import (
    METHODS,
    POLICY_DOCUMENT,
    WEBAUTHN_ACR,
    MatchDocument,
    NatsDocument,
    PathDocument,
    PolicyDocument,
    StepupDocument,
    canonical_document,
    documents_from_text,
)
from extauthz.policy.paths import AmbiguousPath, normalize_path
from extauthz.schema.messages import did_you_mean

__all__ = ["METHODS", "WEBAUTHN_ACR", "ClaimValue", "HeaderTemplate", "NatsPermissions",
           "PathMatch", "Policy",
           "Regex", "Requirements", "StepupRequirement", "compile_regex", "documents_from_text",
           "parse_policies", "parse_policy", "policies_to_yaml"]

_HOST_LABELS = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_RESERVED_HEADERS = ("authorization", "cookie", "host", "content-length", "transfer-encoding",
                     "connection", "te", "upgrade")

ClaimValue = str | int | float | bool


class Regex(Protocol):
    """A compiled policy regex: RE2, so matching is linear in the path whatever the pattern."""

    @property
    def pattern(self) -> str: ...

    def fullmatch(self, text: str) -> object | None: ...


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the refusal names the policy and the pattern; no stderr noise


def compile_regex(pattern: str) -> Regex:
    """``pattern`` compiled with RE2 (Envoy's ``safe_regex`` engine), or ValueError saying why
    RE2 refuses it. Python's backtracking ``re`` is never used for policy regexes: one request
    against ``^/reports/([a-z0-9]+/?)+\\.csv$`` would stall every check for seconds."""
    try:
        compiled: Regex = re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as e:
        detail = e.args[0] if e.args else e
        text = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
        one_line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
        raise ValueError(one_line) from e
    return compiled


@dataclass(frozen=True, slots=True)
class PathMatch:
    kind: str  # exact | prefix | regex
    value: str
    pattern: Regex | None = None


@dataclass(frozen=True, slots=True)
class StepupRequirement:
    max_age: int
    acr_values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Requirements:
    authenticated: bool
    issuers: frozenset[str]
    audiences: frozenset[str]
    scopes: tuple[str, ...]
    claims: tuple[tuple[str, tuple[ClaimValue, ...]], ...]
    stepup: StepupRequirement | None = None


@dataclass(frozen=True, slots=True)
class HeaderTemplate:
    name: str
    parts: tuple[tuple[bool, str], ...]  # (is_claim, literal or claim path)


@dataclass(frozen=True, slots=True)
class NatsPermissions:
    """A NATS policy's grant (``nats:``): subject patterns, validated."""

    account: str | None  # None: the config's nats.account
    publish_allow: tuple[str, ...]
    publish_deny: tuple[str, ...]
    subscribe_allow: tuple[str, ...]
    subscribe_deny: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    priority: int
    hosts: tuple[str, ...]
    paths: tuple[PathMatch, ...]
    methods: frozenset[str]
    bound_only: bool
    require: Requirements
    action: str
    mode: str
    headers: tuple[HeaderTemplate, ...]
    description: str
    document: Mapping[str, Any]
    nats: NatsPermissions | None = None  # a NATS policy (never in the HTTP index)

    @property
    def dry_run(self) -> bool:
        return self.mode == "dry-run"


class _FieldInvalid(Exception):
    """One field is wrong; ``parse_policy`` names the policy (id and source) in front."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.field = field
        self.message = message


def _fail(where: str, message: str) -> _FieldInvalid:
    return _FieldInvalid(where, message)


def _host(value: str, where: str) -> str:
    host = value.strip().lower().rstrip(".")
    if host == "*":
        return host
    if ":" in host:
        raise _fail(where, f"is {value!r}: leave the port out (it is ignored when matching)")
    if not _HOST_LABELS.match(host):
        raise _fail(where, f"is {value!r}: write a host name like api.example.com or *.example.com")
    return host


def _method(value: str, where: str) -> str:
    """A standard method, upper-cased (``get`` is GET: request methods are compared
    upper-cased too); anything else is refused, naming the closest standard method."""
    method = value.upper()
    if method not in METHODS:
        hint = did_you_mean(method, METHODS, "the methods extauthz accepts are")
        raise _fail(where, f"is {value!r}, not a standard HTTP method: {hint}")
    return method


def _path(entry: PathDocument, where: str) -> PathMatch:
    given = [(k, v) for k, v in (("exact", entry.exact), ("prefix", entry.prefix),
                                 ("regex", entry.regex)) if v is not None]
    if len(given) != 1:
        raise _fail(where, "needs exactly one of exact, prefix or regex, e.g. {prefix: /admin/}")
    kind, value = given[0]
    if kind == "regex":
        try:
            pattern = compile_regex(value)
        except ValueError as e:
            raise _fail(f"{where}.regex", f"is {value!r}, which RE2 refuses ({e}): write an RE2 "
                        "regex (no backreferences, lookaround or possessive quantifiers)") from e
        return PathMatch(kind, value, pattern)
    if not value.startswith("/"):
        raise _fail(f"{where}.{kind}", f"is {value!r}: a path starts with '/'")
    try:
        normal = normalize_path(value)
    except AmbiguousPath as e:
        raise _fail(f"{where}.{kind}", f"is {value!r}, which requests may not use: {e.message}") from e
    if normal != value:
        raise _fail(f"{where}.{kind}", f"is {value!r}, which requests are compared as {normal!r} "
                                       "(decoded, dot-segments resolved); write that instead")
    return PathMatch(kind, value)


def _claims(value: object, where: str) -> tuple[tuple[str, tuple[ClaimValue, ...]], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise _fail(where, "must map claim names to lists of accepted values, "
                           "e.g. {groups: [sre, dev]}")
    out = []
    for name, accepted in value.items():
        if not isinstance(name, str) or not name:
            raise _fail(where, "has a claim name that is not a string")
        if not isinstance(accepted, list):
            accepted = [accepted]
        if not accepted or not all(isinstance(v, str | int | float | bool) for v in accepted):
            raise _fail(f"{where}.{name}", "must be a non-empty list of strings, numbers or booleans")
        out.append((name, tuple(accepted)))
    return tuple(out)


def _stepup(value: StepupDocument | None) -> StepupRequirement | None:
    if value is None:
        return None
    if not value.acr_values:
        raise _fail("require.stepup.acr_values", f"is empty; list at least {WEBAUTHN_ACR}")
    return StepupRequirement(max_age=value.max_age, acr_values=value.acr_values)


def _headers(value: object, where: str) -> tuple[HeaderTemplate, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise _fail(where, "must map header names to templates, e.g. {x-tenant: '{claims.tenant}'}")
    out = []
    for name, template in value.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise _fail(where, f"has an invalid header name {name!r}")
        lname = name.lower()
        if lname in _RESERVED_HEADERS or lname.startswith((":", "x-auth-", "impersonate-")):
            raise _fail(f"{where}.{name}", "is reserved: identity and credential headers are "
                                           "set by extauthz itself")
        if not isinstance(template, str):
            raise _fail(f"{where}.{name}", "must be a string template, e.g. '{claims.tenant}'")
        parts: list[tuple[bool, str]] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(template):
            if m.start() > pos:
                parts.append((False, template[pos:m.start()]))
            ref = m.group(1).strip()
            if not ref.startswith("claims.") or len(ref) <= len("claims."):
                raise _fail(f"{where}.{name}", f"uses {{{ref}}}; write {{claims.NAME}}")
            parts.append((True, ref[len("claims."):]))
            pos = m.end()
        if pos < len(template):
            parts.append((False, template[pos:]))
        out.append(HeaderTemplate(lname, tuple(parts)))
    return tuple(out)


def parse_policy(doc: object, where: str = "policy") -> Policy:
    """One document to a Policy, or a PolicyInvalid naming the field."""
    d = POLICY_DOCUMENT.validate(doc, what=where, error=PolicyInvalid)
    if where == "policy":
        where = f"policy '{d.id}'"
    try:
        return _compile(d)
    except _FieldInvalid as e:
        raise PolicyInvalid(f"{where}: '{e.field}' {e.message}") from e


def _nats(d: PolicyDocument, n: NatsDocument) -> NatsPermissions:
    """A NATS policy's grant; it has no HTTP parts, and only what a token can prove."""
    if d.match != MatchDocument():
        raise _fail("match", "and 'nats' are both given; a policy is either HTTP (match) or "
                             "NATS (nats): split it into two policies")
    if d.headers:
        raise _fail("headers", "do not apply to a NATS policy; drop them")
    if d.mode != "enforce":
        raise _fail("mode", "is dry-run, which NATS policies do not support yet; use enforce")
    if not d.require.authenticated:
        raise _fail("require.authenticated", "is false, but a NATS connection always needs a "
                                             "token; set it to true")
    if d.require.stepup is not None and WEBAUTHN_ACR in d.require.stepup.acr_values:
        raise _fail("require.stepup.acr_values", f"has {WEBAUTHN_ACR}, the browser step-up cookie, "
                    "which never reaches NATS; name the acr values your IdP issues (e.g. phr)")
    lists = {}
    for side, subjects in (("publish", n.publish), ("subscribe", n.subscribe)):
        for which in ("allow", "deny"):
            values = getattr(subjects, which)
            for i, subject in enumerate(values):
                problem = subject_problem(subject)
                if problem is not None:
                    raise _fail(f"nats.{side}.{which}[{i}]", f"is {subject!r}, which {problem}")
            lists[f"{side}_{which}"] = tuple(dict.fromkeys(values))
    if n.account is not None and not n.account.strip():
        raise _fail("nats.account", "is empty; name the account or drop the key")
    return NatsPermissions(account=n.account, **lists)


def _compile(d: PolicyDocument) -> Policy:
    nats = _nats(d, d.nats) if d.nats is not None else None
    m, r = d.match, d.require
    hosts = tuple(dict.fromkeys(_host(h, f"match.hosts[{i}]") for i, h in enumerate(m.hosts)))
    paths = tuple(_path(p, f"match.paths[{i}]") for i, p in enumerate(m.paths))
    methods = tuple(dict.fromkeys(_method(method, f"match.methods[{i}]")
                                  for i, method in enumerate(m.methods)))
    require = Requirements(
        authenticated=r.authenticated,
        issuers=frozenset(r.issuers),
        audiences=frozenset(r.audiences),
        scopes=r.scopes,
        claims=_claims(r.claims, "require.claims"),
        stepup=_stepup(r.stepup),
    )
    if m.bound_only and (hosts or paths or methods):
        raise _fail("match.bound_only", "is true, so hosts, paths and methods would never be used; "
                                        "drop them or set bound_only: false")
    if not require.authenticated and (require.issuers or require.audiences or require.scopes
                                      or require.claims or require.stepup):
        raise _fail("require", "asks for issuers, audiences, scopes, claims or stepup on a public "
                               "route; set authenticated: true or drop them")
    headers = _headers(d.headers, "headers")
    # The stored form: methods upper case, once each.
    canonical = canonical_document(replace(d, match=replace(m, methods=methods)))
    return Policy(
        id=d.id, priority=d.priority, hosts=hosts, paths=paths, methods=frozenset(methods),
        bound_only=m.bound_only, require=require, action=d.action, mode=d.mode, headers=headers,
        description=d.description, document=canonical, nats=nats,
    )


def parse_policies(docs: Iterable[object], source: str = "policy") -> list[Policy]:
    """Many documents: all valid with unique ids, or a PolicyInvalid naming the one that is not."""
    policies: list[Policy] = []
    seen: dict[str, int] = {}
    for i, doc in enumerate(docs):
        where = f"{source}[{i}]"
        if isinstance(doc, dict) and isinstance(doc.get("id"), str):
            where = f"{source}: policy '{doc['id']}'"
        policy = parse_policy(doc, where)
        if policy.id in seen:
            raise PolicyInvalid(f"{where}: id {policy.id!r} appears twice (documents {seen[policy.id]} "
                                f"and {i}); ids must be unique")
        seen[policy.id] = i
        policies.append(policy)
    return policies


def policies_to_yaml(policies: Sequence[Policy]) -> str:
    return yaml.safe_dump_all([dict(p.document) for p in policies], sort_keys=False)
