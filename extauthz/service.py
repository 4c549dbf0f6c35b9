"""The gRPC ``envoy.service.auth.v3.Authorization/Check`` adapter: thin, and never raises.

bytes -> CheckRequest -> RequestView -> the engine's Authorizer -> Decision -> CheckResponse
-> bytes. The method is registered on raw bytes so that even an undecodable request gets an
explicit deny rather than a gRPC error. Any error that escapes the pipeline is a bug;
it becomes an explicit 503 deny, never an allow.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import grpc
from google.protobuf.message import DecodeError

from extauthz import denials
from extauthz.audit.record import safe_path
from extauthz.authorize import DecisionIds
from extauthz.decision import Decision, Reason
from extauthz.errors import BadRequest
from extauthz.pb.envoy.service.auth.v3 import external_auth_pb2 as ext
from extauthz.request import RequestView, view_from_check_request
from extauthz.response import ResponseEncoder, build_response
from extauthz.telemetry import tracing

log = logging.getLogger("extauthz.service")

SERVICE_NAME = ext.DESCRIPTOR.services_by_name["Authorization"].full_name

INTERNAL = denials.unavailable("internal", reason=Reason.INTERNAL_ERROR,
                               description="the authorization service failed; the request is denied")
INTERNAL_ERROR: bytes = build_response(INTERNAL).SerializeToString()
UNDECODABLE = denials.unavailable(
    "bad-request", reason=Reason.BAD_CHECK_REQUEST,
    description="the check request could not be decoded; the request is denied")
BAD_REQUEST: bytes = build_response(UNDECODABLE).SerializeToString()


class Decider(Protocol):
    """What decides (the engine's ``Authorizer``)."""

    @property
    def decision_id_header(self) -> str: ...

    async def check(self, view: RequestView) -> Decision: ...


class DecisionLog(Protocol):
    """Where each decision is recorded (the engine's ``AuditLog``); O(1), no I/O."""

    def record(self, decision: Decision, view: RequestView | None) -> None: ...


class CheckCounter(Protocol):
    """Per-check counters (the engine's ``Metrics``); plain integers on the hot path."""

    def checked(self, allowed: bool, reason: str, seconds: float) -> None: ...


class HandlerServer(Protocol):
    """A ``grpc.aio.Server``, as far as registering a generic handler goes."""

    def add_generic_rpc_handlers(self, handlers: tuple[object, ...]) -> None: ...


def _span_attributes(decision: Decision, view: RequestView) -> dict[str, str | bool | int]:
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
    def __init__(self, *, authorizer: Decider, audit: DecisionLog | None = None,
                 metrics: CheckCounter | None = None) -> None:
        self._authorizer = authorizer
        self._encoder = ResponseEncoder(decision_id_header=authorizer.decision_id_header)
        self._audit = audit
        self._metrics = metrics
        self._ids = DecisionIds()

    async def check(self, data: bytes, context: object) -> bytes:
        started = time.perf_counter()
        try:
            request = ext.CheckRequest.FromString(data)
        except DecodeError:
            log.warning("undecodable CheckRequest (%d bytes); answering 503 deny", len(data))
            self._record(UNDECODABLE, None, started)
            return BAD_REQUEST
        view: RequestView | None = None
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
            decision = denials.bad_request(self._ids.next(), description=e.message)
            self._record(decision, view, started)
            return self._encoder.encode(decision)
        except Exception:  # fail closed: a bug is a logged 503 deny, never an allow
            log.exception("check failed; answering 503 deny")
            self._record(INTERNAL, view, started)
            return INTERNAL_ERROR
        self._record(decision, view, started)
        return answer

    def _record(self, decision: Decision, view: RequestView | None, started: float = 0.0) -> None:
        if self._audit is not None:
            self._audit.record(decision, view)
        if self._metrics is not None:
            self._metrics.checked(decision.allowed, decision.reason,
                                  time.perf_counter() - started if started else 0.0)

    def add_to_server(self, server: HandlerServer) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Check": grpc.unary_unary_rpc_method_handler(self.check),
        }),))
