from __future__ import annotations

import re
from pathlib import Path

import pytest

from extauthz.config import env_names, load_settings, settings_from_document
from extauthz.errors import ConfigError


def test_defaults_match_the_documented_ports_and_actions() -> None:
    s = settings_from_document({})
    assert s.grpc_listen == ("0.0.0.0", 9001)
    assert s.http_listen == ("0.0.0.0", 9002)
    assert s.default_action == "deny"
    assert s.workers == 1
    assert s.token.max_bytes == 16384
    assert s.token.leeway == 30
    assert s.headers.forward_authorization is False


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"grcp": {}}, "unknown key 'grcp': did you mean 'grpc'?"),
        ({"http": {"listne": "x"}}, "unknown key 'http.listne': did you mean 'listen'?"),
        ({"default_action": "maybe"}, "'default_action' is 'maybe'; choose one of: deny"),
        ({"workers": 0}, "'workers' must be at least 1"),
        ({"workers": "two"}, "'workers' must be a whole number"),
        ({"grpc": {"listen": "9001"}}, "'grpc.listen' is '9001'; write HOST:PORT"),
        ({"issuers": [{"issuer": "https://idp"}]}, "'issuers[0].audiences' is required"),
        ({"issuers": [{"issuer": "https://idp", "audiences": "api"}]},
         "'issuers[0].audiences' must be a list of strings, got a string: write [api]"),
        ({"issuers": [{"issuer": "https://idp", "audiences": ["a"], "algorithms": ["HS256"]}]},
         "'issuers[0].algorithms' is 'HS256'; choose one of"),
        ({"issuers": [{"issuer": "https://idp", "audiences": ["a"], "algorithms": ["none"]}]},
         "'issuers[0].algorithms' is 'none'"),
        ({"issuers": [{"issuer": "idp.example.com", "audiences": ["a"]}]},
         "'issuers[0].issuer' is 'idp.example.com'; write an absolute http(s):// URL"),
        ({"issuers": [{"issuer": "https://a", "audiences": ["x"]},
                      {"issuer": "https://a", "audiences": ["y"]}]}, "listed twice"),
        ({"token": {"leeway": -1}}, "'token.leeway' must be at least 0"),
        ({"headers": {"kubernetes_impersonation": "yes"}},
         "'headers.kubernetes_impersonation' must be true or false"),
    ],
)
def test_bad_config_is_one_message_naming_the_key(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_document(doc)
    assert message in str(err.value)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("default_action: allow\nhttp: {public_url: 'http://a:1'}\nworkers: 3\n")
    env = {"EXTAUTHZ_DEFAULT_ACTION": "authenticated", "EXTAUTHZ_HTTP_PUBLIC_URL": "https://gw",
           "EXTAUTHZ_TOKEN_COOKIE": "session",
           "EXTAUTHZ_ISSUERS": '[{"issuer": "https://idp", "audiences": ["api"]}]'}
    s = load_settings(str(cfg), env)
    assert s.default_action == "authenticated"
    assert s.public_url == "https://gw"
    assert s.workers == 3
    assert s.token.cookie == "session"
    assert s.issuers[0].issuer == "https://idp"
    assert s.issuers[0].algorithms == ("RS256", "ES256", "PS256", "EdDSA")


def test_config_file_from_the_environment_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("realm: corp\n")
    assert load_settings(None, {"EXTAUTHZ_CONFIG": str(cfg)}).realm == "corp"


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="'workers' must be a whole number"):
        load_settings(None, {"EXTAUTHZ_WORKERS": "many"})


def test_missing_or_broken_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*check the --config path"):
        load_settings(str(tmp_path / "nope.yaml"), {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpc: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2:1: not valid YAML"):
        load_settings(str(bad), {})


def test_every_key_has_an_environment_variable() -> None:
    names = env_names()
    assert names["http.public_url"] == "EXTAUTHZ_HTTP_PUBLIC_URL"
    assert names["headers.kubernetes_impersonation"] == "EXTAUTHZ_HEADERS_KUBERNETES_IMPERSONATION"
    assert names["issuers"] == "EXTAUTHZ_ISSUERS"


def test_demo_issuer_joins_the_trusted_issuers() -> None:
    s = settings_from_document({"demo_issuer": {"enabled": True}, "http": {"listen": "127.0.0.1:9100"}})
    assert [i.issuer for i in s.issuers] == ["http://localhost:9100"]
    assert s.issuers[0].audiences == ("extauthz-demo",)


def test_a_misspelled_environment_variable_is_refused_with_the_closest_key() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"EXTAUTHZ_DEFAULT_ACTON": "deny"})
    assert str(err.value) == (
        "config: unknown environment variable EXTAUTHZ_DEFAULT_ACTON: did you mean "
        "EXTAUTHZ_DEFAULT_ACTION (key 'default_action')? Rename or unset it")


