"""Path normalisation before matching, so encodings and dot-segments cannot dodge a policy.

``/admin/../admin/x``, ``//admin/x``, ``/./admin/x`` and ``/%61dmin/x`` all become
``/admin/x``. Percent-encoded unreserved characters (RFC 3986 §2.3) are decoded; ``%2F``,
``%5C`` and the backslash count as ``/`` (many upstreams treat them so); other escapes are kept,
with upper-case hex; path parameters (``;x``, as in ``/..;/``) are dropped from each segment;
dot-segments are removed (RFC 3986 §5.2.4) after all that, so ``%2e%2e`` is ``..`` too.
"""

from __future__ import annotations

import re

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _decode_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def normalize_path(path: str) -> str:
    if "%" in path:
        path = _ESCAPE.sub(_decode_unreserved, path)
        # Encoded slashes and backslashes are separators to many upstreams: match them as such.
        path = path.replace("%2F", "/").replace("%5C", "/")
    if "\\" in path:
        path = path.replace("\\", "/")
    if not path.startswith("/"):
        path = "/" + path
    if "//" not in path and "/." not in path and ";" not in path:
        return path  # the common case: nothing to resolve
    out: list[str] = []
    # Path parameters (/..;x/, Tomcat and Spring) are dropped from a segment before it is read.
    segments = [seg.split(";", 1)[0] for seg in path.split("/")[1:]]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif seg == ".":
            if last:
                out.append("")
        elif seg == "" and not last:
            continue  # '//' collapses
        else:
            out.append(seg)
    return "/" + "/".join(out)
