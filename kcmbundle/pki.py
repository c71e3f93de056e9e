"""Keys and certificates: load the cluster CA, make keys, sign kube-controller-manager's certificate.

Nothing here touches the output folder. Time, serial numbers and keys come
from the caller (see ``Seams``) so that tests and reproducible builds can fix them.
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kcmbundle.config import CASource
from kcmbundle.errors import CAError, Problem

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

COMPONENT_NAME = "system:kube-controller-manager"
"""CN and O of the certificate: the user that the bootstrap RBAC ClusterRoleBinding
``system:kube-controller-manager`` grants the controller manager's permissions to."""

CLOCK_SKEW = timedelta(minutes=5)
"""How far notBefore is set back, so a master whose clock runs a little behind accepts the certificate."""

MAX_CA_FILE_BYTES = 1024 * 1024
"""Largest CA certificate or key file read; a chain of ten certificates is about 20 KiB."""

KEY_ALGORITHMS = ("rsa-2048", "rsa-3072", "rsa-4096", "ecdsa-p256", "ecdsa-p384")

_CURVES = {"ecdsa-p256": ec.SECP256R1, "ecdsa-p384": ec.SECP384R1}
_CURVE_NAMES = {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384", "secp521r1": "ecdsa-p521"}

_SUBJECT_OIDS = {
    "country": NameOID.COUNTRY_NAME,
    "province": NameOID.STATE_OR_PROVINCE_NAME,
    "locality": NameOID.LOCALITY_NAME,
    "organizationalUnit": NameOID.ORGANIZATIONAL_UNIT_NAME,
}


def generate_private_key(algorithm: str) -> PrivateKey:
    """Generate a new private key for one of ``KEY_ALGORITHMS``."""
    if algorithm.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm[4:]))
    return ec.generate_private_key(_CURVES[algorithm]())


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Seams:
    """Sources of time, serial numbers and keys, which tests replace."""

    clock: Callable[[], datetime] = utc_now
    serial: Callable[[], int] = x509.random_serial_number
    key_factory: Callable[[str], PrivateKey] = generate_private_key


@dataclass(frozen=True)
class CA:
    """A loaded, checked cluster CA."""

    certificate: x509.Certificate
    key: PrivateKey = field(repr=False)
    pem: bytes
    """The CA file's certificates as PEM, installed as ca.pem on the masters."""


@dataclass(frozen=True)
class IssuedCertificate:
    """A signed certificate and its key, with the facts the manifest records."""

    certificate: x509.Certificate
    key: PrivateKey = field(repr=False)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return encode_private_key(self.key)


def encode_private_key(key: PrivateKey) -> bytes:
    """Encode ``key`` as unencrypted PEM (PKCS#1 for RSA, SEC1 for EC), the forms cfssl writes."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def describe_key(key: PrivateKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    """Return the key's algorithm in config form, such as ``rsa-2048`` or ``ecdsa-p256``."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"rsa-{key.key_size}"
    return _CURVE_NAMES.get(key.curve.name, f"ecdsa-{key.curve.name}")


def load_ca(source: CASource, now: datetime) -> CA:
    """Load the CA certificate and key and check that they can sign.

    Raises:
        CAError: listing every problem found: unreadable or non-PEM files, a
        certificate that is not a CA, outside its validity, or a key that is
        encrypted without a passphrase, of an unsupported type, or not the
        certificate's key.
    """
    problems: list[Problem] = []
    cert_data = _read_ca_file("ca.cert", source.cert, problems)
    key_data = _read_ca_file("ca.key", source.key, problems)
    if cert_data is None or key_data is None:
        raise CAError(problems, summary="the CA cannot be used")

    certificates = _parse_certificates(cert_data, source.cert, problems)
    key = _parse_key(key_data, source, problems)
    if certificates:
        _check_is_ca(certificates[0], source.cert, now, problems)
    if certificates and key is not None and not _same_public_key(certificates[0], key):
        problems.append(Problem("ca.key", f"{source.key} is not the private key of the certificate in {source.cert}",
                                "Point ca.key at the key that belongs to ca.cert"))
    if problems:
        raise CAError(problems, summary="the CA cannot be used")

    assert key is not None
    pem = b"".join(certificate.public_bytes(serialization.Encoding.PEM) for certificate in certificates)
    return CA(certificate=certificates[0], key=key, pem=pem)


