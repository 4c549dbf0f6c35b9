"""Which policy governs a request: the precedence table, route binding, path tricks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extauthz.policy.match import PolicyIndex, explain
from extauthz.policy.model import Policy, parse_policy
from extauthz.policy.paths import normalize_path
from extauthz.request import RequestView
from tests.support.requests import request_view


def view(host: str = "api.example.com", path: str = "/", method: str = "GET",
         bound: str | None = None) -> RequestView:
    return request_view(path, host=host, method=method, bound=bound)


def pol(pid: str, hosts: list[str] | None = None, paths: list[dict[str, str]] | None = None,
        methods: list[str] | None = None, priority: int = 0) -> Policy:
    doc: dict[str, Any] = {"id": pid, "priority": priority,
                           "match": {"hosts": hosts or [], "paths": paths or [],
                                     "methods": methods or []}}
    return parse_policy(doc)


POLICIES = [
    pol("any-host-any-path"),
    pol("any-host-admin", paths=[{"prefix": "/admin/"}]),
    pol("wild-admin", hosts=["*.example.com"], paths=[{"prefix": "/admin/"}]),
    pol("wild-deep", hosts=["*.internal.example.com"]),
    pol("exact-host-regex", hosts=["api.example.com"], paths=[{"regex": "^/v[0-9]+/users/[^/]+$"}]),
    pol("exact-host-prefix", hosts=["api.example.com"], paths=[{"prefix": "/admin/"}]),
    pol("exact-host-longer", hosts=["api.example.com"], paths=[{"prefix": "/admin/users/"}]),
    pol("exact-host-exact", hosts=["api.example.com"], paths=[{"exact": "/admin/users/me"}]),
    pol("post-only", hosts=["api.example.com"], paths=[{"exact": "/orders"}], methods=["POST"]),
    pol("get-orders", hosts=["api.example.com"], paths=[{"prefix": "/orders"}], methods=["GET"]),
    pol("tie-low", hosts=["tie.example.com"], paths=[{"prefix": "/"}], priority=1),
    pol("tie-high", hosts=["tie.example.com"], paths=[{"prefix": "/"}], priority=5),
    pol("tie-b", hosts=["same.example.com"]),
    pol("tie-a", hosts=["same.example.com"]),
]
INDEX = PolicyIndex(POLICIES, "1")


@pytest.mark.parametrize(
    ("name", "request_", "expected"),
    [
        ("exact path beats longer prefix", view(path="/admin/users/me"), "exact-host-exact"),
        ("longest prefix wins", view(path="/admin/users/42"), "exact-host-longer"),
        ("prefix on exact host", view(path="/admin/x"), "exact-host-prefix"),
        ("regex when no exact or prefix", view(path="/v2/users/bob"), "exact-host-regex"),
        ("regex is a full match", view(path="/v2/users/bob/x"), "any-host-any-path"),
        ("exact host beats wildcard", view(path="/admin/"), "exact-host-prefix"),
        ("wildcard host beats any host", view(host="web.example.com", path="/admin/"), "wild-admin"),
        ("longest wildcard wins", view(host="db.internal.example.com", path="/admin/"), "wild-deep"),
        ("wildcard spans labels", view(host="a.b.example.com", path="/admin/"), "wild-admin"),
        ("wildcard needs a label", view(host="example.com", path="/admin/"), "any-host-admin"),
        ("any host", view(host="other.org", path="/admin/"), "any-host-admin"),
        ("nothing specific: catch-all", view(host="other.org", path="/x"), "any-host-any-path"),
        ("method excluded falls through", view(path="/orders", method="GET"), "get-orders"),
        ("method included", view(path="/orders", method="POST"), "post-only"),
        ("higher priority wins a tie", view(host="tie.example.com", path="/x"), "tie-high"),
        ("then the smaller id", view(host="same.example.com", path="/x"), "tie-a"),
        ("route binding beats everything", view(path="/admin/users/me", bound="tie-b"), "tie-b"),
        ("host is case-insensitive", view(host="API.EXAMPLE.COM".lower(), path="/admin/x"),
         "exact-host-prefix"),
        ("trailing dot host", view(host="api.example.com.", path="/admin/x"), "exact-host-prefix"),
    ],
)
def test_precedence(name: str, request_: RequestView, expected: str) -> None:
    match = INDEX.match(request_)
    assert match is not None, name
    assert match.policy.id == expected, f"{name}: {match.why}"


def test_a_bound_only_policy_never_matches_by_host_or_path() -> None:
    index = PolicyIndex([parse_policy({"id": "billing", "match": {"bound_only": True}})])
    assert index.match(view(path="/anything")) is None
    bound = index.match(view(path="/anything", bound="billing"))
    assert bound is not None
    assert bound.policy.id == "billing"
    assert dict(explain(index, view()))["billing"].startswith("bound_only")


@pytest.mark.parametrize("host", ["api.example.com:", "api.example.com:8443", "api.example.com.:443",
                                  "API.Example.COM:443"])
def test_ports_never_hide_a_host(host: str) -> None:
    from extauthz.request import split_host

    index = PolicyIndex([pol("exact", hosts=["api.example.com"]), pol("catch-all")])
    match = index.match(view(host=split_host(host)))
    assert match is not None
    assert match.policy.id == "exact"


@pytest.mark.parametrize("authority", [
    "secure.example.com:1:1", "secure.example.com:x", "secure.example.com:99999",
    "secure.example.com:-1", "user@secure.example.com", "secure.example.com@evil.example",
    " secure.example.com", "secure.example.com ", "secure.example.com\t", "secure .example.com",
    "secure.example.com..", ".secure.example.com", "secure..example.com", "secure%2eexample.com",
    "secure.example.com,other.example.com", "secure.example.com\x00", "[::1", "[::1]x",
    "[fe80::1%25eth0]", "[not-v6]", "", "a" * 64 + ".example.com", "s\u00e9cure.example.com",
    "secure.example.\u212aom", "-secure.example.com", "secure-.example.com",
])
def test_a_malformed_authority_is_refused_not_split(authority: str) -> None:
    from extauthz.request import BadAuthority, split_host

    with pytest.raises(BadAuthority):
        split_host(authority)


@pytest.mark.parametrize(("authority", "host"), [
    ("[::1]:8443", "[::1]"), ("[2001:DB8::1]", "[2001:db8::1]"), ("127.0.0.1:80", "127.0.0.1"),
    ("under_score.internal", "under_score.internal"), ("xn--bcher-kva.example", "xn--bcher-kva.example"),
])
def test_well_formed_authorities_keep_their_host(authority: str, host: str) -> None:
    from extauthz.request import split_host

    assert split_host(authority) == host


def test_no_match_returns_none_so_the_default_applies() -> None:
    index = PolicyIndex([pol("only", hosts=["a.example.com"])])
    assert index.match(view(host="b.example.com")) is None


def test_a_route_bound_to_a_missing_policy_is_an_error_not_a_fallback() -> None:
    with pytest.raises(KeyError):
        INDEX.match(view(bound="no-such-policy"))


@pytest.mark.parametrize("path", [
    "/admin/../admin/x", "/%61dmin/x", "/./admin/x", "/public/../admin/x",
    "/admin/./x", "/admin/y;x=1", "/public;jsessionid=1/../admin/x", "/admin//x",
    "/admin/a%2Fb", "/admin/a%5Cb", "/admin/a\\b",  # either reading is under /admin/
])
def test_path_tricks_cannot_slip_past_an_admin_policy(path: str) -> None:
    index = PolicyIndex([pol("admin", paths=[{"prefix": "/admin/"}]),
                         pol("public", paths=[{"prefix": "/"}])])
    match = index.match(view(path=path))
    assert match is not None
    assert match.policy.id == "admin", (path, normalize_path(path))


@pytest.mark.parametrize("path", [
    # a dot segment that appears only after decoding or after dropping a ';' parameter
    "/admin/%2e%2e;/docs/x", "/admin/..;/docs/x", "/internal/%2e%2e;/docs/",
    "/payments/send/%2e%2e;/%2e%2e;/docs/", "/admin/%2e%2e/docs/", "/admin/.%2E/docs/",
    "/admin/..;jsessionid=1/docs/", "/admin/..%3B/docs/", "/admin/%2e/x", "/admin/%252e%252e/docs/",
    # an encoded (or back-) slash in a path with a dot segment: climbs only where it is decoded
    "/admin/x%2F..%2F..%2Fdocs/", "/admin/x%2f..%2f..%2fdocs/", "/admin/x%5C..%5C..%5Cdocs/",
    "/admin/x\\..\\..\\docs/", "/admin%2Fx/../docs/", "/admin/x%252F..%252Fdocs/",
    # '..' right after an empty segment: merge-then-resolve and resolve-then-merge disagree
    "/admin//../docs/", "/admin/;x/../docs/",
    # control characters, raw or encoded, and broken escapes
    "/admin/x%00.html", "/admin\x00/x", "/admin/%0a", "/admin/%7f", "/admin/x\ty", "/admin/%zz",
    "/admin/%2", "/" + "a" * 9000,
    # Unicode: a full-width dot folds to '.' under NFKC; %C0%AE is an overlong '.'
    "/admin/%EF%BC%8E%EF%BC%8E/docs/", "/admin/\uff0e\uff0e/docs/", "/admin/%c0%ae%c0%ae/docs/",
    "/admin/%E0%80%AE%E0%80%AE/docs/", "/admin/%F0%80%80%AE/x", "/admin/x%E0%80%AF..",
    "/admin/%ED%A0%80", "/admin/caf%E9", "admin/x", "\\admin/x", "*", "%2Fadmin/x",
])
def test_an_ambiguous_path_is_refused_not_resolved(path: str) -> None:
    """(With the index of the precedence table, whose admin policies all sit on /admin/.)"""
    from extauthz.policy.paths import AmbiguousPath

    with pytest.raises(AmbiguousPath):
        normalize_path(path)
    with pytest.raises(AmbiguousPath):
        INDEX.match(view(path=path))


@pytest.mark.parametrize("path", ["/admin%2Fx", "/admin%5Cx", "/\\admin\\x", "/admin%2fx/y",
                                  "//admin/x", "/admin;x=1/y", "/admin;/y"])
def test_a_separator_slashes_or_parameter_that_change_the_policy_are_refused(path: str) -> None:
    """Read literally (not split at %2F, '//' not merged, ';x' kept) these fall under the
    public policy; normalised, under /admin/: which one the upstream uses is a guess."""
    from extauthz.policy.paths import AmbiguousPath

    index = PolicyIndex([pol("admin", paths=[{"prefix": "/admin/"}]),
                         pol("public", paths=[{"prefix": "/"}])])
    with pytest.raises(AmbiguousPath):
        index.match(view(path=path))


def test_explain_names_the_winner_and_why_the_others_lost() -> None:
    lines = dict(explain(INDEX, view(path="/admin/users/me", method="DELETE")))
    assert lines["exact-host-exact"].startswith("MATCHED: host api.example.com, exact path")
    assert lines["exact-host-longer"].startswith("matches, but exact-host-exact takes precedence")
    assert lines["post-only"] == "method DELETE is not one of POST"
    assert lines["tie-a"] == "host api.example.com is not one of same.example.com"
    assert lines["exact-host-regex"].startswith("path /admin/users/me does not match")


# --- the index agrees with a brute-force reading of the precedence rules ----------------
def _rank(p: Policy, host: str, path: str, method: str) -> tuple[Any, ...] | None:
    if p.methods and method not in p.methods:
        return None
    host_ranks = []
    for h in p.hosts or ("*",):
        if h == host:
            host_ranks.append((0, 0))
        elif h.startswith("*.") and host.endswith(h[1:]):
            host_ranks.append((1, -len(h)))
        elif h == "*":
            host_ranks.append((2, 0))
    path_ranks = []
    for pm in p.paths or ():
        if pm.kind == "exact" and pm.value == path:
            path_ranks.append((0, 0))
        elif pm.kind == "prefix" and path.startswith(pm.value):
            path_ranks.append((1, -len(pm.value)))
        elif pm.kind == "regex" and pm.pattern is not None and pm.pattern.fullmatch(path):
            path_ranks.append((2, 0))
    if not p.paths:
        path_ranks.append((1, 0))
    if not host_ranks or not path_ranks:
        return None
    return (*min(host_ranks), *min(path_ranks), -p.priority, p.id)


_hosts = st.sampled_from(["a.example.com", "b.example.com", "x.a.example.com", "*.example.com",
                          "*.a.example.com", "*"])
_paths = st.sampled_from([{"prefix": "/"}, {"prefix": "/a"}, {"prefix": "/a/"}, {"exact": "/a/b"},
                          {"exact": "/a"}, {"regex": "/a/[a-z]+"}, {"regex": ".*"}])


@st.composite
def _policy_sets(draw: st.DrawFn) -> list[Policy]:
    n = draw(st.integers(1, 8))
    return [pol(f"p{i}", hosts=draw(st.lists(_hosts, max_size=2)),
                paths=draw(st.lists(_paths, max_size=2)),
                methods=draw(st.sampled_from([[], ["GET"], ["POST"]])),
                priority=draw(st.integers(0, 2))) for i in range(n)]


@settings(max_examples=300, deadline=None)
@given(policies=_policy_sets(),
       host=st.sampled_from(["a.example.com", "x.a.example.com", "other.org", "b.example.com"]),
       path=st.sampled_from(["/", "/a", "/a/", "/a/b", "/a/bc", "/b", "/a/B"]),
       method=st.sampled_from(["GET", "POST"]))
def test_the_index_agrees_with_the_precedence_rules(
    policies: list[Policy], host: str, path: str, method: str
) -> None:
    ranked = [(r, p.id) for p in policies if (r := _rank(p, host, path, method)) is not None]
    expected = min(ranked)[1] if ranked else None
    match = PolicyIndex(policies).match(view(host=host, path=path, method=method))
    assert (match.policy.id if match else None) == expected


# --- dry-run policies never decide; the one that would, if enforced, is the shadow -------
def trial(pid: str, **kw: Any) -> Policy:
    doc = dict(pol(pid, **kw).document)
    return parse_policy({**doc, "mode": "dry-run"})


def test_a_dry_run_policy_is_skipped_for_the_decision_and_returned_as_the_shadow() -> None:
    index = PolicyIndex([pol("admin", paths=[{"prefix": "/admin/"}]),
                         trial("users-trial", paths=[{"prefix": "/admin/users/"}]),
                         trial("broad-trial", paths=[{"prefix": "/"}])])
    found = index.lookup(view(path="/admin/users/1"))
    assert (found.match and found.match.policy.id, found.shadow and found.shadow.policy.id) == (
        "admin", "users-trial")
    assert index.match(view(path="/admin/users/1")) == found.match
    outranked = index.lookup(view(path="/admin/x"))  # admin outranks broad-trial: no shadow
    assert (outranked.match and outranked.match.policy.id, outranked.shadow) == ("admin", None)
    alone = index.lookup(view(path="/elsewhere"))
    assert (alone.match, alone.shadow and alone.shadow.policy.id) == (None, "broad-trial")


def test_a_route_bound_to_a_dry_run_policy_decides_nothing() -> None:
    index = PolicyIndex([trial("billing-trial", paths=[{"prefix": "/billing/"}]),
                         pol("catch-all")])
    found = index.lookup(view(path="/billing/x", bound="billing-trial"))
    assert (found.match, found.bound_to_dry_run) == (None, True)
    with pytest.raises(KeyError):  # as if the bound id did not exist: the caller denies
        index.match(view(path="/billing/x", bound="billing-trial"))


def test_explain_shows_the_deciding_policy_and_the_dry_run_shadow() -> None:
    index = PolicyIndex([pol("admin", paths=[{"prefix": "/admin/"}]),
                         trial("users-trial", paths=[{"prefix": "/admin/users/"}]),
                         trial("broad-trial", paths=[{"prefix": "/"}])])
    lines = dict(explain(index, view(path="/admin/users/1")))
    assert lines["admin"] == "MATCHED: any host, prefix /admin/"
    assert lines["users-trial"] == ("DRY-RUN: any host, prefix /admin/users/; evaluated and logged "
                                    "only, admin decides")
    assert lines["broad-trial"].startswith("matches, but users-trial takes precedence")
    alone = dict(explain(index, view(path="/x")))
    assert alone["broad-trial"].endswith("evaluated and logged only, default_action decides")


@settings(max_examples=300, deadline=None)
@given(policies=_policy_sets(), trials=st.lists(st.booleans(), min_size=8, max_size=8),
       host=st.sampled_from(["a.example.com", "x.a.example.com", "other.org", "b.example.com"]),
       path=st.sampled_from(["/", "/a", "/a/", "/a/b", "/a/bc", "/b", "/a/B"]),
       method=st.sampled_from(["GET", "POST"]))
def test_the_decision_ignores_dry_run_policies_and_the_shadow_outranks_it(
    policies: list[Policy], trials: list[bool], host: str, path: str, method: str
) -> None:
    policies = [parse_policy({**dict(p.document), "mode": "dry-run"}) if dry else p
                for p, dry in zip(policies, trials, strict=False)]
    ranked = sorted((r, p.id, p.dry_run) for p in policies
                    if (r := _rank(p, host, path, method)) is not None)
    enforcing = [pid for _, pid, dry in ranked if not dry]
    top_dry_run = ranked[0][1] if ranked and ranked[0][2] else None
    found = PolicyIndex(policies).lookup(view(host=host, path=path, method=method))
    assert (found.match.policy.id if found.match else None) == (enforcing[0] if enforcing else None)
    assert (found.shadow.policy.id if found.shadow else None) == top_dry_run


def test_a_path_over_the_cap_is_refused_before_any_regex_or_fallback_sees_it() -> None:
    from extauthz.errors import BadRequest
    from extauthz.policy.paths import MAX_PATH

    index = PolicyIndex([parse_policy({
        "id": "reports", "match": {"paths": [{"regex": r"^/reports/([a-z0-9]+/?)+\.csv$"}]},
        "action": "deny"})])
    at_cap = "/reports/" + "a" * (MAX_PATH - len("/reports/.csv")) + ".csv"
    match = index.match(view(path=at_cap))
    assert match is not None
    assert match.policy.id == "reports"
    with pytest.raises(BadRequest):  # refused (400), never a no-match left to default_action
        index.match(view(path=at_cap.replace("/reports/", "/reports/a")))
