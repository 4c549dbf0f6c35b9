"""Settings: one YAML file, every key overridable by an ``EXTAUTHZ_*`` variable.

The schema below is the single source of defaults. Environment variable names are
derived from key paths (``http.public_url`` -> ``EXTAUTHZ_HTTP_PUBLIC_URL``); list
and section values in the environment are read as YAML (``EXTAUTHZ_ISSUERS='[...]'``).
Everything is validated once, at start, into frozen dataclasses.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from extauthz.errors import ConfigError
from extauthz.validation import Field, Schema, check_document

ENV_PREFIX = "EXTAUTHZ_"
CONFIG_VARIABLE = ENV_PREFIX + "CONFIG"  # the config file's path
# Read by the code but not config keys: set by the worker supervisor for its children
# (extauthz/workers.py, extauthz/server.py). Any other EXTAUTHZ_* name is an error.
INTERNAL_VARIABLES = frozenset({ENV_PREFIX + "WORKER_ID", ENV_PREFIX + "METRICS_DIR"})
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                      "ES256", "ES384", "ES512", "EdDSA", "Ed25519")
DEFAULT_ALGORITHMS = ["RS256", "ES256", "PS256", "EdDSA"]
DEFAULT_ACTIONS = ("deny", "authenticated", "allow")
# Names the kube-apiserver reserves (system:masters is cluster-admin whatever RBAC says):
# never impersonated, and no issuer's prefix may produce one.
KUBERNETES_RESERVED = "system:"

ISSUER_SCHEMA: Schema = {
    "issuer": Field("str", required=True, doc="the exact 'iss' of the tokens"),
    "audiences": Field("list[str]", required=True, doc="a token's 'aud' must contain one"),
    "jwks_uri": Field("str", nullable=True, doc="null: taken from OIDC discovery"),
    "algorithms": Field("list[str]", default=DEFAULT_ALGORITHMS, choices=ALLOWED_ALGORITHMS),
    "ca_file": Field("str", nullable=True, doc="PEM bundle for a private CA"),
    "username_claim": Field("str", default="sub"),
    "username_prefix": Field("str", default=""),
    "groups_claim": Field("str", default="groups"),
    "groups_prefix": Field("str", default=""),
    "insecure_http": Field("bool", default=False,
                           doc="allow http:// for a non-loopback issuer or jwks_uri (logged)"),
}

SCHEMA: Schema = {
    "grpc": Field("section", schema={"listen": Field("str", default="0.0.0.0:9001")}),
    "http": Field("section", schema={
        "listen": Field("str", default="0.0.0.0:9002"),
        "public_url": Field("str", default="http://localhost:8000"),
        "header_timeout": Field("float", default=10.0, minimum=0.1, maximum=600,
                                doc="seconds a client has to send a request's headers on a new "
                                    "or idle connection (and then its body)"),
        "max_connections": Field("int", default=1000, minimum=1, maximum=1_000_000,
                                 doc="open HTTP connections per worker; more are answered 503"),
    }),
    "admin": Field("section", schema={
        "listen": Field("str", default="127.0.0.1:9004", nullable=True,
                        doc="/metrics and /readyz details; null: off"),
        "grpc_listen": Field("str", nullable=True,
                             doc="gRPC server reflection and health; null: off"),
    }),
    "workers": Field("int", default=1, minimum=1, maximum=256),
    "shutdown_grace": Field("float", default=10.0, minimum=0, maximum=600),
    "issuers": Field("list[section]", default=[], schema=ISSUER_SCHEMA),
    "token": Field("section", schema={
        "cookie": Field("str", nullable=True),
        "leeway": Field("int", default=30, minimum=0, maximum=600),
        "max_bytes": Field("int", default=16384, minimum=512, maximum=1 << 20),
        "cache_size": Field("int", default=10000, minimum=0, maximum=10_000_000),
    }),
    "jwks": Field("section", schema={
        "default_ttl": Field("int", default=600, minimum=60, maximum=86400),
        "fetch_timeout": Field("float", default=5.0, minimum=0.1, maximum=60),
        "unknown_kid_cooldown": Field("float", default=30.0, minimum=0, maximum=3600),
    }),
    "store": Field("section", schema={
        "url": Field("str", nullable=True, doc="redis://…, rediss://…, unix://… or file:///path"),
        "prefix": Field("str", default="extauthz:"),
        "poll_interval": Field("float", default=1.0, minimum=0.05, maximum=60),
        "timeout": Field("float", default=2.0, minimum=0.1, maximum=60),
        "state_file": Field("str", default=".extauthz/state.json",
                            doc="passkeys, challenges and keys when the store is not Redis"),
        "snapshot_file": Field("str", nullable=True,
                               doc="each worker's last good Redis snapshot (the local floor); "
                                   "null: next to state_file"),
        "require_safe_redis": Field("bool", default=False,
                                    doc="refuse to start unless Redis is noeviction and persistent"),
        "safety_check_interval": Field("float", default=60.0, minimum=1, maximum=86400),
    }),
    "stepup": Field("section", schema={
        "rp_id": Field("str", nullable=True, doc="null: the host of http.public_url"),
        "rp_name": Field("str", default="extauthz"),
        "origins": Field("list[str]", default=[], doc="empty: the origin of http.public_url"),
        "cookie_name": Field("str", default="__Host-extauthz-stepup"),
        "max_age_limit": Field("int", default=43200, minimum=60, maximum=30 * 86400),
        "signing_key_file": Field("str", nullable=True, doc="null: generated, kept in the store"),
        "challenge_ttl": Field("int", default=300, minimum=30, maximum=3600),
        "enrol_max_age": Field("int", default=300, minimum=30, maximum=86400,
                               doc="adding or removing a passkey needs a step-up this recent"),
        "first_enrolment_max_age": Field("int", default=300, minimum=30, maximum=3600,
                                         doc="the first passkey needs an IdP sign-in (auth_time) "
                                             "this recent, or an operator's allow-enrolment"),
        "max_failures": Field("int", default=5, minimum=1, maximum=1000),
        "failure_window": Field("int", default=900, minimum=10, maximum=86400),
    }),
    "audit": Field("section", schema={
        "stdout": Field("bool", default=True),
        "redis_stream": Field("bool", default=False, doc="also XADD to <prefix>audit (Redis store)"),
        "stream_maxlen": Field("int", default=100_000, minimum=1000, maximum=100_000_000),
        "flush_interval": Field("float", default=0.2, minimum=0.01, maximum=10),
        "redis_url": Field("str", nullable=True,
                           doc="the stream's own Redis; null: the store's (shares its memory)"),
    }),
    "default_action": Field("str", default="deny", choices=DEFAULT_ACTIONS),
    "login_url": Field("str", nullable=True),
    "realm": Field("str", default="extauthz"),
    "headers": Field("section", schema={
        "prefix": Field("str", default="x-auth-"),
        "kubernetes_impersonation": Field("bool", default=False),
        "forward_authorization": Field("bool", default=False),
    }),
    "demo_issuer": Field("section", schema={
        "enabled": Field("bool", default=False),
        "issuer": Field("str", nullable=True, doc="null: http://localhost:<http port>"),
        "audience": Field("str", default="extauthz-demo"),
        "key_file": Field("str", default=".extauthz/demo-issuer-key.pem"),
        "username_prefix": Field("str", default="demo:", doc="as an issuer's username_prefix"),
        "groups_prefix": Field("str", default="demo:", doc="as an issuer's groups_prefix"),
        "allow_non_local": Field("bool", default=False,
                                 doc="run it although http.public_url, http.listen or its issuer "
                                     "is not on this machine (anyone can sign in as anyone)"),
    }),
    "log_level": Field("str", default="info", choices=("debug", "info", "warning", "error")),
}


@dataclass(frozen=True)
class IssuerSettings:
    issuer: str
    audiences: tuple[str, ...]
    jwks_uri: str | None
    algorithms: tuple[str, ...]
    ca_file: str | None
    username_claim: str
    username_prefix: str
    groups_claim: str
    groups_prefix: str
    insecure_http: bool = False


@dataclass(frozen=True)
class TokenSettings:
    cookie: str | None
    leeway: int
    max_bytes: int
    cache_size: int


@dataclass(frozen=True)
class JWKSSettings:
    default_ttl: int
    fetch_timeout: float
    unknown_kid_cooldown: float


@dataclass(frozen=True)
class HeaderSettings:
    prefix: str
    kubernetes_impersonation: bool
    forward_authorization: bool


@dataclass(frozen=True)
class DemoIssuerSettings:
    enabled: bool
    issuer: str
    audience: str
    key_file: str
    username_prefix: str = "demo:"
    groups_prefix: str = "demo:"
    allow_non_local: bool = False


@dataclass(frozen=True)
class StoreSettings:
    url: str | None
    prefix: str
    poll_interval: float
    timeout: float
    state_file: str
    snapshot_file: str | None
    require_safe_redis: bool
    safety_check_interval: float


@dataclass(frozen=True)
class StepupSettings:
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
class AuditSettings:
    stdout: bool
    redis_stream: bool
    stream_maxlen: int
    flush_interval: float
    redis_url: str | None


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
    admin_listen: tuple[str, int] | None = None  # /metrics, /readyz details (admin.listen)
    admin_grpc_listen: tuple[str, int] | None = None  # gRPC reflection (admin.grpc_listen)
    http_header_timeout: float = 10.0
    http_max_connections: int = 1000


def env_name(path: str) -> str:
    return ENV_PREFIX + path.replace(".", "_").upper()


def env_names(schema: Schema = SCHEMA, where: str = "") -> dict[str, str]:
    """Every overridable key path and its environment variable."""
    names: dict[str, str] = {}
    for key, spec in schema.items():
        path = f"{where}.{key}" if where else key
        if spec.kind == "section":
            names.update(env_names(spec.schema, path))
        else:
            names[path] = env_name(path)
    return names


def check_env_names(environ: Mapping[str, str]) -> None:
    """Every ``EXTAUTHZ_*`` variable (in any letter case) must name a key: a misspelled
    one would otherwise be ignored and its setting silently left at the default."""
    known = {name: path for path, name in env_names().items()}
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        if name in known or name == CONFIG_VARIABLE or name in INTERNAL_VARIABLES:
            continue
        suffixes = {n[len(ENV_PREFIX):]: n for n in [*known, CONFIG_VARIABLE]}
        close = difflib.get_close_matches(name.upper()[len(ENV_PREFIX):], list(suffixes), n=1,
                                          cutoff=0.6)
        if close:
            guess = suffixes[close[0]]
            what = f"key '{known[guess]}'" if guess in known else "the config file's path"
            raise ConfigError(f"config: unknown environment variable {name}: did you mean "
                              f"{guess} ({what})? Rename or unset it")
        raise ConfigError(f"config: unknown environment variable {name}: it names no key; unset "
                          "it, or write EXTAUTHZ_ and the key path in capitals with '.' as '_' "
                          "(http.public_url is EXTAUTHZ_HTTP_PUBLIC_URL)")


def _apply_env(doc: dict[str, Any], environ: Mapping[str, str]) -> None:
    check_env_names(environ)
    for path, name in env_names().items():
        if name not in environ:
            continue
        raw = environ[name]
        spec = _spec_at(path)
        if spec.kind == "str":
            value: Any = None if (spec.nullable and raw in ("", "null")) else raw
        else:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError as e:
                raise ConfigError(f"config: {name} is not valid YAML: {e}") from e
        node = doc
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value


def _spec_at(path: str) -> Field:
    schema = SCHEMA
    parts = path.split(".")
    for part in parts[:-1]:
        schema = schema[part].schema
    return schema[parts[-1]]


def parse_listen(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"config: '{key}' is {value!r}; write HOST:PORT, e.g. 0.0.0.0:9001")
    return host.strip("[]"), int(port)


def _check_url(value: str, key: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"config: '{key}' is {value!r}; write an absolute http(s):// URL")
    return value


def load_settings(
    path: str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the file (``path`` or ``EXTAUTHZ_CONFIG``), apply the environment, validate."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_VARIABLE) or None
    doc: dict[str, Any] = {}
    if path:
        doc = read_yaml_mapping(path)
    _apply_env(doc, environ)
    return settings_from_document(doc)


def read_yaml_mapping(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"config: cannot read {path}: {e.strerror}; check the --config path") from e
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config: {path} is not valid YAML: {e}") from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"config: {path} must hold a mapping of keys at the top level")
    return doc


def settings_from_document(doc: Mapping[str, Any]) -> Settings:
    d = check_document(dict(doc), SCHEMA)
    grpc_listen = parse_listen(d["grpc"]["listen"], "grpc.listen")
    http_listen = parse_listen(d["http"]["listen"], "http.listen")
    public_url = _check_url(d["http"]["public_url"], "http.public_url").rstrip("/")
    if d["login_url"] is not None and not d["login_url"].startswith("/"):
        _check_url(d["login_url"], "login_url")
    demo = d["demo_issuer"]
    demo_settings = DemoIssuerSettings(
        enabled=demo["enabled"],
        issuer=(demo["issuer"] or f"http://localhost:{http_listen[1]}").rstrip("/"),
        audience=demo["audience"],
        key_file=demo["key_file"],
        username_prefix=demo["username_prefix"],
        groups_prefix=demo["groups_prefix"],
        allow_non_local=demo["allow_non_local"],
    )
    if demo_settings.enabled and not demo_settings.allow_non_local:
        _check_demo_is_local(demo_settings, public_url, http_listen[0])
    issuers = [_issuer(i, item) for i, item in enumerate(d["issuers"])]
    if demo_settings.enabled and not any(i.issuer == demo_settings.issuer for i in issuers):
        issuers.append(IssuerSettings(
            issuer=demo_settings.issuer, audiences=(demo_settings.audience,), jwks_uri=None,
            algorithms=("ES256",), ca_file=None, username_claim="email",
            username_prefix=demo_settings.username_prefix, groups_claim="groups",
            groups_prefix=demo_settings.groups_prefix, insecure_http=demo_settings.allow_non_local,
        ))
    seen: set[str] = set()
    for i, iss in enumerate(issuers):
        if iss.issuer in seen:
            raise ConfigError(f"config: 'issuers[{i}].issuer' {iss.issuer!r} is listed twice; "
                              "merge the two entries")
        seen.add(iss.issuer)
    if d["headers"]["kubernetes_impersonation"]:
        for i, iss in enumerate(issuers):
            where = f"issuers[{i}]" if i < len(d["issuers"]) else "demo_issuer"
            _check_impersonation_prefix(iss.username_prefix, f"{where}.username_prefix")
            _check_impersonation_prefix(iss.groups_prefix, f"{where}.groups_prefix")
    redis_url = d["store"]["url"] or ""
    audit_url = d["audit"]["redis_url"]
    if audit_url is not None and not audit_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("config: 'audit.redis_url' must be redis://…, rediss://… or unix://…; "
                          "or null to use the store's Redis")
    if d["audit"]["redis_stream"] and not (audit_url or redis_url).startswith(
            ("redis://", "rediss://", "unix://")):
        raise ConfigError("config: 'audit.redis_stream' needs a Redis store; set store.url to "
                          "redis://… (or audit.redis_url) or turn audit.redis_stream off")
    cookie = d["token"]["cookie"]
    if cookie is not None and not cookie.strip():
        raise ConfigError("config: 'token.cookie' is empty; give a cookie name or null")
    prefix = _header_prefix(d["headers"]["prefix"])
    admin_listen = _admin_listen(d["admin"]["listen"], "admin.listen", (http_listen, grpc_listen))
    return Settings(
        grpc_listen=grpc_listen,
        http_listen=http_listen,
        public_url=public_url,
        workers=d["workers"],
        shutdown_grace=d["shutdown_grace"],
        issuers=tuple(issuers),
        token=TokenSettings(**d["token"]),
        jwks=JWKSSettings(**d["jwks"]),
        store=StoreSettings(**d["store"]),
        stepup=_stepup(d["stepup"], public_url),
        audit=AuditSettings(**d["audit"]),
        default_action=d["default_action"],
        login_url=d["login_url"],
        realm=d["realm"],
        headers=HeaderSettings(
            prefix=prefix,
            kubernetes_impersonation=d["headers"]["kubernetes_impersonation"],
            forward_authorization=d["headers"]["forward_authorization"],
        ),
        demo_issuer=demo_settings,
        log_level=d["log_level"],
        admin_listen=admin_listen,
        admin_grpc_listen=_admin_listen(d["admin"]["grpc_listen"], "admin.grpc_listen",
                                        (http_listen, grpc_listen, *filter(None, [admin_listen]))),
        http_header_timeout=d["http"]["header_timeout"],
        http_max_connections=d["http"]["max_connections"],
    )


def _admin_listen(value: str | None, key: str,
                  public: tuple[tuple[str, int], ...]) -> tuple[str, int] | None:
    """An admin address, never one of the public ports (whoever reaches those must not get
    the metrics or the readiness details)."""
    if value is None:
        return None
    listen = parse_listen(value, key)
    if any(listen[1] == port for _, port in public):
        raise ConfigError(f"config: '{key}' {value!r} uses the port of another listener (grpc, "
                          "http or admin); give it its own port, or null")
    return listen


# Every incoming header starting with headers.prefix is removed, so the prefix must not
# start a header anything else relies on: standard and hop-by-hop names are out by shape
# (x-…-), these widely used x- names and families are out by name.
_PREFIX_SHAPE = re.compile(r"x-[a-z0-9]+(-[a-z0-9]+)*-")
RESERVED_HEADER_FAMILIES = (
    "x-envoy-", "x-forwarded-", "x-b3-", "x-ot-", "x-datadog-", "x-cloud-trace-", "x-amzn-",
    "x-amz-", "x-goog-", "x-ms-", "x-istio-", "x-remote-", "x-original-", "x-real-",
    "x-request-",
)
RESERVED_HEADERS = (
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
    "x-forwarded-client-cert", "x-real-ip", "x-request-id", "x-request-start",
    "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
    "x-ot-span-context", "x-cloud-trace-context", "x-amzn-trace-id", "x-correlation-id",
    "x-client-ip", "x-cluster-client-ip", "x-csrf-token", "x-xsrf-token", "x-requested-with",
    "x-http-method-override", "x-original-url", "x-original-uri", "x-api-key",
    "x-remote-user", "x-remote-group", "x-content-type-options", "x-frame-options",
)


def _header_prefix(value: str) -> str:
    prefix = value.lower()
    if not _PREFIX_SHAPE.fullmatch(prefix) or len(prefix) > 40:
        raise ConfigError(f"config: 'headers.prefix' is {value!r}; write x-NAME- (lower-case "
                          "letters, digits and '-', ending in '-', at most 40), e.g. x-auth-: "
                          "every incoming header that starts with it is removed")
    for name in RESERVED_HEADERS:
        if name.startswith(prefix):
            raise ConfigError(f"config: 'headers.prefix' {value!r} would remove the {name} "
                              "header from every request; choose another, e.g. x-auth-")
    for family in RESERVED_HEADER_FAMILIES:
        if prefix.startswith(family) or family.startswith(prefix):
            raise ConfigError(f"config: 'headers.prefix' {value!r} overlaps the {family}* "
                              "headers that proxies and platforms use; choose another, e.g. x-auth-")
    return prefix


def _check_impersonation_prefix(prefix: str, key: str) -> None:
    """With Impersonate-User/-Group, a token's names become Kubernetes users and groups: an
    unprefixed ``groups: [system:masters]`` would be cluster-admin."""
    if not prefix:
        raise ConfigError(f"config: '{key}' is empty, but headers.kubernetes_impersonation is on "
                          "(a token's system:masters group would become cluster-admin); set a "
                          "prefix such as \"idp:\", as kube-apiserver's --oidc-*-prefix flags do")
    if prefix.startswith(KUBERNETES_RESERVED) or KUBERNETES_RESERVED.startswith(prefix):
        raise ConfigError(f"config: '{key}' is {prefix!r}, which can make names in the "
                          "apiserver's reserved system: namespace; choose another, e.g. \"idp:\"")


def _stepup(s: Mapping[str, Any], public_url: str) -> StepupSettings:
    parts = urlsplit(public_url)
    origins = tuple(o.rstrip("/") for o in s["origins"]) or (f"{parts.scheme}://{parts.netloc}",)
    for i, origin in enumerate(origins):
        _check_url(origin, f"stepup.origins[{i}]")
    rp_id = s["rp_id"] or (parts.hostname or "")
    for origin in origins:
        host = urlsplit(origin).hostname or ""
        if host != rp_id and not host.endswith("." + rp_id):
            raise ConfigError(f"config: 'stepup.origins' has {origin!r}, which is not on the RP ID "
                              f"{rp_id!r}; WebAuthn needs every origin's host to be the RP ID or a "
                              "subdomain of it")
    name = s["cookie_name"]
    if name.startswith("__Host-") is False and name.startswith("__Secure-") is False:
        raise ConfigError("config: 'stepup.cookie_name' must start with __Host- (or __Secure-) so "
                          "browsers bind it to this site; e.g. __Host-extauthz-stepup")
    if s["signing_key_file"] is not None and not Path(s["signing_key_file"]).is_file():
        raise ConfigError(f"config: 'stepup.signing_key_file' {s['signing_key_file']!r} does not "
                          "exist; give a PEM EC P-256 private key, or null to generate one")
    return StepupSettings(
        rp_id=rp_id, rp_name=s["rp_name"], origins=origins, cookie_name=name,
        max_age_limit=s["max_age_limit"], signing_key_file=s["signing_key_file"],
        challenge_ttl=s["challenge_ttl"], enrol_max_age=s["enrol_max_age"],
        first_enrolment_max_age=s["first_enrolment_max_age"],
        max_failures=s["max_failures"],
        failure_window=s["failure_window"],
    )


def _issuer(index: int, item: Mapping[str, Any]) -> IssuerSettings:
    where = f"issuers[{index}]"
    issuer = item["issuer"]
    _check_url(issuer, f"{where}.issuer")
    if not item["audiences"]:
        raise ConfigError(f"config: '{where}.audiences' is empty; list the audiences this "
                          "service accepts (a token's 'aud' must contain one)")
    if not item["algorithms"]:
        raise ConfigError(f"config: '{where}.algorithms' is empty; e.g. [RS256, ES256]")
    if item["jwks_uri"] is not None:
        _check_url(item["jwks_uri"], f"{where}.jwks_uri")
    if not item["insecure_http"]:
        _check_key_transport(issuer, item["jwks_uri"], where)
    if item["ca_file"] is not None and not Path(item["ca_file"]).is_file():
        raise ConfigError(f"config: '{where}.ca_file' {item['ca_file']!r} does not exist; "
                          "give the path of a PEM CA bundle")
    return IssuerSettings(
        issuer=issuer,
        audiences=tuple(item["audiences"]),
        jwks_uri=item["jwks_uri"],
        algorithms=tuple(item["algorithms"]),
        ca_file=item["ca_file"],
        username_claim=item["username_claim"],
        username_prefix=item["username_prefix"],
        groups_claim=item["groups_claim"],
        groups_prefix=item["groups_prefix"],
        insecure_http=item["insecure_http"],
    )


def is_loopback_url(url: str) -> bool:
    """The URL's host is this machine: localhost (or a name under .localhost), 127/8, ::1."""
    return is_loopback_host(urlsplit(url).hostname or "")


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # 0.0.0.0, ::, a name: reachable from elsewhere


