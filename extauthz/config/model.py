"""The config file, declared once: every key with its type, default, limits and meaning.

This is the single source of the file's shape: validation (``CONFIG_FILE``), the environment
variable of each key (``env.py``) and ``extauthz schema config`` all follow it. Sections whose
keys the service uses as written (``token``, ``jwks``, ``store``, ``audit``, ``headers``, an
``issuers`` entry) are also the settings it reads; ``settings.py`` resolves the rest (listen
addresses parsed, ``stepup.rp_id`` taken from ``http.public_url`` …).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from extauthz.schema.declare import CLOSED, Bool, DocumentType, Float, Int, Section, Str

Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                    "ES256", "ES384", "ES512", "EdDSA", "Ed25519"]
DefaultAction = Literal["deny", "authenticated", "allow"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["json", "text"]
DEFAULT_ALGORITHMS: tuple[Algorithm, ...] = ("RS256", "ES256", "PS256", "EdDSA")
MAX_STEPUP_COOKIE_AGE = 30 * 86400  # the largest stepup.max_age_limit
NullableStr = Str | None


@dataclass(frozen=True)
class GrpcSection(Section):
    """The gRPC Check service."""

    __pydantic_config__ = CLOSED
    listen: Annotated[Str, Field(description="HOST:PORT, as --grpc-listen")] = "0.0.0.0:9001"


@dataclass(frozen=True)
class HttpSection(Section):
    """Health, step-up pages and the demo issuer."""

    __pydantic_config__ = CLOSED
    listen: Annotated[Str, Field(description="HOST:PORT, as --http-listen")] = "0.0.0.0:9002"
    public_url: Annotated[Str, Field(description="the URL users reach the gateway at")] = (
        "http://localhost:8000")
    header_timeout: Annotated[Float, Field(
        ge=0.1, le=600, description="seconds a client has to send a request's headers on a new or "
                                    "idle connection (and then its body)")] = 10.0
    max_connections: Annotated[Int, Field(
        ge=1, le=1_000_000, description="open HTTP connections per worker; more are answered 503")] = 1000


@dataclass(frozen=True)
class CheckHttpSection(Section):
    """Check over Envoy's plain-HTTP ext_authz protocol (``http_service``)."""

    __pydantic_config__ = CLOSED
    listen: Annotated[NullableStr, Field(
        description="HOST:PORT, as --check-http-listen; null: off")] = "0.0.0.0:9003"
    path_prefix: Annotated[Str, Field(
        pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description="the http_service path_prefix Envoy puts before the original path; "
                    "removed before matching ('' when Envoy sets none)")] = ""
    route_header: Annotated[NullableStr, Field(
        pattern=r"^x-[a-z0-9]+(-[a-z0-9]+)*$",
        description="a header the gateway always sets (overwriting any client copy) that binds "
                    "a route to a policy id, as context_extensions {policy: ID} does over gRPC; "
                    "null: HTTP mode matches by host, path and method only")] = None
    max_header_bytes: Annotated[Int, Field(
        ge=1024, le=1_048_576, description="request line and headers, in bytes; more: 431")] = 65536
    max_headers: Annotated[Int, Field(
        ge=8, le=10_000, description="header lines per request; more: 431")] = 200
    idle_timeout: Annotated[Float, Field(
        ge=0.1, le=3600, description="seconds an idle keep-alive connection stays open")] = 60.0
    header_timeout: Annotated[Float, Field(
        ge=0.1, le=600, description="seconds a started request has to arrive whole; a slower "
                                    "client is answered 408 and closed")] = 5.0
    max_connections: Annotated[Int, Field(
        ge=1, le=1_000_000, description="open check connections per worker; more are closed")] = 10000


@dataclass(frozen=True)
class AdminSection(Section):
    """Listeners only operators should reach."""

    __pydantic_config__ = CLOSED
    listen: Annotated[NullableStr, Field(
        description="HOST:PORT of /metrics and the /readyz details, as --admin-listen; null: off")] = (
        "127.0.0.1:9004")
    grpc_listen: Annotated[NullableStr, Field(
        description="HOST:PORT of gRPC server reflection and health, as --admin-grpc-listen; "
                    "null: off")] = None


