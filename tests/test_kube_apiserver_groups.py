"""A user with several groups reaches a kube-apiserver with one Impersonate-Group line per
group: envoy/kube-apiserver.yaml (HTTP mode) with envoy/kube-apiserver-extauthz.yaml, a real
Envoy and a real extauthz, and an upstream that records the raw header lines it receives.

The test runs the shipped Envoy file with its TLS taken out (a plain listener; the apiserver
cluster pointed at the recording upstream over HTTP/1.1): what is under test is the filter
chain, and Envoy hands the codec the same header map whether it writes HTTP/1.1 lines or
HTTP/2 fields."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from demo.gateway import envoy_command
from demo.processes import Process
from tests.support.issuer import AUDIENCE, LocalIssuer
from tests.support.ports import free_port, wait_for_port
from tests.support.raw_http import RawHttpServer, raw_exchange
from tests.support.stack import ExtAuthz, Gateway

pytestmark = pytest.mark.e2e

ENVOY_DIR = Path(__file__).resolve().parents[1] / "envoy"
GROUPS = ["sre", "dev", "ops"]
WANT = ["authgate:sre", "authgate:dev", "authgate:ops"]


def _extauthz_config(idp: LocalIssuer) -> dict[str, Any]:
    """envoy/kube-apiserver-extauthz.yaml, trusting the test issuer instead of AuthGate."""
    config: dict[str, Any] = yaml.safe_load((ENVOY_DIR / "kube-apiserver-extauthz.yaml").read_text())
    [issuer] = config["issuers"]
    config["issuers"] = [{**issuer, "issuer": idp.issuer, "audiences": [AUDIENCE]}]
    for key in ("grpc", "http", "check_http"):  # the test stack picks free ports
        config.pop(key, None)
    return config


def _kube_envoy(work: Path, *, listen_port: int, check_port: int, apiserver_port: int) -> Path:
    config: dict[str, Any] = yaml.safe_load((ENVOY_DIR / "kube-apiserver.yaml").read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = free_port()
    [listener] = config["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": listen_port}
    listener["filter_chains"][0].pop("transport_socket")
    for cluster in config["static_resources"]["clusters"]:
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        if cluster["name"] == "extauthz_check":
            address["socket_address"] = {"address": "127.0.0.1", "port_value": check_port}
        elif cluster["name"] == "kube_apiserver":
            cluster.pop("transport_socket")
            cluster.pop("typed_extension_protocol_options")
            address["socket_address"] = {"address": "127.0.0.1", "port_value": apiserver_port}
        else:
            raise AssertionError(f"a cluster this test does not know: {cluster['name']}")
    path = work / "kube-apiserver.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class KubeStack:
    def __init__(self, idp: LocalIssuer, work: Path) -> None:
        self.apiserver = RawHttpServer().start()
        self.service = ExtAuthz(work, _extauthz_config(idp)).start()
        self.port = free_port()
        path = _kube_envoy(work, listen_port=self.port, check_port=self.service.check_http_port,
                           apiserver_port=self.apiserver.port)
        self.envoy = Process("envoy-kube", envoy_command(path), work / "envoy-kube.log").start()
        wait_for_port(self.port, timeout=30)  # every route is checked: no health route here

    def stop(self) -> None:
        self.envoy.stop()
        self.service.stop()
        self.apiserver.stop()


@pytest.fixture(scope="module")
def kube(idp: LocalIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeStack]:
    stack = KubeStack(idp, tmp_path_factory.mktemp("kube"))
    yield stack
    stack.stop()


def test_every_group_reaches_the_apiserver_as_its_own_impersonate_group_line(
    kube: KubeStack, idp: LocalIssuer,
) -> None:
    token = idp.mint("ES256", groups=GROUPS)
    r = raw_exchange(kube.port, "/api/v1/namespaces/payments/pods", [
        ("host", "kube.example.com"), ("authorization", f"Bearer {token}"),
        ("impersonate-group", "system:masters"), ("Impersonate-Group", "authgate:sre"),
        ("impersonate-user", "system:admin"), ("impersonate-uid", "0"),
        ("impersonate-extra-scopes", "all"), ("x-remote-user", "admin")])
    assert r.status == 200, r
    got = kube.apiserver.last()
    assert got.target == "/api/v1/namespaces/payments/pods"
    raw = [(k.lower(), v) for k, v in got.lines]
    assert [v for k, v in raw if k == "impersonate-group"] == WANT  # one line each, in order
    assert [v for k, v in raw if k == "impersonate-user"] == ["authgate:alice@example.com"]
    assert not [k for k, _ in raw if k.startswith("impersonate-") and k not in (
        "impersonate-user", "impersonate-group")]
    assert not [k for k, _ in raw if k.startswith("x-remote-")]
    assert "authorization" not in dict(raw)  # the user's token stays at the gateway
    assert token not in repr(got.lines)


def test_a_user_with_one_group_or_none_gets_exactly_that(kube: KubeStack, idp: LocalIssuer) -> None:
    for groups, want in ((["sre"], ["authgate:sre"]), ([], [])):
        r = raw_exchange(kube.port, "/api", [
            ("host", "kube.example.com"), ("impersonate-group", "system:masters"),
            ("authorization", f"Bearer {idp.mint('ES256', groups=groups)}")])
        assert r.status == 200
        assert kube.apiserver.last().values("impersonate-group") == want, groups


def test_a_user_with_hundreds_of_groups_gets_every_one(kube: KubeStack, idp: LocalIssuer) -> None:
    # Envoy's default of 100 header lines, on the answer and on the request, would fail this
    # user closed (503, then 500); the example allows 500.
    groups = [f"team-{i:03d}" for i in range(300)]
    r = raw_exchange(kube.port, "/api", [
        ("host", "kube.example.com"), ("authorization", f"Bearer {idp.mint('ES256', groups=groups)}")])
    assert r.status == 200
    assert kube.apiserver.last().values("impersonate-group") == [f"authgate:{g}" for g in groups]


def test_without_a_token_the_apiserver_is_never_reached(kube: KubeStack) -> None:
    before = len(kube.apiserver.requests)
    r = raw_exchange(kube.port, "/api", [("host", "kube.example.com"),
                                         ("impersonate-user", "system:admin")])
    assert r.status == 401
    assert r.values("www-authenticate")[0].startswith("Bearer")
    assert len(kube.apiserver.requests) == before


def test_over_grpc_envoy_keeps_only_the_last_group(idp: LocalIssuer, tmp_path: Path) -> None:
    """Measured, not wanted: why envoy/kube-apiserver.yaml asks over HTTP. extauthz sends every
    group over gRPC too (the first overwrites, the rest append), and Envoy 1.40 applies only
    the last. If a newer Envoy sends every line, this fails: then gRPC works for kube too."""
    upstream = RawHttpServer().start()
    service = ExtAuthz(tmp_path, _extauthz_config(idp)).start()
    gateway = Gateway(tmp_path, service, transport="grpc", echo=False,
                      upstream_port=upstream.port).start()
    try:
        r = raw_exchange(gateway.port, "/api", [
            ("host", "kube.example.com"),
            ("authorization", f"Bearer {idp.mint('ES256', groups=GROUPS)}")])
        assert r.status == 200
        assert upstream.last().values("impersonate-group") == WANT[-1:]
    finally:
        gateway.stop()
        service.stop()
        upstream.stop()
