"""The Helm chart (deploy/helm/extauthz) is rendered by Helm itself, offline: helm-python-sdk
binds Helm's Go SDK (the library `helm template` runs). With its default values it renders what
`kubectl kustomize deploy/base` renders, and with values-production.yaml what the production
overlay renders, up to Helm's labels and names; every object validates as the kustomize ones
do, and the release name reaches every name and selector."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.test_deploy_kustomize import CORE_API, KUBERNETES, SCHEMAS, render, validate_crd

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "extauthz"
PRODUCTION = yaml.safe_load((CHART / "values-production.yaml").read_text())
# Labels one packaging adds and the other does not; selectors still agree without them.
PACKAGING_LABELS = {"app.kubernetes.io/instance", "app.kubernetes.io/part-of",
                    "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"}
Objects = tuple[dict[str, Any], ...]


@functools.cache
def _render(values: str, name: str, namespace: str) -> Objects:
    with helm_python.Chart.load(CHART) as chart:
        manifests = chart.render(yaml.safe_load(values), name=name, namespace=namespace)
    return tuple(d for text in manifests.values() for d in yaml.safe_load_all(text) if d)


def helm(values: dict[str, Any] | None = None, *, name: str = "extauthz",
         namespace: str = "extauthz") -> Objects:
    return _render(yaml.safe_dump(values or {}), name, namespace)


def comparable(objects: Objects) -> dict[tuple[str, str], Any]:
    """Each object with what differs by packaging alone set aside: its own labels, the
    packaging labels in selectors, the config ConfigMap's name (kustomize adds a hash of its
    content, Helm a checksum annotation to the pods) and the config's text layout."""
    config_names = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"
                    and "config.yaml" in o.get("data", {})}
    result = {}
    for original in objects:
        if original["kind"] == "Namespace":
            continue  # Helm installs into a namespace it is given (--create-namespace)
        obj = copy.deepcopy(original)
        obj["metadata"].pop("labels", None)
        if obj["metadata"]["name"] in config_names:
            obj["metadata"]["name"] = "CONFIG"
            obj["data"]["config.yaml"] = yaml.safe_load(obj["data"]["config.yaml"])
        _strip(obj, config_names)
        result[(obj["kind"], obj["metadata"]["name"])] = obj
    return result


def _strip(node: Any, config_names: set[str]) -> None:
    if isinstance(node, dict):
        for key in ("matchLabels", "labels", "selector"):  # a Service's selector is a label map
            if isinstance(node.get(key), dict) and not {"matchLabels", "matchExpressions"} & set(
                    node[key]):
                node[key] = {k: v for k, v in node[key].items() if k not in PACKAGING_LABELS}
        if isinstance(node.get("topologySpreadConstraints"), list):  # a merge patch reorders them
            node["topologySpreadConstraints"].sort(key=lambda c: c["topologyKey"])
        if isinstance(node.get("annotations"), dict):
            node["annotations"].pop("checksum/config", None)
        if isinstance(node.get("configMap"), dict) and node["configMap"].get("name") in config_names:
            node["configMap"]["name"] = "CONFIG"
        node.pop("imagePullPolicy", None)  # the chart exposes it; the base leaves the default
        for value in node.values():
            _strip(value, config_names)
    elif isinstance(node, list):
        for value in node:
            _strip(value, config_names)


def test_the_chart_lints_without_a_warning() -> None:
    report = helm_python.lint(str(CHART))
    assert report["errors"] == []
    # severity 1 is INFO (only "icon is recommended"); 2 WARNING, 3 ERROR
    assert all(m["severity"] <= 1 for m in report["messages"]), report["messages"]
    report = helm_python.lint(str(CHART), values=PRODUCTION)
    assert report["errors"] == []


def test_the_default_values_render_what_the_base_renders() -> None:
    assert comparable(helm()) == comparable(render("base"))


def test_the_production_values_render_what_the_production_overlay_renders() -> None:
    assert comparable(helm(PRODUCTION)) == comparable(render("overlays/production"))
    [dashboard] = [o for o in helm(PRODUCTION) if o["kind"] == "ConfigMap"
                   and "grafana-dashboard.json" in o["data"]]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"  # Grafana's sidecar finds it


@pytest.mark.parametrize("values", [{}, PRODUCTION], ids=["default", "production"])
def test_every_rendered_object_validates(values: dict[str, Any]) -> None:
    for obj in helm(values):
        if obj["apiVersion"] in CORE_API:
            kubernetes_validate.validate(obj, desired_version=KUBERNETES, strict=True)
        else:
            group, version = obj["apiVersion"].split("/")
            validate_crd(obj["spec"], SCHEMAS[(group, version, obj["kind"])])


def test_the_release_name_reaches_every_name_and_selector() -> None:
    objects = {o["kind"]: o for o in helm(PRODUCTION, name="authz", namespace="security")
               if o["kind"] != "ConfigMap"}
    configmaps = [o for o in helm(PRODUCTION, name="authz", namespace="security")
                  if o["kind"] == "ConfigMap"]
    selector = {"app.kubernetes.io/name": "extauthz", "app.kubernetes.io/instance": "authz"}
    for obj in [*objects.values(), *configmaps]:
        assert obj["metadata"]["namespace"] == "security"
        assert obj["metadata"]["name"].startswith("authz-extauthz")
    deployment = objects["Deployment"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"] == selector
    assert pod["metadata"]["labels"] == selector
    for kind in ("PodDisruptionBudget", "PodMonitor"):
        assert objects[kind]["spec"]["selector"]["matchLabels"] == selector
    assert objects["Service"]["spec"]["selector"] == selector
    assert objects["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"] == selector
    assert objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == "authz-extauthz"
    assert pod["spec"]["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] in {c["metadata"]["name"] for c in configmaps}


def test_a_config_change_rolls_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        [deployment] = [o for o in helm(values) if o["kind"] == "Deployment"]
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])
    changed = {"config": {**helm_python.Chart.load(CHART).values["config"], "workers": 4}}
    assert checksum({}) != checksum(changed)
    assert checksum({}) == checksum({"replicaCount": 5})


def test_the_chart_reads_the_alerts_and_dashboard_from_deploy_observability() -> None:
    for name in ("prometheusrule.yaml", "grafana-dashboard.json"):
        link = CHART / "files" / name
        assert link.is_symlink()
        assert link.resolve() == (ROOT / "deploy" / "observability" / name).resolve()
