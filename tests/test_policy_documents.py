"""Policy documents: good ones parse to their canonical form; bad ones name the field."""

from __future__ import annotations

import pytest

from extauthz.errors import PolicyInvalid
from extauthz.policy.model import documents_from_text, parse_policies, parse_policy


def test_a_full_document_parses_with_defaults_filled_in() -> None:
    p = parse_policy({
        "id": "admin-api",
        "match": {"hosts": ["API.example.com", "*.example.com"],
                  "paths": [{"exact": "/healthz"}, {"prefix": "/admin/"},
                            {"regex": "^/v[0-9]+/users/[^/]+$"}],
                  "methods": ["get", "POST"]},
        "require": {"scopes": ["admin:write"], "claims": {"groups": ["sre"], "email_verified": [True]}},
        "headers": {"X-Tenant": "t-{claims.tenant}"},
    })
    assert p.hosts == ("api.example.com", "*.example.com")
    assert [pm.kind for pm in p.paths] == ["exact", "prefix", "regex"]
    assert p.methods == frozenset({"GET", "POST"})
    assert p.require.authenticated is True
    assert p.require.claims == (("groups", ("sre",)), ("email_verified", (True,)))
    assert (p.action, p.mode, p.priority) == ("allow", "enforce", 0)
    assert p.headers[0].name == "x-tenant"
    assert p.document["match"]["paths"] == [{"exact": "/healthz"}, {"prefix": "/admin/"},
                                            {"regex": "^/v[0-9]+/users/[^/]+$"}]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"id": "a", "match": {"methdos": ["GET"]}},
         "unknown key 'match.methdos': did you mean 'methods'?"),
        ({"id": "a", "requre": {}}, "unknown key 'requre': did you mean 'require'?"),
        ({"id": "Admin_API"}, "'id' is 'Admin_API': use lower-case letters, digits and '-'"),
        ({}, "'id' is required"),
        ({"id": "a", "priority": "high"}, "'priority' must be a whole number"),
        ({"id": "a", "match": {"paths": [{"regex": "(unclosed"}]}},
         "'match.paths[0].regex' is '(unclosed', which RE2 refuses (missing ): (unclosed)"),
        ({"id": "a", "match": {"paths": [{"prefix": "/a", "exact": "/b"}]}},
         "'match.paths[0]' needs exactly one of exact, prefix or regex"),
        ({"id": "a", "match": {"paths": [{"prefix": "admin"}]}},
         "'match.paths[0].prefix' is 'admin': a path starts with '/'"),
        ({"id": "a", "match": {"paths": ["/admin"]}}, "'match.paths[0]' must be a mapping"),
        ({"id": "a", "match": {"hosts": ["api.example.com:8443"]}},
         "'match.hosts[0]' is 'api.example.com:8443': leave the port out"),
        ({"id": "a", "match": {"hosts": ["api.*.com"]}}, "'match.hosts[0]' is 'api.*.com'"),
        ({"id": "a", "match": {"methods": "GET"}}, "'match.methods' must be a list of strings"),
        ({"id": "a", "action": "permit"}, "'action' is 'permit'; choose one of: allow, deny"),
        ({"id": "a", "mode": "audit"}, "'mode' is 'audit'; choose one of: enforce, dry-run"),
        ({"id": "a", "require": {"claims": ["groups"]}}, "'require.claims' must map claim names"),
        ({"id": "a", "require": {"claims": {"groups": []}}},
         "'require.claims.groups' must be a non-empty list"),
        ({"id": "a", "require": {"authenticated": False, "scopes": ["x"]}},
         "'require' asks for issuers, audiences, scopes, claims or stepup on a public route"),
        ({"id": "a", "require": {"authenticated": "yes"}},
         "'require.authenticated' must be true or false"),
        ({"id": "a", "headers": {"x-auth-subject": "{claims.sub}"}}, "'headers.x-auth-subject' is reserved"),
        ({"id": "a", "headers": {"x-t": "{tenant}"}}, "'headers.x-t' uses {tenant}; write {claims.NAME}"),
        ({"id": "a", "match": {"bound_only": True, "paths": [{"prefix": "/"}]}},
         "'match.bound_only' is true, so hosts, paths and methods would never be used"),
        ({"id": "a", "match": {"paths": [{"prefix": "/%7Euser/"}]}},
         "'match.paths[0].prefix' is '/%7Euser/', which requests are compared as '/~user/'"),
        ({"id": "a", "match": {"paths": [{"exact": "/a/../b"}]}},
         "which requests are compared as '/b'"),
        ({"id": "a", "headers": {"bad name": "x"}}, "'headers' has an invalid header name 'bad name'"),
        ({"id": "a", "match": {"methods": ["GET", "PURGE"]}},
         "'match.methods[1]' is 'PURGE', not a standard HTTP method: the methods extauthz accepts "
         "are: CONNECT, DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE"),
        ({"id": "a", "match": {"methods": ["GET /"]}}, "'match.methods[0]' is 'GET /', not a standard"),
    ],
)
def test_a_bad_document_is_refused_naming_the_field(doc: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyInvalid) as err:
        parse_policy(doc)
    assert message in str(err.value)


def test_duplicate_ids_in_a_batch_are_refused() -> None:
    with pytest.raises(PolicyInvalid, match="id 'a' appears twice"):
        parse_policies([{"id": "a"}, {"id": "b"}, {"id": "a"}], "batch")


def test_one_bad_document_rejects_the_whole_batch() -> None:
    with pytest.raises(PolicyInvalid, match="policy 'b'"):
        parse_policies([{"id": "a"}, {"id": "b", "action": "maybe"}], "batch")


