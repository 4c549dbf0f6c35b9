"""Redis URLs as operators write them: a password in the URL, TLS with a private CA."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from extauthz.errors import StoreUnavailable
from extauthz.policy.model import parse_policies
from extauthz.policy.store import RedisPolicyStore
from extauthz.store.redis_hash import redacted_url
from tests.support.redis import RedisServer


async def test_a_password_in_the_url_authenticates(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, extra=["--requirepass", "s3cret-pw"]).start()
    try:
        good = RedisPolicyStore(f"redis://:s3cret-pw@127.0.0.1:{server.port}/0", "pw:", 2.0)
        await good.apply(parse_policies([{"id": "a"}]))
        assert [p.id for p in (await good.load()).policies] == ["a"]
        await good.close()
        bad = RedisPolicyStore(f"redis://:wrong-pw@127.0.0.1:{server.port}/0", "pw:", 2.0)
        with pytest.raises(StoreUnavailable) as err:
            await bad.load()
        assert "wrong-pw" not in str(err.value)
        await bad.close()
    finally:
        server.stop()


def _write_ca_and_server_cert(d: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "extauthz test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


async def test_rediss_with_a_private_ca_works_and_an_unknown_ca_is_refused(tmp_path: Path) -> None:
    _write_ca_and_server_cert(tmp_path)
    server = RedisServer(tmp_path, tls=True, extra=[
        "--tls-cert-file", str(tmp_path / "server.pem"), "--tls-key-file", str(tmp_path / "server.key"),
        "--tls-ca-cert-file", str(tmp_path / "ca.pem"), "--tls-auth-clients", "no"]).start()
    prefix = f"tls{uuid.uuid4().hex[:6]}:"
    try:
        store = RedisPolicyStore(f"{server.url}?ssl_ca_certs={tmp_path / 'ca.pem'}", prefix, 2.0)
        await store.apply(parse_policies([{"id": "over-tls"}]))
        assert [p.id for p in (await store.load()).policies] == ["over-tls"]
        await store.close()
        untrusted = RedisPolicyStore(server.url, prefix, 2.0)
        with pytest.raises(StoreUnavailable):
            await untrusted.load()
        await untrusted.close()
    finally:
        server.stop()


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://h:6379/0?password=s3cret", "redis://h:6379/0?password=***"),
    ("rediss://u:s3cret@h:6380/0?ssl_ca_certs=/ca.pem&password=x",
     "rediss://u:***@h:6380/0?ssl_ca_certs=/ca.pem&password=***"),
])
def test_redis_passwords_are_hidden_wherever_the_url_holds_them(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
