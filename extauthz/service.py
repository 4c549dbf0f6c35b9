"""The gRPC ``envoy.service.auth.v3.Authorization/Check`` adapter: thin, and never raises.

bytes -> CheckRequest -> RequestView -> Authorizer -> Decision -> CheckResponse -> bytes.
The method is registered on raw bytes so that even an undecodable request gets an
explicit deny rather than a gRPC error. Any error that escapes the pipeline is a bug;
it becomes an explicit 503 deny, never an allow.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from extauthz import decision as d
from extauthz.audit import AuditLog, safe_path
from extauthz.authorize import Authorizer, DecisionIds
from extauthz.decision import Reason
from extauthz.errors import BadRequest
from extauthz.pb.envoy.service.auth.v3 import external_auth_pb2 as ext
from extauthz.request import view_from_check_request
from extauthz.response import ResponseEncoder, build_response
from extauthz.telemetry import tracing
from extauthz.telemetry.metrics import Metrics

log = logging.getLogger("extauthz.service")

SERVICE_NAME = ext.DESCRIPTOR.services_by_name["Authorization"].full_name

INTERNAL = d.unavailable("internal", reason=Reason.INTERNAL_ERROR,
                         description="the authorization service failed; the request is denied")
INTERNAL_ERROR: bytes = build_response(INTERNAL).SerializeToString()
UNDECODABLE = d.unavailable("bad-request", reason=Reason.BAD_CHECK_REQUEST,
                            description="the check request could not be decoded; the request is denied")
BAD_REQUEST: bytes = build_response(UNDECODABLE).SerializeToString()


def _span_attributes(decision: d.Decision, view: Any) -> dict[str, str | bool | int]:
    """What a trace may say about a check: never a token, a cookie or a query string."""
    attrs: dict[str, str | bool | int] = {
        "extauthz.decision": "allow" if decision.allowed else "deny",
        "extauthz.reason": str(decision.reason), "extauthz.status": decision.status,
        "http.request.method": view.method, "server.address": view.host,
        "url.path": safe_path(view.path), "extauthz.dry_run": decision.dry_run,
    }
    if decision.policy_id:
        attrs["extauthz.policy_id"] = decision.policy_id
    if decision.identity is not None:
        attrs["extauthz.issuer"] = decision.identity.issuer
    return attrs


class AuthorizationService:
    def __init__(self, authorizer: Authorizer, audit: AuditLog | None = None,
                 metrics: Metrics | None = None) -> None:
        self._authorizer = authorizer
        self._encoder = ResponseEncoder(authorizer.decision_id_header)
        self._audit = audit
        self._metrics = metrics
        self._ids = DecisionIds()

    async def check(self, data: bytes, context: Any) -> bytes:
        started = time.perf_counter()
        try:
            request = ext.CheckRequest.FromString(data)
        except DecodeError:
            log.warning("undecodable CheckRequest (%d bytes); answering 503 deny", len(data))
            self._record(UNDECODABLE, None, started)
            return BAD_REQUEST
        view = None
        try:
            view = view_from_check_request(request)
            if tracing.active():
                with tracing.check_span(view.headers) as span:
                    decision = await self._authorizer.check(view)
                    span.set_attributes(_span_attributes(decision, view))
            else:
                decision = await self._authorizer.check(view)
            answer = self._encoder.encode(decision)
        except BadRequest as e:  # an ambiguous path or authority: refused, audited, never guessed
            log.warning("bad request refused: %s", e.message)
            decision = d.bad_request(self._ids.next(), description=e.message)
            self._record(decision, view, started)
            return self._encoder.encode(decision)
        except Exception:  # fail closed: a bug is a logged 503 deny, never an allow
            log.exception("check failed; answering 503 deny")
            self._record(INTERNAL, view, started)
            return INTERNAL_ERROR
        self._record(decision, view, started)
        return answer

    def _record(self, decision: d.Decision, view: Any, started: float = 0.0) -> None:
        if self._audit is not None:
            self._audit.record(decision, view)
        if self._metrics is not None:
            self._metrics.checked(decision.allowed, decision.reason,
                                  time.perf_counter() - started if started else 0.0)

    def add_to_server(self, server: Any) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Check": grpc.unary_unary_rpc_method_handler(self.check),
        }),))
