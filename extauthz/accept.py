"""Is this request a browser navigation: does its ``Accept`` header prefer HTML?

Browsers navigate with ``GET``/``HEAD`` and an ``Accept`` that names ``text/html`` first
(Chromium: ``text/html,application/xhtml+xml,…,*/*;q=0.8``). API clients send
``application/json``, ``*/*`` or nothing. The header is read with its q-values (RFC 9110
§12.5.1): a request prefers HTML when ``text/html`` (or ``application/xhtml+xml``) is named
explicitly with a q above 0 and above what the most specific range for ``application/json``
gives. ``*/*`` alone, ``text/*``, a tie and anything that does not parse are not a
preference: those get the API answer (JSON, challenges), the conservative side.
"""

from __future__ import annotations

import re

from extauthz.cache import BoundedCache

_HTML_TYPES = ("text/html", "application/xhtml+xml")
_JSON_RANGES = ("application/json", "application/*", "*/*")  # most specific first
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_MAX_RANGES = 64  # browsers send about ten; more is not a browser
# Clients send the same few headers: answers are kept, for headers of browser size only (a
# client inventing long ones costs a parse each time, never memory).
_ANSWERS: BoundedCache[str, bool] = BoundedCache(1024)
_KEPT_LENGTH = 512


def _ranges(accept: str) -> dict[str, float] | None:
    """Each media range's q (the highest when named twice); None when the header is not
    a list of ``type/subtype;params`` ranges with valid q-values."""
    pieces = accept.split(",")
    if len(pieces) > _MAX_RANGES:
        return None
    ranges: dict[str, float] = {}
    for piece in pieces:
        media, *params = piece.split(";")
        media = media.strip().lower()
        if not media:
            continue  # RFC 9110 §5.6.1: empty list elements are ignored
        if media.count("/") != 1:
            return None
        q, weighed = 1.0, False
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                if weighed:  # two weights for one range: ambiguous, so not a preference
                    return None
                weighed = True
                value = value.strip()
                if not _QVALUE.fullmatch(value):
                    return None
                q = float(value)
        ranges[media] = max(q, ranges.get(media, 0.0))
    return ranges


def _prefers_html(accept: str) -> bool:
    ranges = _ranges(accept)
    if ranges is None:
        return False
    html = max((ranges[t] for t in _HTML_TYPES if t in ranges), default=0.0)
    json = next((ranges[r] for r in _JSON_RANGES if r in ranges), 0.0)
    return html > 0 and html > json


def prefers_html(method: str, accept: str | None) -> bool:
    """A browser navigation: ``GET``/``HEAD`` whose ``Accept`` prefers HTML (see above)."""
    if method not in ("GET", "HEAD") or not accept or "html" not in accept.lower():
        return False
    if len(accept) > _KEPT_LENGTH:
        return _prefers_html(accept)
    answer = _ANSWERS.get(accept)
    if answer is None:
        answer = _ANSWERS.put(accept, _prefers_html(accept))
    return answer
