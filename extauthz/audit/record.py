"""One audit record: the decision's who, what, when and under which policy, as one JSON line.

Records carry no headers and no query strings: tokens, cookies and other secrets never enter
them (``safe_path`` is the one place paths are cut).
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import orjson

from extauthz.clock import iso_utc
from extauthz.decision import Decision
from extauthz.request import RequestView

_PATH_PARAMETER = re.compile(r";[^/]*")

FIELDS = ("time", "decision_id", "decision", "status", "reason", "policy", "dry_run",
          "would_deny", "subject", "username", "issuer", "client_id", "acr", "stepup_auth_time",
          "method", "host", "path", "source", "request_id", "transport")


def safe_path(path: str) -> str:
    """The path without query, fragment or ``;`` path parameters (``;jsessionid=…`` is a
    session credential; any of them may carry tokens or personal data)."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    return _PATH_PARAMETER.sub("", path) if ";" in path else path


def audit_record(decision: Decision, view: RequestView | None, now: float) -> dict[str, Any]:
    return _record(decision, view, iso_utc(now))


def _record(decision: Decision, view: RequestView | None, time: str) -> dict[str, Any]:
    ident = decision.identity
    return {
        "time": time,
        "decision_id": decision.decision_id,
        "decision": "allow" if decision.allowed else "deny",
        "status": decision.status,
        "reason": str(decision.reason),
        "policy": decision.policy_id,
        "dry_run": decision.dry_run,
        "would_deny": decision.would_deny,
        "subject": ident.subject if ident else None,
        "username": ident.username if ident else None,
        "issuer": ident.issuer if ident else None,
        "client_id": ident.client_id if ident else None,
        "acr": ident.acr if ident else None,
        "stepup_auth_time": ident.auth_time if ident and ident.acr else None,
        "method": view.method if view else None,
        "host": view.host if view else None,
        "path": safe_path(view.path) if view else None,
        "source": view.source_address if view else None,
        "request_id": view.request_id if view else None,
        # nats: the NATS auth callout (host: the server's id, source: the client's host,
        # request_id: <server name>/<client id>); envoy: a Check over gRPC or HTTP
        "transport": "nats" if view is not None and view.scheme == "nats" else "envoy",
    }


class LineFormat:
    """``json.dumps(audit_record(...), separators=(",", ":"))``, byte for byte, written by
    orjson (as fast as the hand-built format it replaced, ~1.7 µs a line, against ~5.5 µs
    for json.dumps). Lines stay printable ASCII as json.dumps writes them: orjson writes
    other characters raw, and a reader that splits lines at U+2028 or NEL (Python's
    ``splitlines`` does) must never see a client's value break one, so such a rare line
    is written by json.dumps instead. The timestamp's second is formatted once a second."""

    def __init__(self) -> None:
        self._stamp: tuple[int, str] = (-1, "")  # one tuple: a second and its text, never mixed

    def _time(self, now: float) -> str:
        second = int(now)
        micros = round((now - second) * 1_000_000)  # as datetime.fromtimestamp rounds
        if micros >= 1_000_000:
            second, micros = second + 1, 0
        stamp = self._stamp
        if stamp[0] != second:
            text = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            stamp = (second, text)
            self._stamp = stamp
        return f"{stamp[1]}.{micros // 1000:03d}Z"

    def line(self, decision: Decision, view: RequestView | None, now: float) -> str:
        record = _record(decision, view, self._time(now))
        try:
            line = orjson.dumps(record).decode()
        except orjson.JSONEncodeError:  # an integer beyond 64 bits
            return json.dumps(record, separators=(",", ":"))
        if line.isascii() and "\x7f" not in line:
            return line
        return json.dumps(record, separators=(",", ":"))