def test_a_yaml_stream_and_a_json_array_are_both_lists_of_policies() -> None:
    stream = documents_from_text("id: a\n---\nid: b\n", "f.yaml")
    array = documents_from_text('[{"id": "a"}, {"id": "b"}]', "f.json")
    assert stream == array == [{"id": "a"}, {"id": "b"}]


def test_broken_yaml_is_a_policy_error_naming_the_source() -> None:
    with pytest.raises(PolicyInvalid, match=r"f\.yaml:2:1: not valid YAML or JSON"):
        documents_from_text("id: [a\n", "f.yaml")


def test_a_misspelt_method_on_a_deny_policy_is_refused_with_the_closest_method() -> None:
    # Before: DELET validated, matched no request, and DELETE fell through to an allow.
    doc = {"id": "no-deletes", "match": {"paths": [{"prefix": "/api/"}], "methods": ["GET", "DELET"]},
           "action": "deny"}
    with pytest.raises(PolicyInvalid) as err:
        parse_policies([doc], "policies.yaml")
    assert str(err.value) == ("policies.yaml: policy 'no-deletes': 'match.methods[1]' is 'DELET', "
                              "not a standard HTTP method: did you mean 'DELETE'?")


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                                    "TRACE", "PATCH"])
def test_every_standard_method_is_accepted(method: str) -> None:
    assert parse_policy({"id": "a", "match": {"methods": [method]}}).methods == {method}


def test_lower_case_methods_are_stored_upper_case_once() -> None:
    p = parse_policy({"id": "a", "match": {"methods": ["delete", "Patch", "DELETE"]}})
    assert p.methods == frozenset({"DELETE", "PATCH"})
    assert p.document["match"]["methods"] == ["DELETE", "PATCH"]


EVIL = r"^/reports/([a-z0-9]+/?)+\.csv$"


def test_policy_regexes_are_compiled_by_re2_not_the_backtracking_re() -> None:
    p = parse_policy({"id": "reports", "match": {"paths": [{"regex": EVIL}]}})
    pattern = p.paths[0].pattern
    assert pattern is not None
    assert type(pattern).__module__.split(".")[0] == "re2"
    assert pattern.pattern == EVIL
    # Python's re backtracks for seconds on this 36-byte path; RE2 is linear (not timed here).
    assert pattern.fullmatch("/reports/" + "a" * 26 + "!") is None
    assert pattern.fullmatch("/reports/a/b/c.csv") is not None


@pytest.mark.parametrize(("regex", "why"), [
    (r"^/(a)\1$", "invalid escape sequence: \\1"),
    ("^/admin(?!/public)", "invalid perl operator: (?!"),
    ("^/(?<=x)y", "invalid perl operator: (?<="),
    ("^/a++$", "bad repetition operator: ++"),
    ("^/x\n(", "missing ): ^/x\\n("),
])
def test_a_regex_re2_cannot_run_is_refused_naming_the_policy_and_the_pattern(regex: str, why: str) -> None:
    doc = {"id": "reports", "match": {"paths": [{"prefix": "/r/"}, {"regex": regex}]}}
    with pytest.raises(PolicyInvalid) as err:
        parse_policies([doc], "policies.yaml")
    message = str(err.value)
    assert message.startswith(f"policies.yaml: policy 'reports': 'match.paths[1].regex' is {regex!r}, "
                              f"which RE2 refuses ({why}): write an RE2 regex")
    assert "\n" not in message  # one line, even for a pattern with a newline in it


@pytest.mark.parametrize("pid", ["abc\n", "abc\r\n", "a" * 64, "-abc", "abc-"])
def test_a_policy_id_outside_the_pattern_is_refused(pid: str) -> None:
    # Before: Python's '$' matched before a final newline, so id "abc\n" was stored and logged.
    with pytest.raises(PolicyInvalid) as err:
        parse_policy({"id": pid})
    message = str(err.value)
    assert message.startswith("policy: 'id' is ")
    assert message.endswith(": use lower-case letters, digits and '-' (at most 63, not starting "
                            "or ending with '-')")
    assert "\n" not in message


def test_broken_yaml_is_one_line_naming_the_source_and_the_place() -> None:
    with pytest.raises(PolicyInvalid) as err:
        documents_from_text("id: a\nmatch: {paths: [{prefix: /a/}]\n", "f.yaml")
    # PyYAML's C parser (libyaml) and its Python one word the problem differently
    assert str(err.value).startswith("f.yaml:3:1: not valid YAML or JSON: while parsing a flow "
                                     "mapping: ")
    assert "expected ',' or '}'" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_problem_in_a_list_item_names_its_index() -> None:
    with pytest.raises(PolicyInvalid) as err:
        parse_policies([{"id": "a", "match": {"hosts": ["api.example.com", 443]}}], "p.yaml")
    assert str(err.value) == "p.yaml: policy 'a': 'match.hosts[1]' must be a string, got a number"


def test_the_stored_form_has_every_key_in_order_and_only_each_path_s_kind() -> None:
    p = parse_policy({"id": "a", "match": {"paths": [{"prefix": "/a/", "exact": None}],
                                           "methods": ["get"]},
                      "require": {"stepup": {}}})
    assert p.document == {
        "id": "a", "priority": 0,
        "match": {"hosts": [], "paths": [{"prefix": "/a/"}], "methods": ["GET"], "bound_only": False},
        "require": {"authenticated": True, "issuers": [], "audiences": [], "scopes": [],
                    "claims": None, "stepup": {"max_age": 300, "acr_values": ["urn:extauthz:webauthn"]}},
        "action": "allow", "mode": "enforce", "headers": None, "description": ""}
    assert list(p.document) == ["id", "priority", "match", "require", "action", "mode", "headers",
                                "description"]
