"""One check, whatever the transport: request view -> the engine's decision, audited and
counted, failing closed.

Both Check transports (gRPC ``service.py``, plain HTTP ``check_http/``) hand this a way to
build the request view from their own wire form and a way to render a decision in it; what
happens between is the same for both, so they can never disagree: an ambiguous request
(``BadRequest``) is a 400 deny, any other error a logged 503 deny, never an allow; every
answer is audited and counted once, as it was answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from extauthz import denials
from extauthz.audit.record import safe_path
from extauthz.authorize import DecisionIds
from extauthz.decision import Decision, Reason
from extauthz.errors import BadRequest
from extauthz.request import RequestView
from extauthz.telemetry import tracing

log = logging.getLogger("extauthz.pipeline")
T = TypeVar("T")

INTERNAL = denials.unavailable("internal", reason=Reason.INTERNAL_ERROR,
                               description="the authorization service failed; the request is denied")
UNDECODABLE = denials.unavailable(
    "bad-request", reason=Reason.BAD_CHECK_REQUEST,
    description="the check request could not be decoded; the request is denied")


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


class CheckPipeline:
    """The transport-neutral part of a Check."""

    def __init__(self, *, authorizer: Decider, audit: DecisionLog | None = None,
                 metrics: CheckCounter | None = None) -> None:
        self._authorizer = authorizer
        self._audit = audit
        self._metrics = metrics
        self._ids = DecisionIds()

    @property
    def decision_id_header(self) -> str:
        return self._authorizer.decision_id_header

    async def answer(self, build_view: Callable[[], RequestView],
                     render: Callable[[Decision], T], fallback: T, started: float) -> T:
        """The decision for the request ``build_view`` reads (it may raise ``BadRequest``) in
        the transport's form (``render``), recorded as answered. Never raises: a failure is
        ``fallback``, the transport's rendering of ``INTERNAL``, made ahead of time."""
        view: RequestView | None = None
        try:
            view = build_view()
            if tracing.active():
                with tracing.check_span(view.headers) as span:
                    decision = await self._authorizer.check(view)
                    span.set_attributes(_span_attributes(decision, view))
            else:
                decision = await self._authorizer.check(view)
            answer = render(decision)
        except BadRequest as e:  # an ambiguous path or authority: refused, audited, never guessed
            log.warning("bad request refused: %s", e.message)
            decision = denials.bad_request(self._ids.next(), description=e.message)
            try:
                answer = render(decision)
            except Exception:
                log.exception("check failed; answering 503 deny")
                decision, answer = INTERNAL, fallback
        except Exception:  # fail closed: a bug is a logged 503 deny, never an allow
            log.exception("check failed; answering 503 deny")
            decision, answer = INTERNAL, fallback
        self.record(decision, view, started)
        return answer

    def record(self, decision: Decision, view: RequestView | None, started: float = 0.0) -> None:
        """Audit and count one answer."""
        if self._audit is not None:
            self._audit.record(decision, view)
        if self._metrics is not None:
            self._metrics.checked(decision.allowed, decision.reason,
                                  time.perf_counter() - started if started else 0.0)