@dataclass(frozen=True)
class IssuerSettings(Section):
    """A trusted token issuer."""

    __pydantic_config__ = CLOSED
    issuer: Annotated[Str, Field(description="the exact 'iss' of the tokens")]
    audiences: Annotated[tuple[Str, ...], Field(description="a token's 'aud' must contain one")]
    jwks_uri: Annotated[NullableStr, Field(description="null: taken from OIDC discovery")] = None
    algorithms: Annotated[tuple[Algorithm, ...], Field(
        description="accepted 'alg's; never none or HMAC")] = DEFAULT_ALGORITHMS
    ca_file: Annotated[NullableStr, Field(description="PEM bundle for a private CA")] = None
    username_claim: Annotated[Str, Field(description="as --oidc-username-claim")] = "sub"
    username_prefix: Annotated[Str, Field(description="as --oidc-username-prefix")] = ""
    groups_claim: Annotated[Str, Field(description="as --oidc-groups-claim")] = "groups"
    groups_prefix: Annotated[Str, Field(description="as --oidc-groups-prefix")] = ""
    insecure_http: Annotated[Bool, Field(
        description="allow http:// for a non-loopback issuer or jwks_uri (logged)")] = False


@dataclass(frozen=True)
class TokenSettings(Section):
    """Reading and verifying tokens."""

    __pydantic_config__ = CLOSED
    cookie: Annotated[NullableStr, Field(
        description="also read the token from this cookie (after Authorization: Bearer)")] = None
    leeway: Annotated[Int, Field(ge=0, le=600, description="seconds of clock skew")] = 30
    max_bytes: Annotated[Int, Field(ge=512, le=1 << 20,
                                    description="longer tokens are refused before parsing")] = 16384
    cache_size: Annotated[Int, Field(ge=0, le=10_000_000,
                                     description="verified tokens kept in memory; 0: none")] = 10000


@dataclass(frozen=True)
class JWKSSettings(Section):
    """Fetching issuers' signing keys."""

    __pydantic_config__ = CLOSED
    default_ttl: Annotated[Int, Field(
        ge=60, le=86400, description="seconds, when the IdP sends no Cache-Control max-age")] = 600
    fetch_timeout: Annotated[Float, Field(ge=0.1, le=60, description="seconds per fetch")] = 5.0
    unknown_kid_cooldown: Annotated[Float, Field(
        ge=0, le=3600, description="an unknown kid refetches at most this often (seconds)")] = 30.0


@dataclass(frozen=True)
class StoreSettings(Section):
    """Where policies, revocations and passkeys live."""

    __pydantic_config__ = CLOSED
    url: Annotated[NullableStr, Field(
        description="redis://…, rediss://…, unix://…, redis+sentinel://HOST:PORT[,HOST:PORT]/"
                    "SERVICE[/DB] or file:///path; null: no policies")] = None
    policies: Annotated[NullableStr, Field(
        description="a policy file or directory (a mounted ConfigMap) to read the policies "
                    "from instead of store.url, which keeps the revocations, passkeys and audit "
                    "stream; null: the policies are in store.url")] = None
    prefix: Annotated[Str, Field(description="prefix of every Redis key and channel")] = "extauthz:"
    poll_interval: Annotated[Float, Field(ge=0.05, le=60, description="seconds")] = 1.0
    timeout: Annotated[Float, Field(ge=0.1, le=60, description="seconds per Redis call")] = 2.0
    state_file: Annotated[Str, Field(
        description="passkeys, challenges and keys when the store is not Redis")] = (
        ".extauthz/state.json")
    snapshot_file: Annotated[NullableStr, Field(
        description="each worker's last good Redis snapshot (the local floor); null: next to "
                    "state_file")] = None
    require_safe_redis: Annotated[Bool, Field(
        description="refuse to start unless Redis is noeviction and persistent")] = False
    safety_check_interval: Annotated[Float, Field(ge=1, le=86400, description="seconds")] = 60.0


