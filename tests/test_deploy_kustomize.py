"""Every kustomization under deploy/ renders with `kubectl kustomize`; what it renders validates
(core objects against the Kubernetes 1.30 schemas, custom resources against their vendored CRD
schemas); and the pieces agree with each other and with the service's config."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

import extauthz
from extauthz.config import load_settings
from extauthz.identity_headers import FRONT_PROXY_PREFIX, IMPERSONATE_PREFIX

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES = "1.30.0"  # the oldest Kubernetes the manifests are written for
CORE_API = ("v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1")
KUSTOMIZATIONS = sorted(p.parent.relative_to(DEPLOY).as_posix()
                        for p in DEPLOY.rglob("kustomization.yaml"))
ISTIO_FILES = sorted((DEPLOY / "istio").rglob("*.yaml"))
SCHEMAS = {(s["group"], s["version"], s["kind"]): s["openAPIV3Schema"] for s in
           (json.loads(f.read_text()) for f in (DEPLOY / "schemas").rglob("*.json"))}
MESH = "extauthz.extauthz.svc.cluster.local"


@functools.cache
def kubectl() -> str:
    found = shutil.which("kubectl")
    assert found, "kubectl is missing: `make system-deps` installs it (kubernetes-client)"
    return found


@functools.cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    done = subprocess.run([kubectl(), "kustomize", str(DEPLOY / kustomization)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def validate_crd(spec: dict[str, Any], schema: dict[str, Any]) -> None:
    """A CRD's openAPIV3Schema, as the apiserver applies it. Not ``jsonschema.validate``, which
    first checks the schema's own patterns as Python regexes: some are Go's (``^(?i)…``)."""
    jsonschema.Draft7Validator(schema["properties"]["spec"]).validate(spec)


def one(objects: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind]
    return found


def istio_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in ISTIO_FILES for d in yaml.safe_load_all(p.read_text()) if d]


def rendered() -> list[tuple[str, dict[str, Any]]]:
    return [(k, o) for k in KUSTOMIZATIONS for o in render(k)]


def object_id(value: object) -> str:
    if isinstance(value, dict):
        return f"{value['kind']}/{value['metadata']['name']}"
    return str(value)


def config_of(objects: tuple[dict[str, Any], ...], tmp_path: Path) -> Any:
    configmap = next(o for o in objects if o["kind"] == "ConfigMap"
                     and o["metadata"]["name"].startswith("extauthz-config"))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(configmap["data"]["config.yaml"])
    key = tmp_path / "key.pem"
    from extauthz.stepup.cookie import new_signing_key_pem

    key.write_bytes(new_signing_key_pem())
    return load_settings(str(cfg), {"EXTAUTHZ_STORE_URL": "redis://redis:6379/0",
                                    "EXTAUTHZ_STEPUP_SIGNING_KEY_FILE": str(key)})


def providers() -> list[dict[str, Any]]:
    operator = yaml.safe_load((DEPLOY / "istio" / "mesh" / "istio-operator.yaml").read_text())
    helm = yaml.safe_load((DEPLOY / "istio" / "mesh" / "helm-values.yaml").read_text())
    found: list[dict[str, Any]] = operator["spec"]["meshConfig"]["extensionProviders"]
    assert found == helm["meshConfig"]["extensionProviders"]  # the two ways say the same
    return found


# --- rendering and schemas ------------------------------------------------------------------

def test_the_kustomizations_are_the_base_the_production_overlay_and_observability() -> None:
    assert KUSTOMIZATIONS == ["base", "observability", "overlays/production"]


def test_kubectl_embeds_a_kustomize_that_knows_labels_and_patches() -> None:
    """kubectl 1.20 (Debian bookworm's kubernetes-client) embeds kustomize v2, which reads
    neither; kubectl 1.27 and later embed v5."""
    version = json.loads(subprocess.run([kubectl(), "version", "--client", "-o", "json"],
                                        capture_output=True, text=True, timeout=60,
                                        check=True).stdout)["kustomizeVersion"]
    assert int(version.lstrip("v").split(".")[0]) >= 5, version


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_kustomization_renders_with_kubectl_kustomize(kustomization: str) -> None:
    objects = render(kustomization)
    assert objects
    assert all({"apiVersion", "kind", "metadata"} <= set(o) for o in objects)


@pytest.mark.parametrize(("kustomization", "obj"),
                         [(k, o) for k, o in rendered() if o["apiVersion"] in CORE_API],
                         ids=object_id)
def test_core_objects_validate_strictly_against_kubernetes_1_30(kustomization: str,
                                                                obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, desired_version=KUBERNETES, strict=True)


def test_the_secret_example_validates_and_no_kustomization_ships_a_secret() -> None:
    example = yaml.safe_load((DEPLOY / "base" / "secrets.example.yaml").read_text())
    kubernetes_validate.validate(example, desired_version=KUBERNETES, strict=True)
    assert not [o for _, o in rendered() if o["kind"] == "Secret"]


@pytest.mark.parametrize(("origin", "obj"),
                         [(k, o) for k, o in rendered() if o["apiVersion"] not in CORE_API]
                         + [(p.name, d) for p, d in istio_docs() if d.get("kind") != "IstioOperator"
                            and "apiVersion" in d],
                         ids=object_id)
def test_custom_resources_validate_against_their_vendored_crd_schemas(origin: str,
                                                                      obj: dict[str, Any]) -> None:
    group, version = obj["apiVersion"].split("/")
    schema = SCHEMAS[(group, version, obj["kind"])]  # a kind without a schema fails here
    validate_crd(obj["spec"], schema)


def test_every_vendored_schema_validates_something() -> None:
    used = {(*o["apiVersion"].split("/"), o["kind"]) for _, o in rendered()}
    used |= {(*d["apiVersion"].split("/"), d["kind"]) for _, d in istio_docs()
             if "apiVersion" in d}
    assert set(SCHEMAS) <= used


@pytest.mark.parametrize(("key", "spec"), [
    (("security.istio.io", "v1", "AuthorizationPolicy"), {"action": "MAYBE"}),
    (("monitoring.coreos.com", "v1", "PodMonitor"), {"podMetricsEndpoints": [{"port": 9004}]}),
    (("monitoring.coreos.com", "v1", "PrometheusRule"), {"groups": [{"rules": []}]}),
])
def test_the_crd_schema_check_can_fail(key: tuple[str, str, str], spec: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(spec, SCHEMAS[key])


def test_the_kubernetes_check_can_fail() -> None:
    bad = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "x"}, "spec": {"maxReplicas": 3, "minReplica": 1,
                                               "scaleTargetRef": {"kind": "Deployment", "name": "x"}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, desired_version=KUBERNETES, strict=True)


# --- the base -------------------------------------------------------------------------------

def test_the_base_holds_what_the_service_needs() -> None:
    kinds = sorted(o["kind"] for o in render("base"))
    assert kinds == ["ConfigMap", "Deployment", "Namespace", "PodDisruptionBudget", "Service",
                     "ServiceAccount"]
    assert {o["metadata"].get("namespace") for o in render("base") if o["kind"] != "Namespace"} == {
        "extauthz"}


def test_ports_and_names_agree_with_the_config(tmp_path: Path) -> None:
    base = render("base")
    settings = config_of(base, tmp_path)
    ports = {"grpc": settings.grpc_listen[1], "http": settings.http_listen[1],
             "check-http": settings.check_http_listen[1], "admin": settings.admin_listen[1]}
    assert ports == {"grpc": 9001, "http": 9002, "check-http": 9003, "admin": 9004}
    assert settings.admin_listen[0] == "0.0.0.0"  # a scraper outside the pod reaches it
    deployment = one(base, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == ports
    service = one(base, "Service")
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    # the Service routes the Check ports and the pages; never the admin port
    assert {n: p["port"] for n, p in by_name.items()} == {n: ports[n] for n in ("grpc", "http",
                                                                             "check-http")}
    assert {n: p["targetPort"] for n, p in by_name.items()} == {n: n for n in by_name}
    assert (by_name["grpc"]["appProtocol"], by_name["check-http"]["appProtocol"]) == ("grpc", "http")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert pod["serviceAccountName"] == one(base, "ServiceAccount")["metadata"]["name"]
    configmap = one(base, "ConfigMap")["metadata"]["name"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == configmap  # the hashed name, rewritten
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["traffic.sidecar.istio.io/excludeInboundPorts"] == str(ports["admin"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    key_file = yaml.safe_load(one(base, "ConfigMap")["data"]["config.yaml"])["stepup"]["signing_key_file"]
    assert Path(key_file).parent == Path(mounts["stepup-key"])


def test_the_deployment_is_hardened_and_drains_in_time(tmp_path: Path) -> None:
    base = render("base")
    deployment = one(base, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert spec["replicas"] >= 2
    assert pod["affinity"]["podAntiAffinity"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert (sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"]) == (True, False)
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    settings = config_of(base, tmp_path)
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + settings.shutdown_grace
    env = {e["name"]: e for e in container["env"]}
    assert env["EXTAUTHZ_STORE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "extauthz-redis"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["stepup-key"]["secret"]["secretName"] == "extauthz-stepup-key"
    assert one(base, "PodDisruptionBudget")["spec"]["minAvailable"] >= 1
    assert container["image"] == f"ghcr.io/extauthz/extauthz:{extauthz.__version__}"


# --- production -----------------------------------------------------------------------------

def test_production_autoscales_on_cpu_and_leaves_the_replica_count_to_it() -> None:
    prod = render("overlays/production")
    deployment = one(prod, "Deployment")
    assert "replicas" not in deployment["spec"]  # a re-apply never resets what the HPA chose
    hpa = one(prod, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": deployment["metadata"]["name"]}
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"] <= 50
    [metric] = hpa["metrics"]
    assert (metric["resource"]["name"], metric["resource"]["target"]["type"]) == ("cpu",
                                                                                  "Utilization")
    assert 0 < metric["resource"]["target"]["averageUtilization"] < 100
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    # utilisation is measured against the request: there must be one
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    assert one(prod, "PodDisruptionBudget")["spec"]["minAvailable"] < hpa["minReplicas"]


def test_production_spreads_pods_across_zones_and_nodes() -> None:
    pod = one(render("overlays/production"), "Deployment")["spec"]["template"]["spec"]
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    for c in spread.values():
        assert c["maxSkew"] == 1
        assert c["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "extauthz"}
    assert pod["securityContext"]["runAsNonRoot"] is True  # the base's pod spec is kept


GATEWAY = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}},
           "podSelector": {"matchLabels": {"istio": "ingressgateway"}}}
MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def test_the_network_policy_admits_each_port_from_its_callers_only() -> None:
    prod = render("overlays/production")
    policy = one(prod, "NetworkPolicy")["spec"]
    deployment = one(prod, "Deployment")
    assert policy["podSelector"] == deployment["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress"]
    callers: dict[int, list[dict[str, Any]]] = {}
    for rule in policy["ingress"]:
        assert rule.get("from")
        assert rule.get("ports")
        for port in rule["ports"]:
            assert port["protocol"] == "TCP"
            callers.setdefault(port["port"], []).extend(rule["from"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert sorted(callers) == sorted(p["containerPort"] for p in container["ports"])
    for check_port in (9001, 9003):  # the sidecars of mesh namespaces, and the gateway
        assert GATEWAY in callers[check_port]
        others = [p for p in callers[check_port] if p != GATEWAY]
        assert others
        for peer in others:
            assert set(peer) == {"namespaceSelector"}
            labels = json.dumps(peer["namespaceSelector"])
            assert "istio-injection" in labels or "istio.io/rev" in labels
    assert callers[9002] == [GATEWAY]
    assert callers[9004] == [MONITORING]


def test_prometheus_scrapes_the_admin_port_of_every_pod() -> None:
    prod = render("overlays/production")
    monitor = one(prod, "PodMonitor")["spec"]
    deployment = one(prod, "Deployment")
    assert monitor["selector"] == deployment["spec"]["selector"]
    [endpoint] = monitor["podMetricsEndpoints"]
    ports = {p["name"]: p["containerPort"]
             for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert (ports[endpoint["port"]], endpoint["path"]) == (9004, "/metrics")
    assert one(prod, "PrometheusRule")["spec"]["groups"]
    dashboard = next(o for o in prod if o["kind"] == "ConfigMap"
                     and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1")
    assert json.loads(dashboard["data"]["grafana-dashboard.json"])["uid"] == "extauthz"


# --- Istio ----------------------------------------------------------------------------------

def test_every_custom_policy_names_a_provider_the_mesh_registers() -> None:
    names = {p["name"] for p in providers()}
    policies = [d for _, d in istio_docs() if d.get("kind") == "AuthorizationPolicy"]
    assert {p["spec"]["provider"]["name"] for p in policies} == names  # each has an example
    for p in policies:
        assert p["spec"]["action"] == "CUSTOM"


def test_the_mesh_registers_grpc_and_http_providers_on_the_service_ports(tmp_path: Path) -> None:
    base = render("base")
    settings = config_of(base, tmp_path)
    service = one(base, "Service")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local" == MESH
    grpc = next(p["envoyExtAuthzGrpc"] for p in providers() if "envoyExtAuthzGrpc" in p)
    http = next(p["envoyExtAuthzHttp"] for p in providers() if "envoyExtAuthzHttp" in p)
    assert (grpc["service"], grpc["port"]) == (MESH, ports["grpc"])
    assert (http["service"], http["port"]) == (MESH, ports["check-http"])
    assert http["port"] == settings.check_http_listen[1]
    assert "pathPrefix" not in http
    assert settings.check_http.path_prefix == ""
    for provider in (grpc, http):  # fail closed, with a 503 the client can retry
        assert (provider["failOpen"], provider["statusOnError"]) == (False, "503")


def test_the_http_provider_sends_and_returns_the_headers_extauthz_works_with(
    tmp_path: Path,
) -> None:
    settings = config_of(render("base"), tmp_path)
    http = next(p["envoyExtAuthzHttp"] for p in providers() if "envoyExtAuthzHttp" in p)
    sent = http["includeRequestHeadersInCheck"]
    for name in ("authorization", "cookie", "accept", "x-request-id", "traceparent", "tracestate"):
        assert name in sent
    # every family the service strips, so it can name a client's spoofed copies for removal
    for prefix in (settings.headers.prefix, IMPERSONATE_PREFIX, FRONT_PROXY_PREFIX):
        assert prefix + "*" in sent, prefix
    upstream = http["headersToUpstreamOnAllow"]
    assert sorted(upstream) == sorted([settings.headers.prefix + "*", IMPERSONATE_PREFIX + "*",
                                       "cookie"])
    assert sorted(http["headersToDownstreamOnDeny"]) == sorted(
        ["www-authenticate", "location", "content-type", "cache-control", "set-cookie",
         "retry-after", "content-security-policy", "x-content-type-options", "referrer-policy"])
    for pattern in [*sent, *upstream]:  # Istio matches exact, "prefix*" or "*suffix" only
        assert pattern.count("*") <= 1
        assert pattern.strip("*").count("*") == 0
        assert pattern == pattern.lower()


def test_the_stepup_route_goes_to_the_pages_port() -> None:
    ports = {p["name"]: p["port"] for p in one(render("base"), "Service")["spec"]["ports"]}
    [vs] = [d for _, d in istio_docs() if d.get("kind") == "VirtualService"]
    stepup = next(r for r in vs["spec"]["http"] if r["name"] == "extauthz-stepup")
    assert stepup["route"][0]["destination"]["host"] == MESH
    assert stepup["route"][0]["destination"]["port"]["number"] == ports["http"]


# The fields of Istio's MeshConfig.ExtensionProvider messages (istio/api
# mesh/v1alpha1/config.proto): a misspelt one would be dropped by istiod without a word.
GRPC_FIELDS = {"service", "port", "timeout", "failOpen", "statusOnError",
               "includeRequestBodyInCheck"}
HTTP_FIELDS = {"service", "port", "timeout", "pathPrefix", "failOpen", "statusOnError",
               "includeRequestHeadersInCheck", "includeAdditionalHeadersInCheck",
               "includeRequestBodyInCheck", "headersToUpstreamOnAllow", "headersToDownstreamOnDeny",
               "headersToDownstreamOnAllow"}


def test_the_providers_use_only_fields_istio_knows() -> None:
    for provider in providers():
        kinds = set(provider) - {"name"}
        assert kinds in ({"envoyExtAuthzGrpc"}, {"envoyExtAuthzHttp"}), provider
        fields = GRPC_FIELDS if "envoyExtAuthzGrpc" in provider else HTTP_FIELDS
        [config] = [provider[k] for k in kinds]
        assert set(config) <= fields, set(config) - fields
        assert {"service", "port"} <= set(config)


def test_the_readme_deploy_section_names_files_and_kustomizations_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Deploy\n"):]
    section = section[:section.index("\n## ", 1)]
    paths = set(re.findall(r"(?<![\w/.-])((?:deploy|envoy)/[\w./-]*[\w/])", section))
    paths.discard("deploy/extauthz")  # kubectl's name of the Deployment, not a path
    assert {"deploy/overlays/production", "deploy/base/namespace.yaml",
            "deploy/istio/mesh/istio-operator.yaml"} <= paths
    for path in paths:
        assert (ROOT / path).exists(), path
    for target in re.findall(r"kubectl apply -k (\S+)", section):
        assert target.rstrip("/") in KUSTOMIZATIONS_FROM_ROOT, target


KUSTOMIZATIONS_FROM_ROOT = {f"deploy/{k}" for k in KUSTOMIZATIONS}