def _read_ca_file(field_name: str, path: Path, problems: list[Problem]) -> bytes | None:
    fix = "Check the path (relative to the config file), or create a CA with 'kcmbundle ca init'"
    try:
        if path.is_dir():
            problems.append(Problem(field_name, f"{path} is a directory", "Point it at the PEM file", str(path)))
            return None
        if path.exists() and not path.is_file():
            # A device or FIFO could block or never end, such as /dev/zero.
            problems.append(Problem(field_name, f"{path} is not a regular file", "Point it at the PEM file", str(path)))
            return None
        with path.open("rb") as stream:
            data = stream.read(MAX_CA_FILE_BYTES + 1)
        if len(data) > MAX_CA_FILE_BYTES:
            problems.append(Problem(field_name, f"{path} is larger than {MAX_CA_FILE_BYTES // 1024} KiB, "
                                                "too large for a CA certificate or key",
                                    "Point it at the PEM file of the cluster CA", str(path)))
            return None
        return data
    except FileNotFoundError:
        problems.append(Problem(field_name, "file not found", fix, str(path)))
    except PermissionError:
        problems.append(Problem(field_name, "file not readable (permission denied)",
                                "Run kcmbundle as a user who can read it, or fix the file's permissions", str(path)))
    except OSError as error:
        problems.append(Problem(field_name, f"file could not be read: {error.strerror}", fix, str(path)))
    return None


def _parse_certificates(data: bytes, path: Path, problems: list[Problem]) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        fix = "Point ca.cert at the CA certificate in PEM form (-----BEGIN CERTIFICATE-----)"
        if _is_der_certificate(data):
            fix = f"The file is DER; convert it with: openssl x509 -inform der -in {path} -out ca.pem"
        problems.append(Problem("ca.cert", f"{path} holds no PEM certificate", fix))
        return []
    try:
        # NOTE: with several certificates the first is the issuer; the others travel in ca.pem as a chain.
        return x509.load_pem_x509_certificates(data)
    except ValueError as error:
        problems.append(Problem("ca.cert", f"{path} holds an invalid PEM certificate: {error}",
                                "Replace it with the CA certificate in PEM form"))
        return []


def _is_der_certificate(data: bytes) -> bool:
    try:
        x509.load_der_x509_certificate(data)
    except ValueError:
        return False
    return True


