"""Every Envoy file in envoy/ is loaded by a real Envoy; the kube-apiserver example's
extauthz config and RBAC are valid."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from demo.gateway import envoy_binary
from extauthz.config import load_settings

ENVOY_DIR = Path(__file__).resolve().parents[1] / "envoy"
BOOTSTRAPS = sorted(p for p in ENVOY_DIR.glob("*.yaml")
                    if any("static_resources" in d for d in yaml.safe_load_all(p.read_text()) if d))


def _cert(d: Path, name: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(
                ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    (d / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                      serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))


def test_there_are_envoy_files_to_check() -> None:
    assert {p.name for p in BOOTSTRAPS} >= {"gateway.yaml", "kube-apiserver.yaml"}


@pytest.mark.parametrize("path", BOOTSTRAPS, ids=lambda p: p.name)
def test_envoy_accepts_the_file(path: Path, tmp_path: Path) -> None:
    text = path.read_text()
    if "/etc/envoy/tls/" in text:  # real certificates where the file expects them
        for name in ("gateway", "apiserver-client", "apiserver-ca"):
            _cert(tmp_path, name)
        text = text.replace("/etc/envoy/tls/", f"{tmp_path}/")
    config = tmp_path / path.name
    config.write_text(text)
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(config)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK" in result.stdout + result.stderr


def test_envoy_rejects_a_broken_file(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text((ENVOY_DIR / "gateway.yaml").read_text().replace(
        "failure_mode_allow: false", "failure_mode_allow: nope"))
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(config)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0


def test_the_kube_example_config_loads_with_kube_apiserver_semantics() -> None:
    s = load_settings(str(ENVOY_DIR / "kube-apiserver-extauthz.yaml"), {})
    [issuer] = s.issuers
    assert (issuer.username_claim, issuer.username_prefix, issuer.groups_prefix) == (
        "email", "authgate:", "authgate:")
    assert s.headers.kubernetes_impersonation is True
    assert s.headers.forward_authorization is False


@pytest.mark.parametrize("doc", [d for d in yaml.safe_load_all((ENVOY_DIR / "kube-rbac.yaml").read_text())
                                 if d], ids=lambda d: d["metadata"]["name"])
def test_the_kube_rbac_objects_validate(doc: dict[str, object]) -> None:
    kubernetes_validate.validate(doc, desired_version=kubernetes_validate.latest_version(), strict=True)


def test_the_kube_rbac_lets_the_gateway_impersonate_only_listed_prefixed_names() -> None:
    settings = load_settings(str(ENVOY_DIR / "kube-apiserver-extauthz.yaml"), {})
    [issuer] = settings.issuers
    docs = [d for d in yaml.safe_load_all((ENVOY_DIR / "kube-rbac.yaml").read_text()) if d]
    rules = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
    impersonating = [r for r in rules if "impersonate" in r["verbs"] or "*" in r["verbs"]]
    assert impersonating
    for rule in impersonating:
        assert "*" not in rule["verbs"]
        assert "*" not in rule["resources"]
        assert set(rule["resources"]) <= {"users", "groups"}, rule  # no uids, userextras, SAs
        names = rule.get("resourceNames")
        assert names, f"{rule} lets the gateway impersonate anyone, system:masters included"
        prefix = issuer.username_prefix if rule["resources"] == ["users"] else issuer.groups_prefix
        for name in names:
            assert name.startswith(prefix), name
            assert not name.startswith("system:"), name


@pytest.mark.parametrize("name", ["gateway.yaml", "kube-apiserver.yaml"])
def test_the_envoy_examples_drop_client_sent_front_proxy_identity(name: str) -> None:
    config = yaml.safe_load((ENVOY_DIR / name).read_text())
    [hcm] = [f["typed_config"] for f in config["static_resources"]["listeners"][0]
             ["filter_chains"][0]["filters"]]
    removed = set(hcm["route_config"]["request_headers_to_remove"])
    assert {"x-remote-user", "x-remote-group"} <= removed
