"""A policy document, declared once: its keys, types, defaults and meaning.

``POLICY_DOCUMENT`` validates a parsed YAML/JSON document into ``PolicyDocument`` (unknown
keys are errors: ``methdos:`` must not silently match every method) and publishes the same
declaration as JSON Schema (``extauthz schema policy``). What a schema cannot say (RE2
compiles the regex, a path is in normal form, a method is standard, header templates name
claims) is checked by ``model.parse_policy``, which compiles the document into the
``Policy`` the matcher reads. A file may hold one document, a YAML stream of them, or a list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SkipValidation, WithJsonSchema

from extauthz.errors import PolicyInvalid
from extauthz.schema import strict_yaml
from extauthz.schema.declare import CLOSED, Bool, DocumentType, Hint, Int, Section, Str
from extauthz.schema.messages import yaml_error_line

WEBAUTHN_ACR = "urn:extauthz:webauthn"
ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# RFC 9110 §9 and PATCH (RFC 5789). Anything else is refused by name: a typo such as DELET on a
# deny policy would otherwise match no request and silently let DELETE through.
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
# In the schema, a method in any letter case (the loader upper-cases it and names the closest
# standard method for anything else).
_METHOD_SCHEMA = {"type": "string", "pattern": "^(?:" + "|".join(
    "".join(f"[{c}{c.lower()}]" for c in m) for m in METHODS) + ")$"}
_ClaimValue = Str | Int | float | Bool  # the schema of a value; model.ClaimValue at run time
Strings = tuple[Str, ...]


@dataclass(frozen=True)
class PathDocument(Section):
    """Exactly one of exact, prefix or regex."""

    __pydantic_config__ = CLOSED
    exact: Annotated[Str | None, Field(description="this path only, e.g. /healthz")] = None
    prefix: Annotated[Str | None, Field(description="this path and below, e.g. /admin/")] = None
    regex: Annotated[Str | None, Field(
        description="an RE2 regex the whole path must match, e.g. ^/v[0-9]+/users/[^/]+$")] = None


@dataclass(frozen=True)
class MatchDocument(Section):
    """Which requests the policy applies to; every list empty: any request."""

    __pydantic_config__ = CLOSED
    hosts: Annotated[Strings, Field(
        description="api.example.com or *.example.com, no port; empty: any host")] = ()
    paths: Annotated[tuple[PathDocument, ...], Field(description="empty: any path")] = ()
    methods: Annotated[tuple[Annotated[Str, WithJsonSchema(_METHOD_SCHEMA)], ...], Field(
        description="GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH; empty: any method")] = ()
    bound_only: Annotated[Bool, Field(
        description="true: only routes that bind it via context_extensions use it")] = False


@dataclass(frozen=True)
class StepupDocument(Section):
    """A WebAuthn step-up this recent."""

    __pydantic_config__ = CLOSED
    max_age: Annotated[Int, Field(ge=1, le=30 * 86400,
                                  description="seconds since the step-up")] = 300
    acr_values: Annotated[Strings, Field(description="acceptable acr values")] = (WEBAUTHN_ACR,)


@dataclass(frozen=True)
class RequireDocument(Section):
    """What the caller must present."""

    __pydantic_config__ = CLOSED
    authenticated: Annotated[Bool, Field(
        description="false: a public route (a valid token still yields identity headers)")] = True
    issuers: Annotated[Strings, Field(description="the token's iss is one of these")] = ()
    audiences: Annotated[Strings, Field(description="the token's aud contains one")] = ()
    scopes: Annotated[Strings, Field(description="all of these")] = ()
    # Shapes declared for the schema; checked with their own messages in model._claims.
    claims: Annotated[dict[str, Annotated[list[_ClaimValue], Field(min_length=1)] | _ClaimValue] | None,
                      SkipValidation, Field(
        description="claim name: accepted values (any of), e.g. {groups: [sre, dev]}")] = None
    stepup: Annotated[StepupDocument | None, Field(
        description="a WebAuthn step-up, e.g. {max_age: 300}")] = None


@dataclass(frozen=True)
class NatsSubjectsDocument(Section):
    """NATS subjects, as patterns: tokens split by '.', '*' one token, '>' the rest."""

    __pydantic_config__ = CLOSED
    allow: Annotated[Strings, Field(description="subjects granted, e.g. orders.>")] = ()
    deny: Annotated[Strings, Field(description="subjects refused even where allow grants")] = ()


@dataclass(frozen=True)
class NatsDocument(Section):
    """A NATS policy (the auth callout): the permissions of a connection it allows."""

    __pydantic_config__ = CLOSED
    account: Annotated[Str | None, Field(
        description="the account users are placed in; null: nats.account of the config")] = None
    publish: NatsSubjectsDocument = NatsSubjectsDocument()
    subscribe: NatsSubjectsDocument = NatsSubjectsDocument()


@dataclass(frozen=True)
class PolicyDocument(Section):
    """An extauthz policy: who may pass, per host, path and method."""

    __pydantic_config__ = CLOSED
    id: Annotated[Str, Field(pattern=ID_PATTERN, description="lower-case letters, digits and '-'"),
                  Hint("use lower-case letters, digits and '-' (at most 63, not starting or "
                       "ending with '-')")]
    priority: Annotated[Int, Field(ge=-1_000_000, le=1_000_000,
                                   description="tie-breaker only (higher wins)")] = 0
    match: MatchDocument = MatchDocument()
    # Either match (HTTP) or nats (the NATS auth callout); model._compile refuses both.
    nats: Annotated[NatsDocument | None, Field(
        description="a NATS policy: the connection's publish/subscribe permissions")] = None
    require: RequireDocument = RequireDocument()
    action: Literal["allow", "deny"] = "allow"
    mode: Annotated[Literal["enforce", "dry-run"], Field(
        description="dry-run: log and count what it would deny; never decides")] = "enforce"
    # Checked in model._headers (names, reserved headers, {claims.NAME} templates).
    headers: Annotated[dict[str, Str] | None, SkipValidation, Field(
        description="extra upstream headers from claims, e.g. {x-tenant: '{claims.tenant}'}")] = None
    description: Str = ""


POLICY_DOCUMENT = DocumentType(
    PolicyDocument, many=True, title="extauthz policy",
    description="An extauthz policy document (or a list of them): extauthz policy apply -f FILE.")


def documents_from_text(text: str, source: str) -> list[object]:
    """YAML stream or JSON; a top-level list is a list of policies."""
    try:
        loaded = list(strict_yaml.load_all(text))
    except yaml.YAMLError as e:
        raise PolicyInvalid(yaml_error_line(source, e, "not valid YAML or JSON")) from e
    docs: list[object] = []
    for item in loaded:
        if item is None:
            continue
        if isinstance(item, list):
            docs.extend(item)
        else:
            docs.append(item)
    return docs


def canonical_document(doc: PolicyDocument) -> dict[str, Any]:
    """The stored form: every key present, path entries with only their one kind."""
    out: dict[str, Any] = POLICY_DOCUMENT.dump(doc)
    out["match"]["paths"] = [{k: v for k, v in p.items() if v is not None}
                             for p in out["match"]["paths"]]
    if out["nats"] is None:  # an HTTP policy has no nats key, a NATS policy no match
        del out["nats"]
    else:
        del out["match"]
    return out