def _check_demo_is_local(demo: DemoIssuerSettings, public_url: str, listen_host: str) -> None:
    """The demo issuer signs anyone in as anyone, with any groups: only on this machine."""
    where = [(key, value) for key, value, local in (
        ("http.public_url", public_url, is_loopback_url(public_url)),
        ("http.listen", listen_host, is_loopback_host(listen_host)),
        ("demo_issuer.issuer", demo.issuer, is_loopback_url(demo.issuer))) if not local]
    if where:
        key, value = where[0]
        raise ConfigError(f"config: 'demo_issuer.enabled' is on but {key} {value!r} is not on this "
                          "machine, and the demo issuer lets anyone who reaches it sign in as "
                          "anyone (/.extauthz/demo/login?sub=root&groups=…); turn demo_issuer off, "
                          "or set demo_issuer.allow_non_local: true for a throwaway demo")


def _check_key_transport(issuer: str, jwks_uri: str | None, where: str) -> None:
    """Keys decide which tokens are genuine: whoever can change them in transit can forge
    any token. Plain http is for an issuer on this machine only."""
    if issuer.startswith("http://") and not is_loopback_url(issuer):
        raise ConfigError(f"config: '{where}.issuer' {issuer!r} is plain http on a host that is "
                          "not this machine (anyone on the path could swap its keys); use its "
                          f"https:// URL, or set {where}.insecure_http: true for a test network")
    if jwks_uri is not None and jwks_uri.startswith("http://"):
        if issuer.startswith("https://"):
            raise ConfigError(f"config: '{where}.jwks_uri' {jwks_uri!r} is plain http for an "
                              "https issuer (anyone on the path could swap its keys and forge any "
                              "token); use an https:// jwks_uri, or null to take it from discovery")
        if not is_loopback_url(jwks_uri):
            raise ConfigError(f"config: '{where}.jwks_uri' {jwks_uri!r} is plain http on a host "
                              "that is not this machine; use https://, or set "
                              f"{where}.insecure_http: true for a test network")


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