@dataclass(frozen=True)
class StepupSection(Section):
    """WebAuthn step-up."""

    __pydantic_config__ = CLOSED
    rp_id: Annotated[NullableStr, Field(description="null: the host of http.public_url")] = None
    rp_name: Annotated[Str, Field(description="the name authenticators show")] = "extauthz"
    origins: Annotated[tuple[Str, ...], Field(
        description="empty: the origin of http.public_url")] = ()
    cookie_name: Annotated[Str, Field(
        description="must start with __Host- or __Secure-")] = "__Host-extauthz-stepup"
    max_age_limit: Annotated[Int, Field(
        ge=60, le=MAX_STEPUP_COOKIE_AGE, description="seconds the step-up cookie lives")] = 43200
    signing_key_file: Annotated[NullableStr, Field(
        description="PEM EC P-256 key; null: generated, kept in the store")] = None
    challenge_ttl: Annotated[Int, Field(ge=30, le=3600, description="seconds")] = 300
    enrol_max_age: Annotated[Int, Field(
        ge=30, le=86400, description="adding or removing a passkey needs a step-up this recent")] = 300
    first_enrolment_max_age: Annotated[Int, Field(
        ge=30, le=3600, description="the first passkey needs an IdP sign-in (auth_time) this "
                                    "recent, or an operator's allow-enrolment")] = 300
    max_failures: Annotated[Int, Field(ge=1, le=1000,
                                       description="failed ceremonies before a pause")] = 5
    failure_window: Annotated[Int, Field(ge=10, le=86400,
                                         description="seconds of that pause")] = 900


@dataclass(frozen=True)
class AuditSettings(Section):
    """The audit trail: one record per decision."""

    __pydantic_config__ = CLOSED
    stdout: Annotated[Bool, Field(description="one JSON line per decision on stdout")] = True
    redis_stream: Annotated[Bool, Field(
        description="also XADD to <prefix>audit (Redis store)")] = False
    stream_maxlen: Annotated[Int, Field(ge=1000, le=100_000_000,
                                        description="entries the stream is trimmed to")] = 100_000
    flush_interval: Annotated[Float, Field(ge=0.01, le=10, description="seconds")] = 0.2
    redis_url: Annotated[NullableStr, Field(
        description="the stream's own Redis; null: the store's (shares its memory)")] = None


@dataclass(frozen=True)
class HeaderSettings(Section):
    """Identity headers for the upstream."""

    __pydantic_config__ = CLOSED
    prefix: Annotated[Str, Field(
        description="x-NAME-; every incoming header that starts with it is removed")] = "x-auth-"
    kubernetes_impersonation: Annotated[Bool, Field(
        description="also send Impersonate-User and Impersonate-Group")] = False
    forward_authorization: Annotated[Bool, Field(
        description="pass the client's Authorization header to the upstream")] = False


@dataclass(frozen=True)
class DemoIssuerSection(Section):
    """The built-in demo issuer: anyone signs in as anyone. Never in production."""

    __pydantic_config__ = CLOSED
    enabled: Bool = False
    issuer: Annotated[NullableStr, Field(description="null: http://localhost:<http port>")] = None
    audience: Str = "extauthz-demo"
    key_file: Str = ".extauthz/demo-issuer-key.pem"
    username_prefix: Annotated[Str, Field(description="as an issuer's username_prefix")] = "demo:"
    groups_prefix: Annotated[Str, Field(description="as an issuer's groups_prefix")] = "demo:"
    allow_non_local: Annotated[Bool, Field(
        description="run it although http.public_url, http.listen or its issuer is not on this "
                    "machine (anyone can sign in as anyone)")] = False


