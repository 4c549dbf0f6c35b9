"""Hostile paths, authorities and cookies: refused when ambiguous, never resolved into a guess.

The property tests build real ``CheckRequest`` messages from generated raw ``:path`` and
``:authority`` values and run them through the real request view and policy matcher.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauthz.audit.record import safe_path
from extauthz.errors import BadRequest, CredentialAmbiguous
from extauthz.identity.extract import cookie_value, parse_cookies, without_cookies
from extauthz.pb.envoy.service.auth.v3 import external_auth_pb2 as ext
from extauthz.policy.match import PolicyIndex
from extauthz.policy.model import parse_policy
from extauthz.policy.paths import normalize_path
from extauthz.request import RequestView, view_from_check_request

# How permissive each policy is (higher: stricter). Deeper paths are never more permissive
# than the ones above them here, so "the policy for the normalised path" may never rank
# below "the policy the visible prefix selects".
_DOCS = [
    ({"id": "root", "match": {"paths": [{"prefix": "/"}]}}, 1),
    ({"id": "docs", "match": {"paths": [{"prefix": "/docs/"}]},
      "require": {"authenticated": False}}, 0),
    ({"id": "admin", "match": {"paths": [{"prefix": "/admin/"}]},
      "require": {"claims": {"groups": ["sre"]}}}, 2),
    ({"id": "admin-users", "match": {"paths": [{"prefix": "/admin/users/"}]},
      "require": {"claims": {"groups": ["sre"]}, "scopes": ["users:admin"]}}, 3),
    ({"id": "internal", "match": {"paths": [{"prefix": "/internal/"}]}, "action": "deny"}, 4),
    ({"id": "payments", "match": {"paths": [{"prefix": "/payments/send/"}]},
      "require": {"stepup": {"max_age": 300}}}, 3),
    ({"id": "secure", "match": {"hosts": ["secure.example.com"]}, "action": "deny"}, 4),
]
INDEX = PolicyIndex([parse_policy(doc) for doc, _ in _DOCS], "1")
RANK = {doc["id"]: rank for doc, rank in _DOCS}
PREFIX = {doc["id"]: doc["match"].get("paths", [{"prefix": "/"}])[0]["prefix"] for doc, _ in _DOCS}


def check_request(path: str, authority: str = "api.example.com", method: str = "GET",
                  headers: dict[str, str] | None = None) -> Any:
    req = ext.CheckRequest()
    http = req.attributes.request.http
    http.method, http.path, http.host = method, path, authority
    for k, v in (headers or {}).items():
        http.headers[k] = v
    return req


_CLEAN = re.compile(r"[A-Za-z0-9_~-]+|\.|\.\.")


def visible_prefix(raw: str) -> str:
    """What every reader agrees the path starts with: the leading segments, separated by a
    plain '/', that hold nothing to decode or strip (plain '.' and '..' resolved), up to the
    first segment that holds anything else."""
    raw = raw.split("?", 1)[0]
    if not raw.startswith("/"):
        return "/"
    segments = raw[1:].split("/")
    stack: list[str] = []
    for seg in segments[:-1]:  # each of these is followed by a '/'
        if not _CLEAN.fullmatch(seg):
            break
        if seg == "..":
            if stack:
                stack.pop()
        elif seg != ".":
            stack.append(seg)
    return "/" + "".join(s + "/" for s in stack)


def visible_host(authority: str) -> str:
    return authority.lower().split(":", 1)[0].removesuffix(".")


_PIECES = st.sampled_from([
    "admin", "docs", "internal", "payments", "send", "users", "x", "", ".", "..", "%2e%2e",
    "%2E", ".%2e", "..;", "..;x=1", ";x", "a;b", "%252e%252e", "%00", "%3B", "..%3B", "%2e",
    "%61dmin", "%zz", "\\", "..\\", "%5C..", "%2F..", "a%2Fb", "~", "\t", " ", "\x00", "%7f", "é",
    "docs;x", "admin;jsessionid=1", "%E0%80%AE", "%C0%AE", "%EF%BC%8E", "docs%2F", "K\u212a",
])
_SEPARATORS = st.sampled_from(["/", "/", "/", "/", "//", "%2F", "%2f", "%5C", "%5c", "\\"])
_RAW_PATH = st.builds(
    lambda start, pieces, seps: start + "".join(p + s for p, s in zip(pieces, seps, strict=False)),
    st.sampled_from(["/", "/", "//", "\\", "", "/admin/", "/docs/"]),
    st.lists(_PIECES, max_size=8),
    st.lists(_SEPARATORS, min_size=8, max_size=8),
)
_AUTHORITY = st.builds(
    lambda host, tail: host + tail,
    st.sampled_from(["secure.example.com", "SECURE.example.com", "api.example.com", "[::1]", ""]),
    st.sampled_from(["", "", ":443", ":", ".", ".:443", ":1:1", ":x", "..", ":443:", "@evil",
                     " ", "\t", ",api.example.com", "%2e", ":99999", ":-1", ".evil", "]", "\x00"])
    | st.text(alphabet=":[]@.%1a ", max_size=6),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=_RAW_PATH, authority=_AUTHORITY)
def test_no_request_is_governed_by_a_policy_more_permissive_than_its_visible_prefix_and_host(
    path: str, authority: str,
) -> None:
    try:
        view = view_from_check_request(check_request(path, authority))
        match = INDEX.match(view)
    except BadRequest:
        return  # refused (400): nothing was guessed
    assert match is not None
    host = visible_host(authority)
    if not authority.startswith("["):
        assert view.host == host, (authority, view.host)
    if host == "secure.example.com":
        assert match.policy.id == "secure", (authority, match.why)
        return
    seen = visible_prefix(path)
    shown = INDEX.match(view._replace(path=seen))
    assert shown is not None
    normal = normalize_path(view.path)
    assert normal.startswith(PREFIX[shown.policy.id]), (path, normal, seen)
    assert RANK[match.policy.id] >= RANK[shown.policy.id], (path, normal, match.why, shown.why)


@pytest.mark.parametrize("path", [
    "/admin/%2e%2e;/docs/x", "/internal/%2e%2e;/docs/", "/payments/send/%2e%2e;/%2e%2e;/docs/",
    "/admin/x%2F..%2F..%2Fdocs/", "/admin/x%5C..%5C..%5Cdocs/", "/admin/x\\..\\..\\docs/",
])
def test_the_reported_climbs_are_refused_by_the_request_view(path: str) -> None:
    with pytest.raises(BadRequest):
        view_from_check_request(check_request(path))


def test_secure_host_with_two_ports_is_refused_not_split_at_the_last_colon() -> None:
    with pytest.raises(BadRequest):
        view_from_check_request(check_request("/x", "secure.example.com:1:1"))


# --- cookies: one parser reads and strips; a credential that appears twice is refused ----
@pytest.mark.parametrize(("header", "pairs"), [
    ("a=1; b=2", [("a", "1"), ("b", "2")]),
    ("a=1;b=2", [("a", "1"), ("b", "2")]),
    ("a=1, b=2", [("a", "1"), ("b", "2")]),  # two Cookie lines joined by a proxy
    ('a="q"; b=', [("a", "q"), ("b", "")]),
    ("flag; a=1", [("", "flag"), ("a", "1")]),
    (" ; ;a=1 ;", [("a", "1")]),
])
def test_cookie_pairs_are_read_as_rfc_6265_says(header: str, pairs: list[tuple[str, str]]) -> None:
    assert parse_cookies(header) == pairs


@pytest.mark.parametrize("header", [
    "session=victim; session=attacker",
    "session=victim, session=attacker",  # a second Cookie line, joined with ','
    "pref=x, session=attacker; session=victim",  # planted by a sibling subdomain
    "session=victim;session=victim",
    " session =victim; session=attacker",
])
def test_a_credential_cookie_that_appears_twice_is_refused(header: str) -> None:
    with pytest.raises(CredentialAmbiguous):
        cookie_value(header, "session")


def test_a_credential_cookie_is_stripped_from_every_line_it_arrived_in() -> None:
    header = "theme=dark; session=t1, other=2; session=t2"
    assert without_cookies(header, frozenset({"session"})) == "theme=dark; other=2"
    assert without_cookies(" session = t1 ;a=1", frozenset({"session"})) == "a=1"


@pytest.mark.parametrize(("header", "kept"), [
    ("prefs=a,b; session=JWT", "prefs=a,b"),
    ("prefs=lang=en,tz=UTC; session=JWT", "prefs=lang=en,tz=UTC"),
    ('cart="1 2"; session=JWT', 'cart="1 2"'),
    ('consent={"a":1,"b":2}; session=JWT', 'consent={"a":1,"b":2}'),
    ("my_session=1;x=2", "my_session=1;x=2"),  # nothing to strip: the header is untouched
])
def test_other_cookies_reach_the_upstream_byte_for_byte(header: str, kept: str) -> None:
    assert without_cookies(header, frozenset({"session"})) == kept
    assert cookie_value("theme=dark, session=t1", "session") == "t1"


def test_a_cookie_whose_name_only_contains_the_credential_name_is_not_it() -> None:
    assert cookie_value("xsession=1; session_old=2", "session") is None
    assert without_cookies("xsession=1; session=2", frozenset({"session"})) == "xsession=1"


# --- audit and traces never keep path parameters --------------------------------------
@pytest.mark.parametrize(("path", "kept"), [
    ("/app;jsessionid=ABC123/x?token=1", "/app/x"),
    ("/app/x;jsessionid=ABC123", "/app/x"),
    ("/a;b=1;c=2/d;e#frag", "/a/d"),
    ("/plain/path", "/plain/path"),
])
def test_audit_paths_drop_path_parameters_as_they_drop_the_query(path: str, kept: str) -> None:
    assert safe_path(path) == kept


def test_a_request_view_made_by_hand_keeps_its_fields() -> None:
    view = RequestView(method="GET", scheme="https", host="h", path="/p", query="", headers={},
                       context_extensions={}, source_address="", request_id="")
    assert view.original_url == "/p"


def test_a_policy_path_that_requests_may_not_use_is_refused_naming_the_field() -> None:
    from extauthz.errors import PolicyInvalid

    with pytest.raises(PolicyInvalid, match=r"match\.paths\[0\]\.prefix.*may not use"):
        parse_policy({"id": "odd", "match": {"paths": [{"prefix": "/a/%2e%2e;/b/"}]}})
