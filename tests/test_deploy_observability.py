"""The Grafana dashboard and the PrometheusRule ask only for series a live extauthz exports:
a service with Redis and two workers takes allowed, denied and bad-token checks and a failed
step-up, loses its Redis data (so the store-refused series exists too), and every metric name
in a panel or alert expression must be among the sample names its /metrics then lists. The
dashboard is importable as Grafana expects it, and every alert has a runbook section."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import promql_parser
import pytest
import yaml
from envoy_data_plane.envoy.service.auth.v3 import CheckResponse
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import run_cli
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.poll import until
from tests.support.redis import RedisServer
from tests.support.requests import CHECK, bearer, check_request
from tests.support.stack import ORIGIN, ExtAuthz, post_json

ROOT = Path(__file__).resolve().parents[1]
OBSERVABILITY = ROOT / "deploy" / "observability"
DASHBOARD = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
RULES = yaml.safe_load((OBSERVABILITY / "prometheusrule.yaml").read_text())
RUNBOOK = (OBSERVABILITY / "RUNBOOK.md").read_text()

# --- metric names in PromQL ------------------------------------------------------------------

KEYWORDS = {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_IDENTIFIER = re.compile(r"(?<![\w:.$])[A-Za-z_:][\w:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers followed by a selector `{`, a
    range `[`, or standing alone as a function's argument or an operand, once strings, label
    matchers, ranges, grouping clauses, Grafana variables, functions and keywords are set aside."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _RANGE.sub("[]", text)
    text = _GROUPING.sub(" ", text)
    text = _VARIABLE.sub("", text)
    names = set()
    for m in _IDENTIFIER.finditer(text):
        if text[m.end():].lstrip().startswith("(") or m.group() in KEYWORDS:
            continue  # a function, or an operator word
        names.add(m.group())
    return names


def dashboard_expressions() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in DASHBOARD["panels"]
            for target in panel.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in RULES["spec"]["groups"] for r in g["rules"] if "alert" in r]


def rule_expressions() -> list[tuple[str, str]]:
    return [(r.get("alert") or r["record"], r["expr"])
            for g in RULES["spec"]["groups"] for r in g["rules"]]


RECORDED = {r["record"] for g in RULES["spec"]["groups"] for r in g["rules"] if "record" in r}


def test_the_promql_reader_finds_every_metric_and_nothing_else() -> None:
    expr = ('sum by (decision, reason) (rate(extauthz_checks_total{namespace=~"$namespace", '
            'reason=~"a|b"}[$__rate_interval])) / on (pod) group_left '
            "max without (worker) (extauthz_policy_snapshot_age_seconds) > 3 * "
            "(histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m] offset 1d)))) and "
            "extauthz:deny_ratio:rate5m unless absent(up)")
    assert metric_names(expr) == {"extauthz_checks_total", "extauthz_policy_snapshot_age_seconds",
                                  "x_bucket", "extauthz:deny_ratio:rate5m", "up"}


def parsed_names(expr: str) -> set[str]:
    """The same names from a real PromQL parser (Grafana's variables given values first)."""
    text = expr.replace("$__rate_interval", "5m").replace("$namespace", ".*")
    found: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            found.add(node.name)
    promql_parser.walk(promql_parser.parse(text), visit)
    return found


@pytest.mark.parametrize(("where", "expr"), dashboard_expressions() + rule_expressions())
def test_every_expression_parses_as_promql_and_the_reader_agrees_with_the_parser(
    where: str, expr: str,
) -> None:
    assert metric_names(expr) == parsed_names(expr)


# --- a live service ---------------------------------------------------------------------------

POLICY = {"id": "admin", "match": {"hosts": ["api.example.com"], "paths": [{"prefix": "/admin/"}]},
          "require": {"claims": {"groups": ["sre"]}}}


def ask(channel: grpc.Channel, token: str | None, path: str = "/") -> int:
    resp = CheckResponse.parse(channel.unary_unary(CHECK)(check_request(bearer(token), path=path),
                                                          timeout=5))
    assert resp.status is not None
    if resp.status.code == 0:
        return 200
    assert resp.denied_response is not None
    assert resp.denied_response.status is not None
    return int(resp.denied_response.status.code)


def sample_names(service: ExtAuthz) -> set[str]:
    text = service.admin("/metrics").body.decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """The sample names of a live service's /metrics after every kind of traffic."""
    work = tmp_path_factory.mktemp("observed")
    idp = LocalIssuer()
    redis = RedisServer(work / "redis").start()
    store = {"url": redis.url, "prefix": "obs:", "poll_interval": 0.2}
    issuers = [{"issuer": idp.issuer, "audiences": [AUDIENCE]}]
    cli_config = work / "cli.yaml"
    cli_config.write_text(yaml.safe_dump({"store": store, "issuers": issuers}))
    service = ExtAuthz(work, {"issuers": issuers, "store": store,
                              "default_action": "authenticated"}, args=["--workers", "2"])
    try:
        applied = run_cli(cli_config, "policy", "apply", "-f", "-", stdin=yaml.safe_dump(POLICY))
        assert applied.returncode == 0, applied.stderr
        service.start()
        alice = idp.mint("ES256", sub="alice", groups=["sre"])
        bob = idp.mint("ES256", sub="bob", groups=["dev"])
        for _ in range(4):  # new connections: the kernel spreads them over both workers
            with grpc.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
                assert ask(channel, alice, "/admin/users") == 200
                assert ask(channel, bob, "/admin/users") == 403
                assert ask(channel, None) == 401
                assert ask(channel, "not.a.token") == 401
        # a step-up ceremony that fails (no ceremony was begun) is counted by its outcome
        finish = post_json(f"http://127.0.0.1:{service.http_port}/.extauthz/stepup/finish", {},
                           headers={"origin": ORIGIN, **bearer(alice)})
        assert finish.status >= 400
        redis.client().flushall()  # the store lost its data: the workers refuse it, and say so

        def all_seen() -> bool:
            names = sample_names(service)
            return {"extauthz_store_refused", "extauthz_stepup_ceremonies_total"} <= names
        until(all_seen, timeout=15)
        yield sample_names(service)
    finally:
        service.stop()
        redis.stop()
        idp.close()


def test_every_dashboard_panel_asks_for_series_the_service_exports(exported: set[str]) -> None:
    asked = {name: title for title, expr in dashboard_expressions() for name in metric_names(expr)}
    assert len(asked) >= 10  # the reader found the dashboard's metrics
    missing = {name: title for name, title in asked.items() if name not in exported}
    assert missing == {}, f"not exported: {missing}; exported: {sorted(exported)}"


def test_every_alert_and_recording_rule_asks_for_series_the_service_exports(
    exported: set[str],
) -> None:
    asked = {name: rule for rule, expr in rule_expressions() for name in metric_names(expr)}
    assert len(asked) >= 8
    missing = {name: rule for name, rule in asked.items()
               if name not in exported and name not in RECORDED}
    assert missing == {}, f"not exported: {missing}; exported: {sorted(exported)}"


def test_the_dashboard_variable_asks_for_an_exported_series(exported: set[str]) -> None:
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            metric = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query)
            assert metric, query
            assert metric.group(1) in exported


