"""An Envoy plain-HTTP check request (request line and headers, as llhttp parsed them) turned,
once, into the same ``RequestView`` the gRPC transport builds.

Envoy's ``http_service`` sends the original method, ``path_prefix`` + the original path and
query, the original authority as ``Host``, and the headers its ``allowed_headers`` let
through. Parsed strictly: a target outside the prefix, a second ``Host`` or route header,
an ambiguous path or authority raise ``BadRequest`` (a 400 deny, audited), never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from extauthz.errors import BadRequest
from extauthz.policy.match import CONTEXT_KEY
from extauthz.request import RequestView, split_host, split_target

_EMPTY: Mapping[str, str] = MappingProxyType({})
# The check request's own framing, not the original request's: never part of the view.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade",
    "content-length", "trailer",
})
# Names whose value must be one line: joining two would make a new, different value.
SINGLE = frozenset({"host", "authorization"})


class BadTarget(BadRequest):
    """The check request's target is not ``path_prefix`` + an origin-form path."""


class RequestViewBuilder:
    """Per listener: the prefix to strip and the header that binds a route, if any."""

    def __init__(self, *, path_prefix: str, route_header: str | None) -> None:
        self._prefix = path_prefix
        self._route_header = route_header

    def build(self, method: str, target: str, raw: list[tuple[str, str]]) -> RequestView:
        """The view of one check request; ``raw`` holds the header lines as received (names
        already lower-case)."""
        headers: dict[str, str] = {}
        for name, value in raw:
            if name in HOP_BY_HOP:
                continue
            if name in headers:
                if name in SINGLE or name == self._route_header:
                    raise BadRequest(f"the request carries {name!r} twice")
                headers[name] = f"{headers[name]},{value}"
            else:
                headers[name] = value
        if self._prefix:
            if not target.startswith(self._prefix) or target[len(self._prefix):][:1] != "/":
                raise BadTarget(f"the check request's path is not under check_http.path_prefix "
                                f"{self._prefix!r}")
            target = target[len(self._prefix):]
        path, query = split_target(target)
        context = _EMPTY
        if self._route_header is not None:
            bound = headers.get(self._route_header)
            if bound is not None:
                context = MappingProxyType({CONTEXT_KEY: bound})
        forwarded = headers.get("x-forwarded-for", "")
        scheme = headers.get("x-forwarded-proto", "http")
        return RequestView(
            method=method,
            scheme=scheme if scheme in ("http", "https") else "http",  # a client may send it
            host=split_host(headers.get("host", "")),
            path=path,
            query=query,
            headers=headers,
            context_extensions=context,
            source_address=forwarded.rpartition(",")[2].strip(),
            request_id=headers.get("x-request-id", ""),
        )
