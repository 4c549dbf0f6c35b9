"""The settings the service runs with: the validated file, resolved and cross-checked once.

``settings_from_document`` turns a parsed document (file and environment merged) into one
frozen ``Settings``; every problem is a ``ConfigError`` whose one line names the key and
the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from extauthz.config.checks import (
    admin_listen,
    check_demo_is_local,
    check_impersonation_prefix,
    check_key_transport,
    check_url,
    header_prefix,
    parse_listen,
)
from extauthz.config.model import (
    CONFIG_FILE,
    AuditSettings,
    CheckHttpSection,
    DemoIssuerSection,
    HeaderSettings,
    IssuerSettings,
    JWKSSettings,
    StepupSection,
    StoreSettings,
    TokenSettings,
)
from extauthz.config.nats import NatsSettings, resolve_nats
from extauthz.errors import ConfigError


@dataclass(frozen=True)
class StepupSettings:
    """``stepup`` (``model.StepupSection``) with ``rp_id`` and ``origins`` resolved."""

    rp_id: str
    rp_name: str
    origins: tuple[str, ...]
    cookie_name: str
    max_age_limit: int
    signing_key_file: str | None
    challenge_ttl: int
    enrol_max_age: int
    first_enrolment_max_age: int
    max_failures: int
    failure_window: int


@dataclass(frozen=True)
class DemoIssuerSettings:
    """``demo_issuer`` (``model.DemoIssuerSection``) with ``issuer`` resolved."""

    enabled: bool
    issuer: str
    audience: str
    key_file: str
    username_prefix: str = "demo:"
    groups_prefix: str = "demo:"
    allow_non_local: bool = False


@dataclass(frozen=True)
class Settings:
    grpc_listen: tuple[str, int]
    http_listen: tuple[str, int]
    public_url: str
    workers: int
    shutdown_grace: float
    issuers: tuple[IssuerSettings, ...]
    token: TokenSettings
    jwks: JWKSSettings
    store: StoreSettings
    stepup: StepupSettings
    audit: AuditSettings
    default_action: str
    login_url: str | None
    realm: str
    headers: HeaderSettings
    demo_issuer: DemoIssuerSettings
    log_level: str
    log_format: str | None = None  # json, text; None: text on a terminal, else json
    admin_listen: tuple[str, int] | None = None  # /metrics, /readyz details (admin.listen)
    admin_grpc_listen: tuple[str, int] | None = None  # gRPC reflection (admin.grpc_listen)
    http_header_timeout: float = 10.0
    http_max_connections: int = 1000
    check_http_listen: tuple[str, int] | None = None  # Check over plain HTTP (check_http.listen)
    check_http: CheckHttpSection = field(default_factory=CheckHttpSection)
    nats: NatsSettings = NatsSettings()  # noqa: RUF009 (frozen) the NATS auth callout (config/nats.py)


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://")


def settings_from_document(doc: Mapping[str, object]) -> Settings:
    f = CONFIG_FILE.validate(doc, what="config")
    grpc_listen = parse_listen(f.grpc.listen, "grpc.listen")
    http_listen = parse_listen(f.http.listen, "http.listen")
    public_url = check_url(f.http.public_url, "http.public_url").rstrip("/")
    if f.login_url is not None and not f.login_url.startswith("/"):
        check_url(f.login_url, "login_url")
    demo = _demo_issuer(f.demo_issuer, http_listen, public_url)
    issuers = [_issuer(i, item) for i, item in enumerate(f.issuers)]
    if demo.enabled and not any(i.issuer == demo.issuer for i in issuers):
        issuers.append(IssuerSettings(
            issuer=demo.issuer, audiences=(demo.audience,), jwks_uri=None, algorithms=("ES256",),
            ca_file=None, username_claim="email", username_prefix=demo.username_prefix,
            groups_claim="groups", groups_prefix=demo.groups_prefix,
            insecure_http=demo.allow_non_local,
        ))
    seen: set[str] = set()
    for i, iss in enumerate(issuers):
        if iss.issuer in seen:
            raise ConfigError(f"config: 'issuers[{i}].issuer' {iss.issuer!r} is listed twice; "
                              "merge the two entries")
        seen.add(iss.issuer)
    if f.headers.kubernetes_impersonation:
        for i, iss in enumerate(issuers):
            where = f"issuers[{i}]" if i < len(f.issuers) else "demo_issuer"
            check_impersonation_prefix(iss.username_prefix, f"{where}.username_prefix")
            check_impersonation_prefix(iss.groups_prefix, f"{where}.groups_prefix")
    _check_audit(f.audit, f.store.url or "")
    if f.token.cookie is not None and not f.token.cookie.strip():
        raise ConfigError("config: 'token.cookie' is empty; give a cookie name or null")
    prefix = header_prefix(f.headers.prefix)
    check_http = (None if f.check_http.listen is None
                  else parse_listen(f.check_http.listen, "check_http.listen"))
    public = (http_listen, grpc_listen, *filter(None, [check_http]))
    if len({port for _, port in public}) < len(public):
        raise ConfigError("config: 'grpc.listen', 'http.listen' and 'check_http.listen' share a "
                          "port; give each its own (check_http.listen: null turns it off)")
    admin = admin_listen(f.admin.listen, "admin.listen", public)
    return Settings(
        grpc_listen=grpc_listen,
        http_listen=http_listen,
        public_url=public_url,
        workers=f.workers,
        shutdown_grace=f.shutdown_grace,
        issuers=tuple(issuers),
        token=f.token,
        jwks=f.jwks,
        store=f.store,
        stepup=_stepup(f.stepup, public_url),
        audit=f.audit,
        default_action=f.default_action,
        login_url=f.login_url,
        realm=f.realm,
        headers=replace(f.headers, prefix=prefix),
        demo_issuer=demo,
        log_level=f.log_level,
        log_format=f.log_format,
        admin_listen=admin,
        admin_grpc_listen=admin_listen(f.admin.grpc_listen, "admin.grpc_listen",
                                       (*public, *filter(None, [admin]))),
        http_header_timeout=f.http.header_timeout,
        http_max_connections=f.http.max_connections,
        check_http_listen=check_http,
        check_http=f.check_http,
        nats=resolve_nats(f.nats),
    )


def _demo_issuer(demo: DemoIssuerSection, http_listen: tuple[str, int],
                 public_url: str) -> DemoIssuerSettings:
    settings = DemoIssuerSettings(
        enabled=demo.enabled,
        issuer=(demo.issuer or f"http://localhost:{http_listen[1]}").rstrip("/"),
        audience=demo.audience, key_file=demo.key_file, username_prefix=demo.username_prefix,
        groups_prefix=demo.groups_prefix, allow_non_local=demo.allow_non_local,
    )
    if settings.enabled and not settings.allow_non_local:
        check_demo_is_local(settings.issuer, public_url, http_listen[0])
    return settings


def _check_audit(audit: AuditSettings, store_url: str) -> None:
    if audit.redis_url is not None and not audit.redis_url.startswith(_REDIS_SCHEMES):
        raise ConfigError("config: 'audit.redis_url' must be redis://…, rediss://… or unix://…; "
                          "or null to use the store's Redis")
    if audit.redis_stream and not (audit.redis_url or store_url).startswith(_REDIS_SCHEMES):
        raise ConfigError("config: 'audit.redis_stream' needs a Redis store; set store.url to "
                          "redis://… (or audit.redis_url) or turn audit.redis_stream off")


def _stepup(s: StepupSection, public_url: str) -> StepupSettings:
    parts = urlsplit(public_url)
    origins = tuple(o.rstrip("/") for o in s.origins) or (f"{parts.scheme}://{parts.netloc}",)
    for i, origin in enumerate(origins):
        check_url(origin, f"stepup.origins[{i}]")
    rp_id = s.rp_id or (parts.hostname or "")
    for origin in origins:
        host = urlsplit(origin).hostname or ""
        if host != rp_id and not host.endswith("." + rp_id):
            raise ConfigError(f"config: 'stepup.origins' has {origin!r}, which is not on the RP ID "
                              f"{rp_id!r}; WebAuthn needs every origin's host to be the RP ID or a "
                              "subdomain of it")
    if not s.cookie_name.startswith(("__Host-", "__Secure-")):
        raise ConfigError("config: 'stepup.cookie_name' must start with __Host- (or __Secure-) so "
                          "browsers bind it to this site; e.g. __Host-extauthz-stepup")
    if s.signing_key_file is not None and not Path(s.signing_key_file).is_file():
        raise ConfigError(f"config: 'stepup.signing_key_file' {s.signing_key_file!r} does not "
                          "exist; give a PEM EC P-256 private key, or null to generate one")
    return StepupSettings(
        rp_id=rp_id, rp_name=s.rp_name, origins=origins, cookie_name=s.cookie_name,
        max_age_limit=s.max_age_limit, signing_key_file=s.signing_key_file,
        challenge_ttl=s.challenge_ttl, enrol_max_age=s.enrol_max_age,
        first_enrolment_max_age=s.first_enrolment_max_age, max_failures=s.max_failures,
        failure_window=s.failure_window,
    )


def _issuer(index: int, item: IssuerSettings) -> IssuerSettings:
    where = f"issuers[{index}]"
    check_url(item.issuer, f"{where}.issuer")
    if not item.audiences:
        raise ConfigError(f"config: '{where}.audiences' is empty; list the audiences this "
                          "service accepts (a token's 'aud' must contain one)")
    if not item.algorithms:
        raise ConfigError(f"config: '{where}.algorithms' is empty; e.g. [RS256, ES256]")
    if item.jwks_uri is not None:
        check_url(item.jwks_uri, f"{where}.jwks_uri")
    if not item.insecure_http:
        check_key_transport(item.issuer, item.jwks_uri, where)
    if item.ca_file is not None and not Path(item.ca_file).is_file():
        raise ConfigError(f"config: '{where}.ca_file' {item.ca_file!r} does not exist; "
                          "give the path of a PEM CA bundle")
    return item


def insecure_settings(settings: Settings) -> tuple[str, ...]:
    """What this configuration trusts that an attacker could exploit; logged at ERROR at
    start and periodically, so it is never on unnoticed."""
    out = []
    demo = settings.demo_issuer
    if demo.enabled:
        out.append("demo_issuer.enabled is on: anyone who reaches /.extauthz/demo/login signs in "
                   "as anyone, with any groups" + (" (allow_non_local: from other machines too)"
                                                   if demo.allow_non_local else ""))
    for i, iss in enumerate(settings.issuers):
        if iss.issuer == demo.issuer and demo.enabled:
            continue  # said above
        if iss.insecure_http:
            out.append(f"issuers[{i}].insecure_http is on: the keys of {iss.issuer!r} may come "
                       "over plain http, where anyone on the path can swap them and forge tokens")
    return tuple(out)
