"""The config file and policies are declared once: the loader and the published JSON Schema
(`extauthz schema policy|config`, schemas/*.schema.json) come from the same declaration, so
an editor pointed at the schema underlines what the service would refuse."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from benchmarks.policyset import policies as bench_policies
from extauthz.config import settings_from_document
from extauthz.config.model import DemoIssuerSection, StepupSection
from extauthz.config.settings import DemoIssuerSettings, StepupSettings
from extauthz.errors import ConfigError, PolicyInvalid
from extauthz.policy.model import documents_from_text, parse_policies, parse_policy
from extauthz.schema.cli import document_schema, schema_text
from tests.support.cli import INSTALLED, run_cli

ROOT = Path(__file__).resolve().parents[1]
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(document_schema(kind))


def schema_errors(kind: str, doc: object) -> list[str]:
    return [e.message for e in validator(kind).iter_errors(doc)]


def every_schema_error(kind: str, doc: object) -> list[str]:
    """Every message, including those under an anyOf (one policy, or a list of them)."""
    out: list[str] = []
    todo = list(validator(kind).iter_errors(doc))
    while todo:
        error = todo.pop()
        out.append(error.message)
        todo.extend(error.context or ())
    return out


@pytest.mark.parametrize("kind", ["policy", "config"])
def test_extauthz_schema_prints_a_draft_2020_12_json_schema(kind: str) -> None:
    result = run_cli(None, "schema", kind, program=INSTALLED)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$schema"] == DIALECT
    assert schema["title"] == f"extauthz {kind}"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_schema_command_reads_no_config() -> None:
    # A broken environment stops `serve`, not printing a schema to fix a file with.
    result = run_cli(None, "schema", "policy", env={"EXTAUTHZ_DEFAULT_ACTON": "deny"},
                     program=INSTALLED)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("kind", ["policy", "config"])
def test_the_shipped_schema_files_are_current(kind: str) -> None:
    shipped = (ROOT / "schemas" / f"{kind}.schema.json").read_text(encoding="utf-8")
    assert shipped == schema_text(kind), (
        f"regenerate: extauthz schema {kind} > schemas/{kind}.schema.json")


def test_the_demo_config_validates_against_the_config_schema() -> None:
    doc = yaml.safe_load((ROOT / "demo" / "config.yaml").read_text(encoding="utf-8"))
    assert schema_errors("config", doc) == []


def test_every_demo_policy_validates_against_the_policy_schema() -> None:
    docs = documents_from_text((ROOT / "demo" / "policies.yaml").read_text(encoding="utf-8"),
                               "demo/policies.yaml")
    assert len(docs) >= 5
    for doc in docs:
        assert schema_errors("policy", doc) == [], doc
    assert schema_errors("policy", docs) == []  # a JSON array of them too


@pytest.mark.parametrize(("name", "kind"), [("policies.yaml", "policy"), ("config.yaml", "config")])
def test_the_demo_files_point_editors_at_the_shipped_schemas(name: str, kind: str) -> None:
    first = (ROOT / "demo" / name).read_text(encoding="utf-8").splitlines()[0]
    assert first == f"# yaml-language-server: $schema=../schemas/{kind}.schema.json"
    assert (ROOT / "demo" / f"../schemas/{kind}.schema.json").is_file()


@pytest.mark.parametrize(("kind", "doc", "typo", "loader_says"), [
    ("policy", {"id": "a", "match": {"methdos": ["GET"]}}, "methdos",
     "unknown key 'match.methdos': did you mean 'methods'?"),
    ("policy", {"id": "a", "requre": {"scopes": ["x"]}}, "requre",
     "unknown key 'requre': did you mean 'require'?"),
    ("policy", {"id": "a", "require": {"stepup": {"max_ag\u0435": 60}}}, "max_ag\u0435",  # a Cyrillic ie
     "unknown key 'require.stepup.max_ag\u0435': did you mean 'max_age'?"),
    ("config", {"grcp": {"listen": "0.0.0.0:9001"}}, "grcp", "unknown key 'grcp': did you mean 'grpc'?"),
    ("config", {"issuers": [{"issuer": "https://idp.example.com", "audiances": ["api"]}]}, "audiances",
     "unknown key 'issuers[0].audiances': did you mean 'audiences'?"),
])
def test_a_typo_in_a_key_fails_the_schema_as_it_fails_the_loader(
    kind: str, doc: dict[str, Any], typo: str, loader_says: str
) -> None:
    # additionalProperties: false, at every level
    assert (f"Additional properties are not allowed ('{typo}' was unexpected)"
            in every_schema_error(kind, doc))
    with pytest.raises(ConfigError) as refused:
        parse_policy(doc) if kind == "policy" else settings_from_document(doc)
    assert loader_says in str(refused.value)


@pytest.mark.parametrize(("kind", "doc"), [
    ("policy", {"match": {}}),                                   # no id
    ("policy", {"id": "Admin_API"}),
    ("policy", {"id": "a", "priority": "high"}),
    ("policy", {"id": "a", "priority": 10_000_000}),
    ("policy", {"id": "a", "action": "permit"}),
    ("policy", {"id": "a", "mode": "audit"}),
    ("policy", {"id": "a", "match": {"methods": "GET"}}),
    ("policy", {"id": "a", "match": {"methods": ["DELET"]}}),
    ("policy", {"id": "a", "match": {"paths": ["/admin/"]}}),
    ("policy", {"id": "a", "require": {"authenticated": "yes"}}),
    ("policy", {"id": "a", "require": {"claims": {"groups": []}}}),
    ("policy", {"id": "a", "require": {"stepup": {"max_age": 0}}}),
    ("policy", {"id": "a", "headers": {"x-tenant": 5}}),
    ("config", {"workers": 0}),
    ("config", {"workers": "two"}),
    ("config", {"default_action": "maybe"}),
    ("config", {"token": {"leeway": -1}}),
    ("config", {"headers": {"kubernetes_impersonation": "yes"}}),
    ("config", {"issuers": [{"issuer": "https://idp"}]}),
    ("config", {"issuers": [{"issuer": "https://idp", "audiences": "api"}]}),
    ("config", {"issuers": [{"issuer": "https://idp", "audiences": ["a"], "algorithms": ["HS256"]}]}),
])
def test_a_document_the_schema_refuses_the_loader_refuses(kind: str, doc: dict[str, Any]) -> None:
    assert schema_errors(kind, doc)
    with pytest.raises(ConfigError):
        parse_policy(doc) if kind == "policy" else settings_from_document(doc)


ACCEPTED_POLICIES: list[dict[str, Any]] = [
    {"id": "a"},
    {"id": "a", "match": None, "require": None},
    {"id": "admin-api", "priority": 5, "description": "d",
     "match": {"hosts": ["api.example.com", "*.example.com"],
               "paths": [{"exact": "/healthz"}, {"prefix": "/admin/"},
                         {"regex": "^/v[0-9]+/users/[^/]+$"}],
               "methods": ["get", "POST"], "bound_only": False},
     "require": {"authenticated": True, "issuers": ["https://idp.example.com"],
                 "audiences": ["my-api"], "scopes": ["admin:write"],
                 "claims": {"groups": ["sre", "payments-admin"], "email_verified": [True],
                            "level": 3, "tenant": "acme"},
                 "stepup": {"max_age": 300}},
     "action": "deny", "mode": "dry-run", "headers": {"x-tenant": "{claims.tenant}"}},
    *bench_policies(10),
]


@pytest.mark.parametrize("doc", ACCEPTED_POLICIES, ids=lambda d: str(d.get("id")))
def test_a_policy_the_loader_accepts_the_schema_accepts(doc: dict[str, Any]) -> None:
    parse_policy(doc)
    assert schema_errors("policy", doc) == []


@pytest.mark.parametrize("doc", [
    {},
    {"grpc": None, "http": {"listen": "127.0.0.1:9100", "header_timeout": 2}, "workers": 4,
     "issuers": [{"issuer": "https://idp.example.com", "audiences": ["api"],
                  "algorithms": ["ES256"], "username_prefix": "idp:", "groups_prefix": "idp:"}],
     "token": {"cookie": "session"}, "store": {"url": "redis://127.0.0.1:6379/0"},
     "audit": {"redis_stream": True}, "admin": {"listen": None},
     "headers": {"kubernetes_impersonation": True}, "login_url": "/login?rd={rd}",
     "shutdown_grace": 2.5, "log_level": "debug"},
])
def test_a_config_the_loader_accepts_the_schema_accepts(doc: dict[str, Any]) -> None:
    settings_from_document(doc)
    assert schema_errors("config", doc) == []


def test_a_section_left_empty_in_yaml_means_its_defaults_to_both() -> None:
    doc = yaml.safe_load("grpc:\ntoken:\n")
    assert doc == {"grpc": None, "token": None}
    assert settings_from_document(doc).grpc_listen == ("0.0.0.0", 9001)
    assert schema_errors("config", doc) == []


@pytest.mark.parametrize(("resolved", "declared"), [(StepupSettings, StepupSection),
                                                    (DemoIssuerSettings, DemoIssuerSection)])
def test_a_resolved_section_has_exactly_the_declared_keys(resolved: type, declared: type) -> None:
    # The run-time form only resolves values (rp_id from http.public_url …): it adds no key.
    assert [f.name for f in dataclasses.fields(resolved)] == [
        f.name for f in dataclasses.fields(declared)]


def test_a_bad_policy_file_is_one_line_with_the_file_the_policy_and_the_key_and_exit_2(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "policies.yaml"
    bad.write_text("id: fine\n---\nid: admin-api\nmatch:\n  paths: [{prefix: /admin/}]\n"
                   "  methdos: [DELETE]\n")
    result = run_cli(None, "policy", "validate", "-f", str(bad), program=INSTALLED)
    assert result.returncode == 2
    assert result.stderr == (f"extauthz: {bad}: policy 'admin-api': unknown key "
                             "'match.methdos': did you mean 'methods'?\n")


def test_a_batch_error_names_the_policy_by_id_or_by_position() -> None:
    with pytest.raises(PolicyInvalid, match=r"^f\.yaml\[1\]: 'id' is required"):
        parse_policies([{"id": "a"}, {"match": {}}], "f.yaml")


# Keywords draft-07 reads as 2020-12 does. Editors' YAML support (yaml-language-server, VS Code
# YAML) validates with draft-07 semantics, so the published schema keeps to these.
COMMON_KEYWORDS = {"$schema", "$defs", "$ref", "title", "description", "default", "type", "enum",
                   "properties", "additionalProperties", "required", "items", "anyOf", "pattern",
                   "minimum", "maximum", "minItems"}


def _keywords(node: object, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            out.add(key)
            if key in ("properties", "$defs"):
                for sub in value.values():
                    _keywords(sub, out)
            elif key != "default":
                _keywords(value, out)
    elif isinstance(node, list):
        for item in node:
            _keywords(item, out)
    return out


@pytest.mark.parametrize("kind", ["policy", "config"])
def test_the_schema_means_the_same_to_draft_07_editors(kind: str) -> None:
    schema = document_schema(kind)
    assert _keywords(schema, set()) <= COMMON_KEYWORDS
    docs: list[object] = ([*ACCEPTED_POLICIES, {"id": "a", "match": {"methdos": []}}, {"id": "A"}]
                          if kind == "policy" else [{}, {"workers": 0}, {"grcp": {}}])
    for doc in docs:
        assert ([e.message for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
                == schema_errors(kind, doc))