def _parse_key(data: bytes, source: CASource, problems: list[Problem]) -> PrivateKey | None:
    password = None
    if source.passphrase_env:
        value = os.environ.get(source.passphrase_env)
        if not value and b"ENCRYPTED" in data:
            problems.append(Problem("ca.passphraseEnv",
                                    f"environment variable {source.passphrase_env} is "
                                    f"{'empty' if value == '' else 'not set'}",
                                    f"Export {source.passphrase_env} with the CA key's passphrase",
                                    source.passphrase_env))
            return None
        password = value.encode() if value else None

    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        problems.append(Problem("ca.key", f"{source.key} holds no PEM private key",
                                "Point ca.key at the CA's private key in PEM form"))
        return None

    try:
        key = _load_pem_key(data, password)
    except TypeError:
        # Either the key is encrypted and no passphrase was given, or a
        # passphrase was given for a key that is not encrypted.
        if password is None:
            problems.append(Problem("ca.key", f"{source.key} is encrypted and no passphrase was given",
                                    "Set ca.passphraseEnv to the name of an environment variable holding the passphrase"))
            return None
        try:
            key = _load_pem_key(data, None)
        except (TypeError, ValueError):
            problems.append(Problem("ca.key", f"{source.key} could not be loaded: the key is damaged or in an "
                                              "unsupported format", "Check that the file is a PEM RSA or EC private key"))
            return None
    except ValueError:
        # The library's message can quote parts of the key file, so none of it is shown.
        if password:
            reason = f"wrong passphrase in {source.passphrase_env}, or the key is damaged"
            fix = f"Check the passphrase in {source.passphrase_env} and that the file is a PEM RSA or EC private key"
        else:
            reason = "the key is damaged or in an unsupported format"
            fix = "Check that the file is a PEM RSA or EC private key"
        problems.append(Problem("ca.key", f"{source.key} could not be loaded: {reason}", fix))
        return None

    if isinstance(key, dsa.DSAPrivateKey):
        problems.append(Problem("ca.key", f"{source.key} is a DSA key, which Kubernetes does not accept",
                                "Use an RSA or ECDSA CA"))
        return None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        problems.append(Problem("ca.key", f"{source.key} is an {_key_type_name(key)} key, "
                                          "which kube-controller-manager cannot sign with",
                                "Use an RSA or ECDSA CA"))
        return None
    damage = _rsa_damage(key) if isinstance(key, rsa.RSAPrivateKey) else None
    if damage is not None:
        problems.append(Problem("ca.key", f"{source.key} could not be loaded: the key is damaged ({damage})",
                                "Restore the CA key from a backup"))
        return None
    return key


def _load_pem_key(data: bytes, password: bytes | None) -> object:
    # OpenSSL's full RSA check also tests that both factors are prime, which
    # took about 0.1 s for a 2048-bit key on the benchmark machine.
    # _rsa_damage checks the rest in a few milliseconds.
    return serialization.load_pem_private_key(data, password=password, unsafe_skip_rsa_key_validation=True)


def _rsa_damage(key: rsa.RSAPrivateKey) -> str | None:
    """Return what is inconsistent in an RSA private key, or None when nothing is.

    These are the checks Go's crypto/rsa makes when kube-controller-manager
    loads a key, plus a test signature.
    """
    numbers = key.private_numbers()
    p, q, d = numbers.p, numbers.q, numbers.d
    public = numbers.public_numbers
    if p < 2 or q < 2 or p * q != public.n:
        return "its two factors do not multiply to its modulus"
    if (d * public.e) % math.lcm(p - 1, q - 1) != 1:
        return "its private exponent does not match its public exponent"
    try:
        expected = (rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q))
    except ValueError:
        return "its factors have no CRT coefficients"
    if (numbers.dmp1, numbers.dmq1, numbers.iqmp) != expected:
        return "its CRT values do not match its factors"
    if not _signs_correctly(key):
        return "a test signature made with it does not verify"
    return None


def _signs_correctly(key: rsa.RSAPrivateKey) -> bool:
    message = b"kcmbundle CA key self-test"
    try:
        signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        key.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def _key_type_name(key: object) -> str:
    # Ed25519PrivateKey -> Ed25519; the Rust-backed classes may carry a leading underscore.
    return type(key).__name__.lstrip("_").removesuffix("PrivateKey") or "unknown"


def _check_is_ca(certificate: x509.Certificate, path: Path, now: datetime, problems: list[Problem]) -> None:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        problems.append(Problem("ca.cert", f"{path} is not a CA certificate (basicConstraints CA:TRUE missing)",
                                "Point ca.cert at the cluster CA, not at a leaf certificate"))

    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.key_cert_sign:
            problems.append(Problem("ca.cert", f"{path} may not sign certificates (keyUsage lacks keyCertSign)",
                                    "Use a CA certificate whose key usage includes keyCertSign"))
    except x509.ExtensionNotFound:
        pass

    if certificate.not_valid_after_utc <= now:
        problems.append(Problem("ca.cert", f"the CA expired on {_iso(certificate.not_valid_after_utc)}",
                                "Renew the cluster CA before building bundles"))
    if certificate.not_valid_before_utc > now:
        problems.append(Problem("ca.cert", f"the CA is not valid until {_iso(certificate.not_valid_before_utc)}",
                                "Check this machine's clock, or wait until the CA is valid"))


