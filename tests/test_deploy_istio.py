"""Every file in istio/ parses and validates, and the pieces agree with each other and
with the service's defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from extauthz.config import load_settings

ISTIO = Path(__file__).resolve().parents[1] / "istio"
FILES = sorted(p for p in ISTIO.rglob("*.yaml"))
DOCS = [(p, d) for p in FILES for d in yaml.safe_load_all(p.read_text()) if d]
K8S_GROUPS = ("v1", "apps/v1", "policy/v1")
SCHEMAS = {(s["group"], s["version"], s["kind"]): s["openAPIV3Schema"] for s in
           (json.loads(f.read_text()) for f in (ISTIO / "schemas").glob("*.json"))}


def objects(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in DOCS if isinstance(d, dict) and d.get("kind") == kind]


def test_every_manifest_parses_and_there_is_each_kind() -> None:
    kinds = {d.get("kind") for _, d in DOCS if isinstance(d, dict)}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "ServiceAccount",
            "Namespace", "AuthorizationPolicy", "VirtualService", "IstioOperator",
            "Kustomization"} <= kinds


@pytest.mark.parametrize(("path", "doc"), [(p, d) for p, d in DOCS
                                           if isinstance(d, dict) and d.get("apiVersion") in K8S_GROUPS],
                         ids=lambda v: v.name if isinstance(v, Path) else v.get("kind", "?"))
def test_kubernetes_objects_validate_strictly(path: Path, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, desired_version=kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize(("path", "doc"), [(p, d) for p, d in DOCS if isinstance(d, dict)
                                           and str(d.get("apiVersion", "")).endswith("istio.io/v1")],
                         ids=lambda v: v.name if isinstance(v, Path) else v.get("kind", "?"))
def test_istio_objects_validate_against_the_published_crd_schemas(path: Path, doc: dict[str, Any]) -> None:
    group = doc["apiVersion"].split("/")[0]
    schema = SCHEMAS[(group, "v1", doc["kind"])]
    jsonschema.validate(doc["spec"], schema["properties"]["spec"])


def test_the_crd_schema_check_can_fail() -> None:
    schema = SCHEMAS[("security.istio.io", "v1", "AuthorizationPolicy")]["properties"]["spec"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"action": "MAYBE"}, schema)


def test_kustomization_lists_files_that_exist_and_leaves_secrets_out() -> None:
    [kust] = objects("Kustomization")
    for resource in kust["resources"]:
        assert (ISTIO / resource).is_file(), resource
    assert "secrets.example.yaml" not in kust["resources"]


def test_every_custom_policy_names_the_provider_the_mesh_registers() -> None:
    [operator] = objects("IstioOperator")
    helm = yaml.safe_load((ISTIO / "mesh" / "helm-values.yaml").read_text())
    providers = operator["spec"]["meshConfig"]["extensionProviders"]
    assert providers == helm["meshConfig"]["extensionProviders"]
    names = {p["name"] for p in providers}
    policies = objects("AuthorizationPolicy")
    assert policies
    for p in policies:
        assert p["spec"]["action"] == "CUSTOM"
        assert p["spec"]["provider"]["name"] in names
    grpc = providers[0]["envoyExtAuthzGrpc"]
    assert (grpc["failOpen"], grpc["statusOnError"]) == (False, "503")


def test_ports_and_names_agree_with_the_config_defaults(tmp_path: Path) -> None:
    [configmap] = objects("ConfigMap")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(configmap["data"]["config.yaml"])
    key = tmp_path / "key.pem"
    from extauthz.stepup.cookie import new_signing_key_pem

    key.write_bytes(new_signing_key_pem())
    settings = load_settings(str(cfg), {"EXTAUTHZ_STORE_URL": "redis://redis:6379/0",
                                        "EXTAUTHZ_STEPUP_SIGNING_KEY_FILE": str(key)})
    grpc_port, http_port = settings.grpc_listen[1], settings.http_listen[1]
    assert (grpc_port, http_port) == (9001, 9002)

    [service] = objects("Service")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert (ports["grpc"]["port"], ports["grpc"]["appProtocol"]) == (grpc_port, "grpc")
    assert ports["http"]["port"] == http_port
    [deployment] = objects("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": grpc_port,
                                                                          "http": http_port}
    [operator] = objects("IstioOperator")
    provider = operator["spec"]["meshConfig"]["extensionProviders"][0]["envoyExtAuthzGrpc"]
    assert provider["port"] == grpc_port
    assert provider["service"] == f"{service['metadata']['name']}.extauthz.svc.cluster.local"
    [vs] = objects("VirtualService")
    stepup = next(r for r in vs["spec"]["http"] if r["name"] == "extauthz-stepup")
    assert stepup["route"][0]["destination"]["port"]["number"] == http_port


def test_the_deployment_is_hardened_and_drains_in_time() -> None:
    [deployment] = objects("Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert spec["replicas"] >= 2
    assert pod["affinity"]["podAntiAffinity"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert (sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"]) == (True, False)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    [configmap] = objects("ConfigMap")
    grace = yaml.safe_load(configmap["data"]["config.yaml"])["shutdown_grace"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + grace
    env = {e["name"]: e for e in container["env"]}
    assert env["EXTAUTHZ_STORE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "extauthz-redis"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["stepup-key"]["secret"]["secretName"] == "extauthz-stepup-key"
    assert objects("PodDisruptionBudget")[0]["spec"]["minAvailable"] >= 1