def test_an_environment_variable_in_the_wrong_case_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigError, match="extauthz_workers: did you mean EXTAUTHZ_WORKERS"):
        load_settings(None, {"extauthz_workers": "4"})


def test_an_environment_variable_naming_no_key_says_how_names_are_made() -> None:
    with pytest.raises(ConfigError, match="EXTAUTHZ_ZZZ: it names no key; unset it"):
        load_settings(None, {"EXTAUTHZ_ZZZ": "1"})


def test_the_config_path_and_the_supervisors_variables_are_not_keys_but_allowed(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("realm: corp\n")
    s = load_settings(None, {"EXTAUTHZ_CONFIG": str(cfg), "EXTAUTHZ_WORKER_ID": "1",
                             "EXTAUTHZ_METRICS_DIR": str(tmp_path), "PATH": "/bin"})
    assert s.realm == "corp"


def test_every_extauthz_variable_the_repository_sets_or_reads_is_a_key_or_allowed() -> None:
    import re

    from extauthz.config import CONFIG_VARIABLE, INTERNAL_VARIABLES

    root = Path(__file__).resolve().parents[1]
    allowed = set(env_names().values()) | {CONFIG_VARIABLE} | INTERNAL_VARIABLES
    files = [p for d in ("extauthz", "deploy", "envoy", "demo", "benchmarks", "scripts")
             for p in (root / d).rglob("*") if p.suffix in (".py", ".yaml", ".yml", ".sh")]
    files += [root / "Dockerfile", root / "Makefile"]
    # Where a name is used as a variable: environ.get("X") / environ["X"] / getenv("X"), a
    # dict key ("X": …, as env mappings are written), a manifest's `- name: X`, or ENV X.
    variable = re.compile(r"""(?:environ(?:\.get\(|\[)|getenv\(|name:\s*|ENV\s+)["']?"""
                          r"""(EXTAUTHZ_[A-Z0-9_]+)|["'](EXTAUTHZ_[A-Z0-9_]+)["']\s*:""")
    used = {a or b for p in files if p.is_file()
            for a, b in variable.findall(p.read_text(errors="replace"))}
    assert {"EXTAUTHZ_WORKER_ID", "EXTAUTHZ_STORE_URL"} <= used, "the scan misses known uses"
    assert used - allowed == set()


@pytest.mark.parametrize(("prefix", "message"), [
    ("content-", "'headers.prefix' is 'content-'; write x-NAME-"),
    ("c", "'headers.prefix' is 'c'; write x-NAME-"),
    ("cookie-", "'headers.prefix' is 'cookie-'; write x-NAME-"),
    ("x-auth", "'headers.prefix' is 'x-auth'; write x-NAME-"),
    ("x-", "'headers.prefix' is 'x-'; write x-NAME-"),
    ("x--auth-", "write x-NAME-"),
    ("x-forwarded-", "would remove the x-forwarded-for header from every request"),
    ("X-Forwarded-", "would remove the x-forwarded-for header from every request"),
    ("x-request-", "would remove the x-request-id header from every request"),
    ("x-real-", "would remove the x-real-ip header from every request"),
    ("x-b3-", "would remove the x-b3-traceid header"),
    ("x-envoy-auth-", "overlaps the x-envoy-* headers"),
    ("x-forwarded-user-", "overlaps the x-forwarded-* headers"),
    ("x-remote-", "would remove the x-remote-user header"),
    ("x-amz-auth-", "overlaps the x-amz-* headers"),
])
def test_a_header_prefix_that_would_strip_other_headers_is_refused(prefix: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_from_document({"headers": {"prefix": prefix}})


@pytest.mark.parametrize("prefix", ["x-auth-", "x-user-", "X-Corp-Id-", "x-my-gw2-"])
def test_an_x_name_header_prefix_is_accepted_in_lower_case(prefix: str) -> None:
    assert settings_from_document({"headers": {"prefix": prefix}}).headers.prefix == prefix.lower()


def _one_issuer(**entry: object) -> dict[str, object]:
    return {"issuers": [{"audiences": ["api"], **entry}]}


@pytest.mark.parametrize(("entry", "message"), [
    ({"issuer": "https://idp.example.com", "jwks_uri": "http://idp.example.com/jwks"},
     "'issuers[0].jwks_uri' 'http://idp.example.com/jwks' is plain http for an https issuer"),
    ({"issuer": "https://localhost:8443", "jwks_uri": "http://localhost:8080/jwks"},
     "'issuers[0].jwks_uri' 'http://localhost:8080/jwks' is plain http for an https issuer"),
    ({"issuer": "http://idp.example.com"},
     "'issuers[0].issuer' 'http://idp.example.com' is plain http on a host that is not this "
     "machine"),
    ({"issuer": "http://10.0.0.7:8080"}, "is plain http on a host that is not this machine"),
    ({"issuer": "http://127.0.0.1:8080", "jwks_uri": "http://keys.example.com/jwks"},
     "'issuers[0].jwks_uri' 'http://keys.example.com/jwks' is plain http on a host that is not"),
])
def test_keys_over_plain_http_from_another_host_are_refused(
    entry: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_from_document(_one_issuer(**entry))


@pytest.mark.parametrize("entry", [
    {"issuer": "https://idp.example.com", "jwks_uri": "https://keys.example.com/jwks"},
    {"issuer": "http://127.0.0.1:8080", "jwks_uri": "http://127.0.0.1:8080/jwks"},
    {"issuer": "http://localhost:8080"},
    {"issuer": "http://[::1]:8080"},
    {"issuer": "http://idp.localhost:8080"},
])
def test_https_and_loopback_issuers_need_no_opt_in(entry: dict[str, object]) -> None:
    [issuer] = settings_from_document(_one_issuer(**entry)).issuers
    assert issuer.insecure_http is False


def test_plain_http_keys_need_the_per_issuer_opt_in_which_is_reported() -> None:
    from extauthz.config import insecure_settings

    s = settings_from_document(_one_issuer(issuer="https://idp.example.com",
                                           jwks_uri="http://idp.example.com/jwks",
                                           insecure_http=True))
    assert s.issuers[0].insecure_http is True
    [warning] = insecure_settings(s)
    assert warning.startswith("issuers[0].insecure_http is on: the keys of "
                              "'https://idp.example.com' may come over plain http")


def _impersonating(**issuer: object) -> dict[str, object]:
    return {"headers": {"kubernetes_impersonation": True},
            "issuers": [{"issuer": "https://idp.example.com", "audiences": ["kubernetes"],
                         **issuer}]}


@pytest.mark.parametrize(("issuer", "message"), [
    ({}, "'issuers[0].username_prefix' is empty, but headers.kubernetes_impersonation is on"),
    ({"username_prefix": "idp:"},
     "'issuers[0].groups_prefix' is empty, but headers.kubernetes_impersonation is on"),
    ({"username_prefix": "system:idp:", "groups_prefix": "idp:"},
     "'issuers[0].username_prefix' is 'system:idp:', which can make names in the apiserver's "
     "reserved system: namespace"),
    ({"username_prefix": "idp:", "groups_prefix": "sys"},
     "'issuers[0].groups_prefix' is 'sys', which can make names"),
    ({"username_prefix": "idp:", "groups_prefix": "system"}, "'issuers[0].groups_prefix' is 'system'"),
])
def test_impersonation_needs_a_non_system_prefix_on_every_issuer(
    issuer: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_from_document(_impersonating(**issuer))


def test_impersonation_with_prefixed_issuers_is_accepted() -> None:
    s = settings_from_document(_impersonating(username_prefix="idp:", groups_prefix="idp:"))
    assert s.headers.kubernetes_impersonation is True


def test_the_demo_issuer_is_prefixed_and_an_empty_demo_prefix_blocks_impersonation() -> None:
    doc = {"demo_issuer": {"enabled": True}, "http": {"listen": "127.0.0.1:9100"}}
    [demo] = settings_from_document(doc).issuers
    assert (demo.username_prefix, demo.groups_prefix) == ("demo:", "demo:")
    with pytest.raises(ConfigError, match=re.escape("'demo_issuer.groups_prefix' is empty")):
        settings_from_document({**doc, "headers": {"kubernetes_impersonation": True},
                                "demo_issuer": {"enabled": True, "groups_prefix": ""}})


@pytest.mark.parametrize(("http", "demo", "message"), [
    ({"public_url": "https://app.example.com", "listen": "127.0.0.1:9002"}, {},
     "'demo_issuer.enabled' is on but http.public_url 'https://app.example.com' is not on this "
     "machine"),
    ({"listen": "0.0.0.0:9002"}, {}, "but http.listen '0.0.0.0' is not on this machine"),
    ({"listen": "[::]:9002"}, {}, "but http.listen '::' is not on this machine"),
    ({"listen": "127.0.0.1:9002"}, {"issuer": "http://demo.example.com:9002"},
     "but demo_issuer.issuer 'http://demo.example.com:9002' is not on this machine"),
])
def test_the_demo_issuer_refuses_to_run_beyond_this_machine(
    http: dict[str, str], demo: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        settings_from_document({"http": http, "demo_issuer": {"enabled": True, **demo}})
    assert "set demo_issuer.allow_non_local: true" in str(err.value)


@pytest.mark.parametrize("http", [
    {"public_url": "http://localhost:8000", "listen": "127.0.0.1:9002"},
    {"public_url": "http://127.0.0.1:8000", "listen": "localhost:9002"},
    {"public_url": "http://app.localhost:8000", "listen": "[::1]:9002"},
])
def test_the_demo_issuer_runs_on_this_machine_and_is_reported_unsafe(http: dict[str, str]) -> None:
    from extauthz.config import insecure_settings

    s = settings_from_document({"http": http, "demo_issuer": {"enabled": True}})
    assert s.demo_issuer.enabled
    assert insecure_settings(s) == ("demo_issuer.enabled is on: anyone who reaches "
                                    "/.extauthz/demo/login signs in as anyone, with any groups",)


def test_the_demo_issuer_beyond_this_machine_needs_the_opt_in_which_is_reported() -> None:
    from extauthz.config import insecure_settings

    s = load_settings(None, {"EXTAUTHZ_DEMO_ISSUER_ENABLED": "true",
                             "EXTAUTHZ_DEMO_ISSUER_ALLOW_NON_LOCAL": "true",
                             "EXTAUTHZ_HTTP_PUBLIC_URL": "https://demo.example.com"})
    assert s.demo_issuer.allow_non_local is True
    [warning] = insecure_settings(s)
    assert warning.endswith("with any groups (allow_non_local: from other machines too)")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_infinity_for_a_number_is_refused(value: float) -> None:
    # Before: shutdown_grace: .nan passed every bound check (NaN compares false) and started.
    with pytest.raises(ConfigError, match="'shutdown_grace' must be a finite number"):
        settings_from_document({"shutdown_grace": value})


def test_a_section_given_as_null_is_its_defaults() -> None:
    s = settings_from_document({"grpc": None, "token": None, "stepup": None})
    assert s.grpc_listen == ("0.0.0.0", 9001)
    assert s.token.leeway == 30


def test_a_list_item_of_the_wrong_type_is_named_by_its_index() -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_document({"issuers": [{"issuer": "https://idp", "audiences": ["api", 7]}]})
    assert str(err.value) == "config: 'issuers[0].audiences[1]' must be a string, got a number"


def test_a_document_that_is_not_a_mapping_is_one_error_not_a_traceback() -> None:
    with pytest.raises(ConfigError, match="the document must be a mapping of keys, got a list"):
        settings_from_document(["grpc"])  # type: ignore[arg-type]


def test_broken_yaml_in_the_config_file_is_one_line_with_the_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpc: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_settings(str(bad), {})
    # PyYAML's C parser (libyaml) and its Python one word the problem differently
    assert str(err.value).startswith(f"config: {bad}:2:1: not valid YAML: while parsing a flow "
                                     "sequence: ")
    assert "expected ',' or ']'" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_text_key_takes_its_variable_as_written_and_null_only_where_it_may_be_null() -> None:
    s = load_settings(None, {"EXTAUTHZ_REALM": "null", "EXTAUTHZ_TOKEN_COOKIE": "null",
                             "EXTAUTHZ_DEFAULT_ACTION": "allow", "EXTAUTHZ_WORKERS": "3"})
    assert (s.realm, s.token.cookie, s.default_action, s.workers) == ("null", None, "allow", 3)