def _same_public_key(certificate: x509.Certificate, key: PrivateKey) -> bool:
    encoding = serialization.Encoding.DER
    public_format = serialization.PublicFormat.SubjectPublicKeyInfo
    return certificate.public_key().public_bytes(encoding, public_format) == key.public_key().public_bytes(
        encoding, public_format)


def check_ca_outlives(ca: CA, not_after: datetime) -> None:
    """Raise ``CAError`` when the CA expires before a certificate valid until ``not_after``."""
    ca_not_after = ca.certificate.not_valid_after_utc
    if ca_not_after < not_after:
        raise CAError([Problem(
            "certificate.validity",
            f"the certificate would be valid until {_iso(not_after)}, after the CA expires on {_iso(ca_not_after)}",
            "Shorten certificate.validity, or renew the CA first")])


def build_subject(extra: Iterable[tuple[str, str]]) -> x509.Name:
    """Return the certificate subject: C, ST, L, O, OU, CN in the order cfssl writes them."""
    values = dict(extra)
    attributes = [x509.NameAttribute(_SUBJECT_OIDS[name], values[name])
                  for name in ("country", "province", "locality") if name in values]
    attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, COMPONENT_NAME))
    if "organizationalUnit" in values:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, values["organizationalUnit"]))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, COMPONENT_NAME))
    return x509.Name(attributes)


def build_sans(names: Iterable[str]) -> list[x509.GeneralName]:
    """Turn IP addresses and DNS names into SAN entries: DNS names first, then IPs, without duplicates."""
    dns: list[x509.GeneralName] = []
    ips: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            ips.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            dns.append(x509.DNSName(name))
    return dns + ips


def issue_certificate(
    ca: CA,
    key: PrivateKey,
    *,
    subject: x509.Name,
    sans: list[x509.GeneralName],
    now: datetime,
    validity: timedelta,
    serial: int,
) -> IssuedCertificate:
    """Sign a certificate for ``key`` that serves as both a client and a serving certificate.

    kube-controller-manager presents the same certificate to kube-apiserver
    (client auth) and on its secure port 10257 (server auth), as the classic
    binary install does, so both extended key usages are set.
    """
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,  # TLS handshakes, both as client and server
                content_commitment=False,
                key_encipherment=is_rsa,  # RSA key exchange in TLS 1.2; meaningless for EC keys
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(ca.certificate), critical=False)
    )
    certificate = builder.sign(ca.key, _signature_hash(ca.key))
    return IssuedCertificate(certificate=certificate, key=key)


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]


def _signature_hash(key: PrivateKey) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def create_ca(
    *,
    common_name: str,
    key_algorithm: str,
    validity: timedelta,
    seams: Seams = Seams(),
) -> tuple[bytes, bytes]:
    """Create a self-signed cluster CA for labs and tests; return (cert PEM, key PEM)."""
    key = seams.key_factory(key_algorithm)
    now = seams.clock()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(seams.serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,  # lets the same key sign service-account tokens, as the classic guide does
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,  # signs component and kubelet certificates
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _signature_hash(key))
    )
    return certificate.public_bytes(serialization.Encoding.PEM), encode_private_key(key)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_time(moment: datetime) -> str:
    """Format a time as RFC 3339 UTC with second precision, as the manifest records it."""
    return _iso(moment)


def san_strings(certificate: x509.Certificate) -> list[str]:
    """Return the certificate's SANs as plain strings: DNS names, then IP addresses."""
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in sans if isinstance(name, (x509.DNSName, x509.IPAddress))]
