"""Start-up refusals as an operator meets them: the installed ``extauthz serve`` exits 2 with
one line naming the key or variable and the fix, never a traceback, and never serves."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.support.cli import INSTALLED, refused, run_cli
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.ports import free_port
from tests.support.stack import ExtAuthz, http_get


def serve(tmp_path: Path, config: dict[str, object] | None = None,
          env: dict[str, str] | None = None, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``extauthz serve`` on free loopback ports; a config that starts would be
    killed by the timeout, so every caller here expects a refusal."""
    cfg = None
    if config is not None:
        cfg = tmp_path / "extauthz.yaml"
        cfg.write_text(yaml.safe_dump({"store": {"state_file": str(tmp_path / "state.json")},
                                       **config}))
    return run_cli(cfg, "serve", "--grpc-listen", f"127.0.0.1:{free_port()}",
                   "--http-listen", f"127.0.0.1:{free_port()}",
                   "--check-http-listen", f"127.0.0.1:{free_port()}", *args, env=env,
                   program=INSTALLED, timeout=30, cwd=tmp_path)


def test_a_misspelled_environment_variable_stops_the_installed_serve(tmp_path: Path) -> None:
    line = refused(serve(tmp_path, env={"EXTAUTHZ_DEFAULT_ACTON": "deny"}))
    assert line == ("extauthz: config: unknown environment variable EXTAUTHZ_DEFAULT_ACTON: "
                    "did you mean EXTAUTHZ_DEFAULT_ACTION (key 'default_action')? "
                    "Rename or unset it")


def test_a_header_prefix_that_would_strip_content_type_stops_the_start(tmp_path: Path) -> None:
    line = refused(serve(tmp_path, env={"EXTAUTHZ_HEADERS_PREFIX": "content-"}))
    assert line.startswith("extauthz: config: 'headers.prefix' is 'content-'; write x-NAME-")


def test_a_header_prefix_inside_x_forwarded_stops_the_start(tmp_path: Path) -> None:
    line = refused(serve(tmp_path, {"headers": {"prefix": "x-forwarded-"}}))
    assert line == ("extauthz: config: 'headers.prefix' 'x-forwarded-' would remove the "
                    "x-forwarded-for header from every request; choose another, e.g. x-auth-")


def test_an_http_jwks_uri_for_an_https_issuer_stops_the_start(tmp_path: Path) -> None:
    line = refused(serve(tmp_path, {"issuers": [{
        "issuer": "https://idp.example.com", "audiences": ["api"],
        "jwks_uri": "http://idp.example.com/jwks"}]}))
    assert line.startswith("extauthz: config: 'issuers[0].jwks_uri' 'http://idp.example.com/jwks' "
                           "is plain http for an https issuer")


def test_a_plain_http_issuer_on_another_host_stops_the_start(tmp_path: Path) -> None:
    line = refused(serve(tmp_path, env={
        "EXTAUTHZ_ISSUERS": '[{issuer: "http://idp.example.com", audiences: [api]}]'}))
    assert line.startswith("extauthz: config: 'issuers[0].issuer' 'http://idp.example.com' is "
                           "plain http on a host that is not this machine")
    assert "set issuers[0].insecure_http: true" in line


def test_the_plain_http_opt_in_is_logged_as_an_error_and_shown_in_readyz(
    tmp_path: Path, idp: LocalIssuer
) -> None:
    service = ExtAuthz(tmp_path, {"issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE],
                                               "insecure_http": True}]}).start()
    try:
        ready = http_get(f"http://127.0.0.1:{service.admin_port}/readyz")  # details: admin
        assert ready.status == 200
        assert b"; UNSAFE: issuers[0].insecure_http is on" in ready.body
    finally:
        service.stop()
    assert service.process is not None
    log = service.process.log_path.read_text()
    assert "ERROR extauthz.server[" in log
    assert (f"UNSAFE: issuers[0].insecure_http is on: the keys of '{idp.issuer}' may come over "
            "plain http") in log


def test_impersonation_with_unprefixed_issuer_names_stops_the_start(tmp_path: Path) -> None:
    line = refused(serve(tmp_path, {
        "issuers": [{"issuer": "https://idp.example.com", "audiences": ["kubernetes"]}],
        "headers": {"kubernetes_impersonation": True}}))
    assert line.startswith("extauthz: config: 'issuers[0].username_prefix' is empty, but "
                           "headers.kubernetes_impersonation is on (a token's system:masters "
                           "group would become cluster-admin)")


def test_the_demo_issuer_with_a_public_url_elsewhere_stops_the_start(tmp_path: Path) -> None:
    line = refused(serve(tmp_path, {"demo_issuer": {"enabled": True, "key_file": str(tmp_path / "k.pem")},
                                    "http": {"public_url": "https://app.example.com"}}))
    assert line.startswith("extauthz: config: 'demo_issuer.enabled' is on but http.public_url "
                           "'https://app.example.com' is not on this machine")
    assert line.endswith("turn demo_issuer off, or set demo_issuer.allow_non_local: true for a "
                         "throwaway demo")
    assert not (tmp_path / "k.pem").exists()  # refused before anything was made


def test_broken_yaml_in_the_config_file_stops_the_start_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("grpc: {listen: 127.0.0.1:9001\nworkers: 2\n")
    line = refused(serve(tmp_path, None, None, "--config", str(cfg)))
    assert line.startswith(f"extauthz: config: {cfg}:2:8: not valid YAML: while parsing a flow "
                           "mapping: ")  # FILE:LINE:COLUMN, as a compiler says it


def test_an_unknown_key_in_the_config_file_stops_the_start_with_the_closest_key(
    tmp_path: Path,
) -> None:
    line = refused(serve(tmp_path, {"token": {"leway": 60}}))
    assert line == "extauthz: config: unknown key 'token.leway': did you mean 'leeway'?"