@dataclass(frozen=True)
class NatsSection(Section):
    """The NATS auth callout (README, NATS): NATS asks extauthz who may connect."""

    __pydantic_config__ = CLOSED
    url: Annotated[NullableStr, Field(
        description="nats://HOST:PORT (comma-separated for a cluster); null: the callout is off")] = None
    user: Annotated[NullableStr, Field(
        description="the callout's own user, one of auth_callout.auth_users")] = None
    password: Annotated[NullableStr, Field(description="that user's password")] = None
    token: Annotated[NullableStr, Field(
        description="or: a token the server accepts for the callout's own connection")] = None
    creds_file: Annotated[NullableStr, Field(
        description="or: a .creds file (user JWT and seed) for the callout's connection")] = None
    nkey_seed_file: Annotated[NullableStr, Field(
        description="or: a user nkey seed (SU…) file for the callout's connection")] = None
    issuer_seed_file: Annotated[NullableStr, Field(
        description="the account nkey seed (SA…) whose public key is auth_callout.issuer; "
                    "it signs the answers")] = None
    xkey_seed_file: Annotated[NullableStr, Field(
        description="the curve seed (SX…) whose public key is auth_callout.xkey; null: "
                    "requests are not sealed")] = None
    account: Annotated[NullableStr, Field(
        description="the account users are placed in (config mode), unless a policy names one")] = None
    system_user: Annotated[NullableStr, Field(
        description="optional: a system-account user, to disconnect live connections of a "
                    "revoked subject or token (the kick API)")] = None
    system_password: Annotated[NullableStr, Field(description="that user's password")] = None
    system_creds_file: Annotated[NullableStr, Field(
        description="or: a system-account .creds file for the kick API")] = None
    server_keys: Annotated[tuple[Str, ...] | None, Field(
        description="the public nkeys (N…) of the servers whose authorization requests are "
                    "answered; requests signed by another key are refused; empty or null: "
                    "any server's")] = None
    queue_group: Annotated[Str, Field(
        description="workers and replicas in one group share the requests")] = "extauthz"
    connect_timeout: Annotated[Float, Field(ge=0.1, le=60, description="seconds")] = 2.0
    reconnect_max_wait: Annotated[Float, Field(
        ge=0.1, le=300, description="seconds: the longest pause between reconnect attempts "
                                    "(the backoff doubles up to it)")] = 5.0


@dataclass(frozen=True)
class ConfigFile(Section):
    """The extauthz configuration file."""

    __pydantic_config__ = CLOSED
    grpc: GrpcSection = GrpcSection()
    http: HttpSection = HttpSection()
    check_http: CheckHttpSection = CheckHttpSection()
    admin: AdminSection = AdminSection()
    workers: Annotated[Int, Field(ge=1, le=256,
                                  description="processes sharing the ports, as --workers")] = 1
    shutdown_grace: Annotated[Float, Field(
        ge=0, le=600, description="seconds in-flight checks get to finish on SIGTERM")] = 10.0
    issuers: Annotated[tuple[IssuerSettings, ...], Field(
        description="trusted token issuers")] = ()
    token: TokenSettings = TokenSettings()
    jwks: JWKSSettings = JWKSSettings()
    store: StoreSettings = StoreSettings()
    stepup: StepupSection = StepupSection()
    audit: AuditSettings = AuditSettings()
    default_action: Annotated[DefaultAction, Field(
        description="when no policy applies: deny, authenticated (a valid token) or allow")] = "deny"
    login_url: Annotated[NullableStr, Field(
        description="where browsers without a token are sent: a URL or a path; {rd} is the "
                    "original path")] = None
    realm: Annotated[Str, Field(description="realm of WWW-Authenticate: Bearer")] = "extauthz"
    headers: HeaderSettings = HeaderSettings()
    demo_issuer: DemoIssuerSection = DemoIssuerSection()
    nats: NatsSection = NatsSection()
    log_level: LogLevel = "info"
    log_format: Annotated[LogFormat | None, Field(
        description="json: one JSON object per log line; text: for a person; "
                    "null: text when stderr is a terminal, json otherwise")] = None


CONFIG_FILE = DocumentType(
    ConfigFile, title="extauthz config",
    description="The extauthz configuration file (extauthz serve --config FILE).")
