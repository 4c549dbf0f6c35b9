"""The path a policy is matched against: parsed strictly, once, and refused when ambiguous.

An authorization service is fooled when it reads a path one way and the upstream another.
So a path whose meaning depends on who decodes it is refused (``AmbiguousPath``, a 400
``bad_request``), never resolved into a guess:

- a control character, raw or percent-encoded (``%00`` to ``%1F``, ``%7F``), or a ``%`` that
  does not start a two-digit escape;
- a dot segment that only appears after percent-decoding (once or twice) or after removing a
  ``;`` parameter: ``%2e%2e``, ``.%2E``, ``%252e%252e``, ``..;``, ``..;jsessionid=1``,
  ``..%3B``;
- a dot segment in a path that also holds an escaped separator (``%2F``, ``%5C``) or a
  backslash: whether ``a%2F..`` climbs depends on whether the upstream decodes ``%2F``;
- a double-encoded dot, separator or ``;`` (``%252e``, ``%252F``, ``%253B``), escapes that
  are not strict UTF-8 (overlong ``%C0%AE`` or ``%E0%80%AE``, surrogates, Latin-1), or a
  segment that folds to a dot segment under Unicode NFKC (a full-width dot U+FF0E, raw or
  as ``%EF%BC%8E``);
- a path that does not start with ``/`` (no origin-form request target);
- a ``..`` right after an empty segment (``/a//../b``, ``/a/;x/../b``): merging slashes
  before or after resolving gives two different paths;
- (in the matcher) a path with an escaped separator, a ``//`` or a ``;`` parameter whose
  literal reading (not split, not merged, parameter kept) falls under another policy than
  the normalised one: ``/admin%2Fx``, ``//docs/`` or ``/docs;x/`` where ``/admin/`` or
  ``/docs/`` have their own policy.

What remains has one reading. It is normalised for matching: ``/``, ``\\``, ``%2F`` and
``%5C`` separate segments (many upstreams treat them so; the stricter reading for a policy
on the decoded path); plain dot segments are resolved (RFC 3986 §5.2.4); ``;`` parameters
are dropped from each segment (``/admin;x=1/y`` is ``/admin/y``, as Tomcat and Spring read
it); empty segments collapse; percent-encoded unreserved characters (RFC 3986 §2.3) are
decoded and other escapes kept with upper-case hex. ``/admin/../admin/x``, ``//admin/x``,
``/./admin/x`` and ``/%61dmin/x`` all become ``/admin/x``.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote, unquote_to_bytes

from extauthz.cache import BoundedCache
from extauthz.errors import BadRequest


class AmbiguousPath(BadRequest):
    """The path reads differently depending on who decodes it."""


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# A path that needs no work: pchars without '%', ';' or '\', no dot segment, no '//'.
_PLAIN = re.compile(r"/[A-Za-z0-9\-_~!$&'()*+,=:@/.]*")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ENCODED_CONTROL = re.compile(r"%(?:[01][0-9A-Fa-f]|7[Ff])")
_DOUBLE_ENCODED = re.compile(r"%25(?:2[EeFf]|5[Cc]|3[Bb])")

_SEPARATORS = re.compile(r"(/|\\|%2[Ff]|%5[Cc])")
_SLASH = re.compile(r"(/)")
_ESCAPED_SEPARATOR = re.compile(r"%(?:2[Ff]|5[Cc])")
_DOTS = (".", "..")
MAX_PATH = 8192


def _decode_all(text: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def _decode_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def _hidden_dot(segment: str) -> bool:
    """A segment that is not literally ``.``/``..`` but becomes one to some reader: after
    percent-decoding (once or twice, UTF-8 included), dropping a ``;`` parameter, or
    Unicode compatibility folding (``%EF%BC%8E`` is a full-width dot)."""
    if segment in _DOTS:
        return False
    forms = {segment}
    if "%" in segment:
        once = _decode_all(segment)
        forms |= {once, _decode_all(once), _decode_utf8(segment)}
    if not segment.isascii() or "%" in segment:
        forms |= {unicodedata.normalize("NFKC", f) for f in list(forms)}
    return any(form.split(";", 1)[0] in _DOTS for form in forms)


def _decode_utf8(segment: str) -> str:
    return unquote(segment, encoding="utf-8", errors="replace")


def normalize_path(path: str) -> str:
    """The path policies are matched against, or ``AmbiguousPath``."""
    if len(path) <= MAX_PATH and _PLAIN.fullmatch(path) and "//" not in path and "/." not in path:
        return path  # the common case: nothing to decode, resolve or refuse
    return _normalize(path, _SEPARATORS)


def has_escaped_separator(path: str) -> bool:
    """Whether some upstreams split this path where others do not (``%2F``, ``%5C``, ``\\``)."""
    return "\\" in path or ("%" in path and _ESCAPED_SEPARATOR.search(path) is not None)


def has_second_reading(path: str) -> bool:
    """Whether upstreams may read this path in two ways: an escaped separator (split there
    or not), ``//`` (merged or not), a ``;`` parameter (dropped or kept)."""
    return "//" in path or ";" in path or has_escaped_separator(path)