def test_a_metric_the_service_does_not_export_is_caught(exported: set[str]) -> None:
    names = metric_names("sum(rate(extauthz_worker_restarts_total[5m])) + "
                         "kube_pod_container_status_restarts_total")
    assert names - exported == names


# --- what each covers ----------------------------------------------------------------------

def test_the_dashboard_shows_what_an_operator_watches() -> None:
    text = " ".join(expr for _, expr in dashboard_expressions())
    for shown in ("extauthz_checks_total", "histogram_quantile(0.5", "histogram_quantile(0.99",
                  "extauthz_policy_snapshot_age_seconds", "extauthz_revocation_snapshot_age_seconds",
                  'extauthz_jwks_fetches_total{namespace=~"$namespace", result="error"}',
                  "extauthz_stepup_ceremonies_total", "extauthz_worker_start_time_seconds",
                  "extauthz_store_errors_total"):
        assert shown in text, shown
    by_title = {p["title"]: p for p in DASHBOARD["panels"]}
    reasons = by_title["Decisions/s by reason"]["targets"][0]["expr"]
    assert reasons.startswith("sum by (decision, reason) (")


def test_the_dashboard_imports_with_a_datasource_variable() -> None:
    [source] = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"]
    assert (source["name"], source["query"]) == ("datasource", "prometheus")
    assert "__inputs" not in DASHBOARD  # nothing to map at import: the variable picks it
    assert DASHBOARD["uid"] == "extauthz"
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    # no two panels overlap on Grafana's 24-column grid
    cells = [(p["gridPos"]["x"] + dx, p["gridPos"]["y"] + dy) for p in DASHBOARD["panels"]
             for dx in range(p["gridPos"]["w"]) for dy in range(p["gridPos"]["h"])]
    assert len(cells) == len(set(cells))


def test_the_alerts_an_on_call_wants_are_there_with_runbooks() -> None:
    alerts = {r["alert"]: r for r in alert_rules()}
    for wanted in ("ExtauthzDenyRatioSpike", "ExtauthzUnavailableDecisions", "ExtauthzPoliciesStale",
                   "ExtauthzRevocationsStale", "ExtauthzJwksFailing", "ExtauthzCheckLatencyHigh"):
        assert wanted in alerts, wanted
    sections = {h.strip() for h in re.findall(r"^## (.+)$", RUNBOOK, re.M)}
    for name, rule in alerts.items():
        notes = rule["annotations"]
        assert notes["summary"]
        assert notes["description"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert notes["runbook_url"].endswith(f"deploy/observability/RUNBOOK.md#{name.lower()}")
        assert name in sections, f"RUNBOOK.md has no section for {name}"
    assert set(alerts) == sections
    budget = alerts["ExtauthzCheckLatencyHigh"]["expr"]
    assert re.search(r"> 0\.0\d+$", budget.strip())
    stale = alerts["ExtauthzPoliciesStale"]["expr"]
    assert re.search(r"extauthz_policy_snapshot_age_seconds\) > \d+$", stale.strip())


# --- worker restarts -----------------------------------------------------------------------

def test_a_restarted_worker_shows_a_new_start_time(tmp_path: Path, issuer: LocalIssuer) -> None:
    service = ExtAuthz(tmp_path, {"issuers": [{"issuer": issuer.issuer, "audiences": [AUDIENCE]}],
                                  "default_action": "authenticated"},
                       args=["--workers", "2"]).start()

    def start_times() -> dict[str, float]:
        text = service.admin("/metrics").body.decode()
        return {s.labels["worker"]: s.value for f in text_string_to_metric_families(text)
                for s in f.samples if s.name == "extauthz_worker_start_time_seconds"}
    try:
        until(lambda: len(start_times()) == 2, timeout=15)
        before = start_times()
        assert service.process is not None
        assert service.process.proc is not None
        children = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat")
                    if _parent(p) == service.process.proc.pid]
        assert len(children) == 2
        os.kill(children[0], signal.SIGKILL)  # the OOM killer, say
        time.sleep(0.2)

        def restarted() -> bool:
            now = start_times()
            return len(now) == 2 and sum(now[w] > before[w] for w in before) == 1
        until(restarted, timeout=20)
    finally:
        service.stop()


def _parent(stat: Path) -> int:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1
