"""docs/OPERATE.md names only metrics the service exports, and the README links it (issue 16).

A name counts as exported when a live service's /metrics shows it here (a dry-run denial and
a JWKS fetch included), or when the alerts or the dashboard use it: those are checked against
a live service under every kind of traffic by tests/test_deploy_observability.py."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.requests import CHECK, check_request
from tests.support.stack import ExtAuthz

ROOT = Path(__file__).resolve().parents[1]
OPERATE = ROOT / "docs" / "OPERATE.md"
NAME = re.compile(r"\bextauthz_[a-z_]+[a-z]\b")
TRIAL = "id: trial\nmatch: {paths: [{prefix: /trial/}]}\nmode: dry-run\n"


def _live_names(tmp_path: Path, idp: LocalIssuer) -> set[str]:
    (tmp_path / "policies.yaml").write_text(TRIAL)
    service = ExtAuthz(tmp_path, {
        "issuers": [{"issuer": idp.issuer, "audiences": [AUDIENCE]}],
        "store": {"url": f"file://{tmp_path}/policies.yaml"}}).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
            channel.unary_unary(CHECK)(check_request({}, path="/trial/x"), timeout=5)
        text = service.admin("/metrics").body.decode()
    finally:
        service.stop()
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_every_metric_the_operate_page_names_is_exported(tmp_path: Path, idp: LocalIssuer) -> None:
    named = set(NAME.findall(OPERATE.read_text()))
    assert "extauthz_store_refused" in named  # the reader finds names
    observability = ROOT / "deploy" / "observability"
    checked = set(NAME.findall((observability / "prometheusrule.yaml").read_text()
                               + (observability / "grafana-dashboard.json").read_text()))
    live = _live_names(tmp_path, idp)
    assert "extauthz_dry_run_denials_total" in live
    assert sorted(named - live - checked) == []


def test_the_readme_links_the_operate_page_and_the_install_section_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/OPERATE.md)" in readme
    assert "\n## Install\n" in readme
    for heading in ("## Upgrade", "## Rotate the step-up key", "## Back up Redis",
                    "## What to alert on"):
        assert f"\n{heading}\n" in OPERATE.read_text()
