"""Properties of the certificates kcmbundle signs and of the CAs it loads and creates."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kcmbundle.config import CASource
from kcmbundle.errors import CAError
from kcmbundle.pki import (CLOCK_SKEW, COMPONENT_NAME, Seams, build_sans, build_subject, check_ca_outlives,
                           create_ca, issue_certificate, load_ca)

from support import FIXED_NOW, load_key, write_ca


def _ca(tmp_path: Path):
    cert, key = write_ca(tmp_path / "pki")
    return load_ca(CASource(cert, key, None), FIXED_NOW)


def _issue(ca, key_name: str = "rsa-2048-1", names=("localhost", "m1", "127.0.0.1", "192.0.2.11")):
    return issue_certificate(
        ca, load_key(key_name),
        subject=build_subject([("country", "CN"), ("organizationalUnit", "ops")]),
        sans=build_sans(names),
        now=FIXED_NOW,
        validity=timedelta(hours=8760),
        serial=0x1234,
    ).certificate


def assert_is_client_and_server_cert(certificate: x509.Certificate, ca) -> None:
    """Check the facts kube-apiserver and TLS clients rely on."""
    common_name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    organization = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    assert common_name == COMPONENT_NAME
    assert organization == COMPONENT_NAME
    assert certificate.issuer == ca.certificate.subject

    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usages
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages

    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is False

    key_usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value.digital_signature
    assert not key_usage.value.key_cert_sign

    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest

    ca.certificate.public_key().verify(
        certificate.signature, certificate.tbs_certificate_bytes, padding.PKCS1v15(),
        certificate.signature_hash_algorithm)


def test_issued_certificate_properties(tmp_path: Path) -> None:
    ca = _ca(tmp_path)
    certificate = _issue(ca)

    assert_is_client_and_server_cert(certificate, ca)
    assert certificate.serial_number == 0x1234
    assert certificate.not_valid_before_utc == FIXED_NOW - CLOCK_SKEW
    assert certificate.not_valid_after_utc == FIXED_NOW + timedelta(hours=8760)


def test_rsa_certificate_allows_key_encipherment(tmp_path: Path) -> None:
    certificate = _issue(_ca(tmp_path), "rsa-2048-1")
    assert certificate.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


def test_ecdsa_certificate_omits_key_encipherment(tmp_path: Path) -> None:
    certificate = _issue(_ca(tmp_path), "ecdsa-p256-1")
    assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)
    assert not certificate.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


def test_subject_order_matches_cfssl(tmp_path: Path) -> None:
    subject = build_subject([("organizationalUnit", "ops"), ("locality", "Beijing"),
                             ("country", "CN"), ("province", "Beijing")])
    assert subject.rfc4514_string() == (
        "CN=system:kube-controller-manager,OU=ops,O=system:kube-controller-manager,L=Beijing,ST=Beijing,C=CN")


def test_sans_put_dns_names_first_without_duplicates() -> None:
    sans = build_sans(["127.0.0.1", "localhost", "m1", "2001:db8::1", "m1", "127.0.0.1"])
    assert [str(name.value) for name in sans] == ["localhost", "m1", "127.0.0.1", "2001:db8::1"]
    assert isinstance(sans[2], x509.IPAddress)


def test_load_ca_rejects_leaf_certificate(tmp_path: Path) -> None:
    ca = _ca(tmp_path)
    leaf = _issue(ca)
    from cryptography.hazmat.primitives import serialization

    cert_path = tmp_path / "leaf.pem"
    key_path = tmp_path / "leaf-key.pem"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(load_key("rsa-2048-1").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    with pytest.raises(CAError, match="not a CA certificate") as raised:
        load_ca(CASource(cert_path, key_path, None), FIXED_NOW)
    assert "may not sign certificates" in str(raised.value)


def test_load_ca_rejects_mismatched_key(tmp_path: Path) -> None:
    cert, _ = write_ca(tmp_path / "one")
    _, other_key = write_ca(tmp_path / "two", key_name="ca-ecdsa-p256")

    with pytest.raises(CAError, match="is not the private key of the certificate"):
        load_ca(CASource(cert, other_key, None), FIXED_NOW)


@pytest.mark.parametrize(("change", "reason"), [
    ({"dmp1": 2}, "its CRT values do not match its factors"),
    ({"iqmp": 2}, "its CRT values do not match its factors"),
    ({"d": 2}, "its private exponent does not match its public exponent"),
    ({"dmq1": 2}, "its CRT values do not match its factors"),
])
def test_load_ca_rejects_inconsistent_rsa_key(tmp_path: Path, change: dict[str, int], reason: str) -> None:
    from cryptography.hazmat.primitives import serialization

    cert, key_path = write_ca(tmp_path)
    numbers = load_key("ca-rsa-2048").private_numbers()
    fields = {name: getattr(numbers, name) for name in ("p", "q", "d", "dmp1", "dmq1", "iqmp")}
    for name, offset in change.items():
        fields[name] += offset
    damaged = rsa.RSAPrivateNumbers(**fields, public_numbers=numbers.public_numbers)
    key_path.write_bytes(damaged.private_key(unsafe_skip_rsa_key_validation=True).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))

    with pytest.raises(CAError, match=f"the key is damaged \\({reason}\\)"):
        load_ca(CASource(cert, key_path, None), FIXED_NOW)


def test_load_ca_rejects_rsa_key_that_signs_wrongly(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    cert, key_path = write_ca(tmp_path)
    numbers = load_key("ca-rsa-2048").private_numbers()
    # A wrong private exponent and CRT exponent: the public half still
    # matches the certificate, but no signature made with the key verifies.
    damaged = rsa.RSAPrivateNumbers(numbers.p, numbers.q, numbers.d + 2, numbers.dmp1 + 2, numbers.dmq1,
                                    numbers.iqmp, numbers.public_numbers)
    key_path.write_bytes(damaged.private_key(unsafe_skip_rsa_key_validation=True).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))

    with pytest.raises(CAError, match="the key is damaged"):
        load_ca(CASource(cert, key_path, None), FIXED_NOW)


def test_load_ca_rejects_expired_and_future_ca(tmp_path: Path) -> None:
    cert, key = write_ca(tmp_path / "pki", validity=timedelta(days=30))

    with pytest.raises(CAError, match="the CA expired on 2026-02-14T12:00:00Z"):
        load_ca(CASource(cert, key, None), FIXED_NOW + timedelta(days=31))
    with pytest.raises(CAError, match="the CA is not valid until 2026-01-15T11:55:00Z"):
        load_ca(CASource(cert, key, None), FIXED_NOW - timedelta(days=1))


def test_ca_must_outlive_certificate(tmp_path: Path) -> None:
    cert, key = write_ca(tmp_path / "pki", validity=timedelta(days=100))
    ca = load_ca(CASource(cert, key, None), FIXED_NOW)

    with pytest.raises(CAError, match="after the CA expires on 2026-04-25T12:00:00Z"):
        check_ca_outlives(ca, FIXED_NOW + timedelta(days=365))
    check_ca_outlives(ca, FIXED_NOW + timedelta(days=99))


def test_encrypted_ca_key_uses_passphrase_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives import serialization

    cert, key = write_ca(tmp_path / "pki")
    encrypted = load_key("ca-rsa-2048").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"correct horse"))
    key.write_bytes(encrypted)

    with pytest.raises(CAError, match="environment variable KCM_TEST_PASS is not set"):
        load_ca(CASource(cert, key, "KCM_TEST_PASS"), FIXED_NOW)

    monkeypatch.setenv("KCM_TEST_PASS", "")
    with pytest.raises(CAError, match="environment variable KCM_TEST_PASS is empty"):
        load_ca(CASource(cert, key, "KCM_TEST_PASS"), FIXED_NOW)

    monkeypatch.setenv("KCM_TEST_PASS", "wrong")
    with pytest.raises(CAError, match="wrong passphrase") as raised:
        load_ca(CASource(cert, key, "KCM_TEST_PASS"), FIXED_NOW)
    assert "correct horse" not in str(raised.value)

    monkeypatch.setenv("KCM_TEST_PASS", "correct horse")
    assert load_ca(CASource(cert, key, "KCM_TEST_PASS"), FIXED_NOW).certificate.subject


def test_created_ca_is_a_signing_ca() -> None:
    seams = Seams(clock=lambda: FIXED_NOW, serial=lambda: 7, key_factory=lambda _: load_key("ca-ecdsa-p256"))
    cert_pem, key_pem = create_ca(common_name="lab-ca", key_algorithm="ecdsa-p256",
                                  validity=timedelta(days=10), seams=seams)
    certificate = x509.load_pem_x509_certificate(cert_pem)

    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certificate.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert certificate.subject == certificate.issuer
    assert b"EC PRIVATE KEY" in key_pem
    assert not isinstance(certificate.public_key(), rsa.RSAPublicKey)
