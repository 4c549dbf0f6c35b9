"""The gRPC ``envoy.service.auth.v3.Authorization/Check`` adapter: thin, and never raises.

bytes -> CheckRequest -> RequestView -> Authorizer -> Decision -> CheckResponse -> bytes.
The method is registered on raw bytes so that even an undecodable request gets an
explicit deny rather than a gRPC error. Any error that escapes the pipeline is a bug;
it becomes an explicit 503 deny, never an allow.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError

from extauthz import decision as d
from extauthz.audit import AuditLog
from extauthz.authorize import Authorizer
from extauthz.decision import Reason
from extauthz.pb.envoy.service.auth.v3 import external_auth_pb2 as ext
from extauthz.request import view_from_check_request
from extauthz.response import build_response

log = logging.getLogger("extauthz.service")

SERVICE_NAME = ext.DESCRIPTOR.services_by_name["Authorization"].full_name

INTERNAL = d.unavailable("internal", reason=Reason.INTERNAL_ERROR,
                         description="the authorization service failed; the request is denied")
INTERNAL_ERROR: bytes = build_response(INTERNAL).SerializeToString()
UNDECODABLE = d.unavailable("bad-request", reason=Reason.BAD_CHECK_REQUEST,
                            description="the check request could not be decoded; the request is denied")
BAD_REQUEST: bytes = build_response(UNDECODABLE).SerializeToString()


class AuthorizationService:
    def __init__(self, authorizer: Authorizer, audit: AuditLog | None = None) -> None:
        self._authorizer = authorizer
        self._audit = audit

    async def check(self, data: bytes, context: Any) -> bytes:
        try:
            request = ext.CheckRequest.FromString(data)
        except DecodeError:
            log.warning("undecodable CheckRequest (%d bytes); answering 503 deny", len(data))
            self._record(UNDECODABLE, None)
            return BAD_REQUEST
        view = None
        try:
            view = view_from_check_request(request)
            decision = await self._authorizer.check(view)
            answer = cast(bytes, build_response(decision).SerializeToString())
        except Exception:  # fail closed: a bug is a logged 503 deny, never an allow
            log.exception("check failed; answering 503 deny")
            self._record(INTERNAL, view)
            return INTERNAL_ERROR
        self._record(decision, view)
        return answer

    def _record(self, decision: d.Decision, view: Any) -> None:
        if self._audit is not None:
            self._audit.record(decision, view)

    def add_to_server(self, server: Any) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Check": grpc.unary_unary_rpc_method_handler(self.check),
        }),))