def literal_path(path: str) -> str:
    """The path as the most literal upstream reads it: ``%2F``/``%5C`` (and a backslash, as
    ``%5C``) stay inside their segment, ``//`` is not merged, ``;`` parameters are kept. The
    matcher refuses a path whose two readings fall under different policies."""
    return _normalize(path.replace("\\", "%5C"), _SLASH, literal=True)


_NORMALIZED: BoundedCache[tuple[str, re.Pattern[str], bool], str] = BoundedCache(4096)


def _normalize(path: str, separators: re.Pattern[str], *, literal: bool = False) -> str:
    """Kept per path (an ambiguous one is refused anew each time: refusals are not kept)."""
    key = (path, separators, literal)
    kept = _NORMALIZED.get(key)
    if kept is None:
        kept = _NORMALIZED.put(key, _normalized(path, separators, literal=literal))
    return kept


def _normalized(path: str, separators: re.Pattern[str], *, literal: bool) -> str:
    if len(path) > MAX_PATH:
        raise AmbiguousPath(f"the path is longer than {MAX_PATH} bytes")
    if any(c < " " or c == "\x7f" for c in path):
        raise AmbiguousPath("the path holds a control character")
    if "%" in path:
        if _BAD_ESCAPE.search(path):
            raise AmbiguousPath("the path holds a '%' that is not a two-digit escape")
        if _ENCODED_CONTROL.search(path):
            raise AmbiguousPath("the path holds an encoded control character")
        if _DOUBLE_ENCODED.search(path):
            raise AmbiguousPath("the path holds a double-encoded '.', '/', '\\' or ';'")
        try:  # strict: overlong forms (%C0%AE, %E0%80%AE), surrogates, Latin-1 escapes
            unquote_to_bytes(path).decode("utf-8")
        except UnicodeError as e:
            raise AmbiguousPath("the path is not valid UTF-8 once percent-decoded") from e
    if not path.startswith("/"):
        raise AmbiguousPath("the path does not start with '/'")
    parts = separators.split(path)  # segment, separator, segment, ...: parts[0] is ""
    segments = parts[2::2]
    escaped_separator = has_escaped_separator(path)
    if any(_hidden_dot(seg) for seg in segments):
        raise AmbiguousPath("a dot segment hidden by percent-encoding or a ';' parameter")
    if escaped_separator and any(seg in _DOTS for seg in segments):
        raise AmbiguousPath("a dot segment in a path that holds an encoded '/' or '\\' or a backslash")
    out: list[str] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "..":
            if out and out[-1].split(";", 1)[0] == "":
                raise AmbiguousPath("'..' after an empty segment ('//..' or '/;x/..')")
            if out:
                out.pop()
            if last:
                out.append("")
        elif seg == ".":
            if last:
                out.append("")
        else:
            out.append(seg)
    kept: list[str] = []
    for i, seg in enumerate(out):
        if not literal:
            seg = seg.split(";", 1)[0]
        if "%" in seg:
            seg = _ESCAPE.sub(_decode_unreserved, seg)
        if seg or literal or i == len(out) - 1:
            kept.append(seg)
    return "/" + "/".join(kept)
