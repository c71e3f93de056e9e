"""Regenerate the test-only PEM files of the invalid-input cases.

Run from the repository root: ``python tests/cases/invalid/make_pki.py``.
Certificates are signed with tests/fixtures/keys/ca-rsa-2048.pem, the key of
the default test CA that the tests write beside each case, so only the
property each case is about is wrong. Keys made here protect nothing.
"""

from __future__ import annotations

import base64
import os
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519
from cryptography.x509.oid import NameOID

CASES = Path(__file__).parent
CA_KEY = serialization.load_pem_private_key(
    (CASES.parent.parent / "fixtures" / "keys" / "ca-rsa-2048.pem").read_bytes(), password=None)
PASSPHRASE = b"kcmbundle-test-passphrase"


def _time(year: int) -> datetime:
    return datetime(year, 1, 1, tzinfo=timezone.utc)


def _certificate(*, is_ca: bool, key_cert_sign: bool, not_before: int, not_after: int,
                 name: str = "kcmbundle-test-ca") -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=not is_ca,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign, encipher_only=False, decipher_only=False)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(CA_KEY.public_key())
        .serial_number(0xCA)
        .not_valid_before(_time(not_before))
        .not_valid_after(_time(not_after))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(CA_KEY, hashes.SHA256())
    )


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _write(case: str, name: str, data: bytes) -> None:
    folder = CASES / case / "pki"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def _key_pem(key, form=serialization.PrivateFormat.PKCS8, encryption=serialization.NoEncryption()) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, form, encryption)


def main() -> None:
    valid_ca = _certificate(is_ca=True, key_cert_sign=True, not_before=2025, not_after=2075)
    leaf = _certificate(is_ca=False, key_cert_sign=False, not_before=2025, not_after=2075, name="not-a-ca")

    _write("ca-expired", "ca.pem", _pem(_certificate(is_ca=True, key_cert_sign=True, not_before=2015, not_after=2020)))
    _write("ca-not-yet-valid", "ca.pem", _pem(_certificate(is_ca=True, key_cert_sign=True, not_before=2090, not_after=2100)))
    _write("ca-leaf-not-ca", "ca.pem", _pem(leaf))
    _write("ca-chain-leaf-first", "ca.pem", _pem(leaf) + _pem(valid_ca))
    _write("ca-without-keycertsign", "ca.pem",
           _pem(_certificate(is_ca=True, key_cert_sign=False, not_before=2025, not_after=2075)))
    _write("ca-cert-der-not-pem", "ca.pem", valid_ca.public_bytes(serialization.Encoding.DER))

    _write("ca-key-mismatch", "ca-key.pem", _key_pem(ec.generate_private_key(ec.SECP256R1())))
    encrypted = _key_pem(CA_KEY, encryption=serialization.BestAvailableEncryption(PASSPHRASE))
    for case in ("ca-key-encrypted-passphrase-unset", "ca-key-encrypted-no-passphrase-env"):
        _write(case, "ca-key.pem", encrypted)
    _write("ca-key-encrypted-passphrase-wrong", "ca-key.pem",
           _key_pem(CA_KEY, serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.BestAvailableEncryption(PASSPHRASE)))
    _write("ca-key-dsa", "ca-key.pem", _key_pem(dsa.generate_private_key(key_size=2048)))
    _write("ca-key-ed25519", "ca-key.pem", _key_pem(ed25519.Ed25519PrivateKey.generate()))

    # Base64 that decodes to random bytes: PEM framing around a body no parser accepts.
    body = base64.encodebytes(os.urandom(600)).replace(b"\n", b"")
    lines = b"\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    _write("ca-key-damaged", "ca-key.pem",
           b"-----BEGIN RSA PRIVATE KEY-----\n" + lines + b"\n-----END RSA PRIVATE KEY-----\n")


if __name__ == "__main__":
    main()
