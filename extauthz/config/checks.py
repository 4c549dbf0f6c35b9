"""What a schema cannot say about the config: addresses, URLs, and the rules that keep a
setting from opening a hole (a header prefix that strips others' headers, unprefixed
impersonated names, keys over plain http, the demo issuer beyond this machine)."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from extauthz.errors import ConfigError

# Names the kube-apiserver reserves (system:masters is cluster-admin whatever RBAC says):
# never impersonated, and no issuer's prefix may produce one.
KUBERNETES_RESERVED = "system:"


def parse_listen(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"config: '{key}' is {value!r}; write HOST:PORT, e.g. 0.0.0.0:9001")
    return host.strip("[]"), int(port)


def check_url(value: str, key: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"config: '{key}' is {value!r}; write an absolute http(s):// URL")
    return value


def admin_listen(value: str | None, key: str,
                 public: tuple[tuple[str, int], ...]) -> tuple[str, int] | None:
    """An admin address, never one of the public ports (whoever reaches those must not get
    the metrics or the readiness details)."""
    if value is None:
        return None
    listen = parse_listen(value, key)
    if any(listen[1] == port for _, port in public):
        raise ConfigError(f"config: '{key}' {value!r} uses the port of another listener (grpc, "
                          "check_http, http or admin); give it its own port, or null")
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


def header_prefix(value: str) -> str:
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


def check_impersonation_prefix(prefix: str, key: str) -> None:
    """With Impersonate-User/-Group, a token's names become Kubernetes users and groups: an
    unprefixed ``groups: [system:masters]`` would be cluster-admin."""
    if not prefix:
        raise ConfigError(f"config: '{key}' is empty, but headers.kubernetes_impersonation is on "
                          "(a token's system:masters group would become cluster-admin); set a "
                          "prefix such as \"idp:\", as kube-apiserver's --oidc-*-prefix flags do")
    if prefix.startswith(KUBERNETES_RESERVED) or KUBERNETES_RESERVED.startswith(prefix):
        raise ConfigError(f"config: '{key}' is {prefix!r}, which can make names in the "
                          "apiserver's reserved system: namespace; choose another, e.g. \"idp:\"")


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


def check_demo_is_local(issuer: str, public_url: str, listen_host: str) -> None:
    """The demo issuer signs anyone in as anyone, with any groups: only on this machine."""
    where = [(key, value) for key, value, local in (
        ("http.public_url", public_url, is_loopback_url(public_url)),
        ("http.listen", listen_host, is_loopback_host(listen_host)),
        ("demo_issuer.issuer", issuer, is_loopback_url(issuer))) if not local]
    if where:
        key, value = where[0]
        raise ConfigError(f"config: 'demo_issuer.enabled' is on but {key} {value!r} is not on this "
                          "machine, and the demo issuer lets anyone who reaches it sign in as "
                          "anyone (/.extauthz/demo/login?sub=root&groups=…); turn demo_issuer off, "
                          "or set demo_issuer.allow_non_local: true for a throwaway demo")


def check_key_transport(issuer: str, jwks_uri: str | None, where: str) -> None:
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
