"""Decision -> Envoy CheckResponse: one builder for allow, one for deny, one status table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from google.rpc import status_pb2

from extauthz.decision import Decision
from extauthz.pb.envoy.config.core.v3 import base_pb2
from extauthz.pb.envoy.service.auth.v3 import external_auth_pb2 as ext
from extauthz.pb.envoy.type.v3 import http_status_pb2

# gRPC status code Envoy receives for each HTTP status we answer with.
OK, PERMISSION_DENIED, UNAVAILABLE, UNAUTHENTICATED, INVALID_ARGUMENT = 0, 7, 14, 16, 3
GRPC_CODE_FOR_HTTP = {
    200: OK, 302: UNAUTHENTICATED, 400: INVALID_ARGUMENT, 401: UNAUTHENTICATED,
    403: PERMISSION_DENIED, 503: UNAVAILABLE,
}

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def _header_options(headers: Iterable[tuple[str, str]]) -> list[Any]:
    """First value of a name overwrites whatever the client sent; later values append."""
    seen: set[str] = set()
    out = []
    for key, value in headers:
        action = _APPEND if key in seen else _OVERWRITE
        seen.add(key)
        out.append(base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=key, value=value), append_action=action))
    return out


def build_response(decision: Decision) -> Any:
    if decision.allowed:
        return ext.CheckResponse(
            status=status_pb2.Status(code=OK),
            ok_response=ext.OkHttpResponse(
                headers=_header_options(decision.upstream_headers),
                headers_to_remove=list(decision.remove_headers),
            ),
        )
    return ext.CheckResponse(
        status=status_pb2.Status(
            code=GRPC_CODE_FOR_HTTP.get(decision.status, PERMISSION_DENIED),
            message=decision.reason,
        ),
        denied_response=ext.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=cast(Any, decision.status)),
            headers=_header_options(decision.response_headers),
            body=decision.body,
        ),
    )
