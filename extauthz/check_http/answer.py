"""Decision -> the HTTP/1.1 answer Envoy's ``http_service`` reads.

Allow: ``200`` with the identity and policy headers (Envoy copies those its
``allowed_upstream_headers`` name onto the upstream request), the decision id, and
``x-envoy-auth-headers-to-remove`` naming the client headers to strip: those the request
showed, and every spoofable name the answer does not set, seen or not. Deny: the decision's
status, challenge/redirect headers and body, exactly what the gRPC transport puts in its
``DeniedHttpResponse``.

What repeats from check to check (a user's identity headers, a denial) is rendered once and
kept (bounded); per check only the decision id and the names to remove are written.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from extauthz.cache import BoundedCache
from extauthz.decision import Decision, Headers

REMOVE_HEADER = b"x-envoy-auth-headers-to-remove: "
_MEMO_LIMIT = 4096
_MEMO_BYTES = 2048
_FORBIDDEN = frozenset("\r\n\0")


def _line(name: str, value: str) -> bytes:
    if _FORBIDDEN.intersection(name) or _FORBIDDEN.intersection(value) or not name:
        raise ValueError(f"header {name!r} cannot be sent on one line")  # fail closed: a 503
    return f"{name}: {value}\r\n".encode()


def _lines(headers: Headers) -> bytes:
    return b"".join(_line(name, value) for name, value in headers)


def status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


_OK = status_line(200) + b"content-length: 0\r\n"
_CLOSE = b"connection: close\r\n"


class AnswerEncoder:
    """Decisions to HTTP/1.1 answers; ``encode`` gives the bytes to write."""

    def __init__(self, *, decision_id_header: str,
                 spoofable: Callable[[], frozenset[str]] = frozenset) -> None:
        self._id = f"{decision_id_header}: ".encode()
        self._spoofable = spoofable
        self._ok: BoundedCache[tuple[Headers, frozenset[str]], tuple[bytes, tuple[str, ...]]] = (
            BoundedCache(_MEMO_LIMIT))
        self._denied: BoundedCache[tuple[object, ...], tuple[bytes, bytes]] = BoundedCache(_MEMO_LIMIT)

    def encode(self, decision: Decision, *, head: bool = False, close: bool = False) -> bytes:
        """The answer; ``head``: to a HEAD check request (no body); ``close``: the connection
        ends after it."""
        tail = _CLOSE + b"\r\n" if close else b"\r\n"
        if decision.allowed:
            ok_key = (decision.upstream_headers, self._spoofable())
            kept = self._ok.get(ok_key)
            if kept is None:
                kept = self._keep_ok(ok_key)
            lines, unset = kept
            ident = self._id + decision.decision_id.encode() + b"\r\n"
            removed = (dict.fromkeys((*decision.remove_headers, *unset)) if decision.remove_headers
                       else unset)
            if removed:
                return (_OK + lines + ident + REMOVE_HEADER + ",".join(removed).encode()
                        + b"\r\n" + tail)
            return _OK + lines + ident + tail
        key = (decision.status, decision.response_headers, decision.body)
        denied = self._denied.get(key)
        if denied is None:
            denied = self._keep_denied(key, decision)
        head_part, body = denied
        return head_part + tail if head else head_part + tail + body

    def _keep_ok(self, key: tuple[Headers, frozenset[str]]) -> tuple[bytes, tuple[str, ...]]:
        """The answer's header lines, and the spoofable names it does not set: the gateway may
        not have forwarded a client's copy of one, so it is named for removal regardless
        (Envoy removes after setting, so a name the answer sets must never be named)."""
        headers, spoofable = key
        lines = _lines(headers)
        set_here = {name for name, _ in headers}
        kept = (lines, tuple(sorted(spoofable - set_here)))
        return kept if len(lines) > _MEMO_BYTES else self._ok.put(key, kept)

    def _keep_denied(self, key: tuple[object, ...], decision: Decision) -> tuple[bytes, bytes]:
        if decision.status < 300:  # Envoy reads any 2xx as an allow: never for a denial
            raise ValueError(f"a denial with status {decision.status}")
        body = decision.body.encode()
        head_part = (status_line(decision.status) + _lines(decision.response_headers)
                     + f"content-length: {len(body)}\r\n".encode())
        rendered = (head_part, body)
        if len(head_part) + len(body) > _MEMO_BYTES:  # a long redirect URL: not worth keeping
            return rendered
        return self._denied.put(key, rendered)
