"""Decision -> Envoy CheckResponse: one builder for allow, one for deny, one status table.

``ResponseEncoder`` is the hot path's way in: what repeats from check to check (a
user's identity headers, a denial's body) is serialized once and kept; only the
decision id is encoded per check, by hand, and appended to the kept bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from google.rpc import status_pb2

from extauthz.cache import BoundedCache
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


def build_response(decision: Decision, decision_id_header: str | None = None) -> Any:
    """The CheckResponse for a decision; an allow also names its decision id to the upstream
    in ``decision_id_header`` when one is given."""
    if decision.allowed:
        added = decision.upstream_headers
        if decision_id_header:
            added = (*added, (decision_id_header, decision.decision_id))
        return ext.CheckResponse(
            status=status_pb2.Status(code=OK),
            ok_response=ext.OkHttpResponse(
                headers=_header_options(added),
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


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


# CheckResponse fields 1 (status: code 0) and 3 (ok_response); OkHttpResponse fields 2 (headers)
# and 5 (headers_to_remove);
# HeaderValueOption fields 1 (header: HeaderValue key 1, value 2) and 3 (append_action, varint).
_STATUS_OK = _field(1, b"")
_OVERWRITE_ACTION = _varint(3 << 3) + _varint(_OVERWRITE)
# Entries per memo, each value at most _MEMO_BYTES (its key is about as large): ~8 MB at
# worst per memo and worker. Keys come from verified identities and policies (allows) or
# from our own denial texts; client-chosen header names are encoded per check instead.
_MEMO_LIMIT = 4096
_MEMO_BYTES = 1024


class ResponseEncoder:
    """Decisions to serialized CheckResponses, equal on the wire to ``build_response``'s."""

    def __init__(self, *, decision_id_header: str) -> None:
        self._id_key = _field(1, decision_id_header.encode())
        self._ok: BoundedCache[tuple[object, ...], bytes] = BoundedCache(_MEMO_LIMIT)
        self._denied: BoundedCache[tuple[object, ...], bytes] = BoundedCache(_MEMO_LIMIT)

    def encode(self, decision: Decision) -> bytes:
        if decision.allowed:
            key: tuple[object, ...] = (decision.upstream_headers,)
            ok = self._ok.get(key)
            if ok is None:
                headers_only = decision._replace(remove_headers=())
                ok = self._keep(self._ok, key, build_response(headers_only).ok_response.SerializeToString())
            option = _field(1, self._id_key + _field(2, decision.decision_id.encode())) + _OVERWRITE_ACTION
            removed = b"".join(_field(5, name.encode()) for name in decision.remove_headers)
            return _STATUS_OK + _field(3, ok + _field(2, option) + removed)
        key = (decision.status, decision.reason, decision.response_headers, decision.body)
        denied = self._denied.get(key)
        if denied is None:
            denied = self._keep(self._denied, key, build_response(decision).SerializeToString())
        return denied

    @staticmethod
    def _keep(memo: BoundedCache[tuple[object, ...], bytes], key: tuple[object, ...],
              value: bytes) -> bytes:
        if len(value) > _MEMO_BYTES:  # a long redirect URL, say: not worth keeping
            return value
        return memo.put(key, value)  # bounded: many distinct users start it over
