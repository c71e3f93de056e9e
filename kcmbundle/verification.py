"""Check a bundle before it is installed: checksums, signature, certificate chain, key, kubeconfig, SANs, expiry.

``verify_bundle`` runs every check, even after a failure, and raises one
``VerificationError`` listing all failures, so an operator sees everything
wrong with a bundle at once.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from kcmbundle.errors import BundleError, Problem, VerificationError
from kcmbundle.inspection import (KUBECONFIG_KEY_FIELD, BundleParts, embedded_data, find_parts, load_certificates,
                                  load_kubeconfig, load_private_key, public_key_der)
from kcmbundle.pki import iso_time
from kcmbundle.reader import BundleContents

DEFAULT_WARN_DAYS = 30

CHECKSUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.sig"

REBUILD = "Do not install this bundle; build it again with 'kcmbundle build'"


class _Checks:
    """The passed checks and the problems found so far."""

    def __init__(self) -> None:
        self.passed: list[str] = []
        self.problems: list[Problem] = []

    def fail(self, path: str, message: str, fix: str = REBUILD) -> None:
        self.problems.append(Problem(path, message, fix))


def verify_bundle(
    contents: BundleContents,
    *,
    now: datetime,
    warn_days: int = DEFAULT_WARN_DAYS,
    ca_pem: bytes | None = None,
    ca_source: str = "--ca",
    signing_key_pem: bytes | None = None,
) -> list[str]:
    """Run every check on a bundle and return one line per passed check.

    Args:
        ca_pem: the trusted CA certificate(s); None trusts the bundle's own ca.pem.
        ca_source: how messages name ``ca_pem``, such as its file name.
        signing_key_pem: an Ed25519 public key; when given, SHA256SUMS.sig must be its valid signature.

    Raises:
        VerificationError: one or more checks failed; every failure is listed.
        BundleError: MANIFEST.json is missing or invalid, so nothing can be checked.
    """
    checks = _Checks()
    manifest = contents.manifest()
    _check_checksums(contents, checks)
    _check_manifest_files(contents, manifest, checks)
    if signing_key_pem is not None:
        _check_signature(contents, signing_key_pem, checks)

    parts = find_parts(contents)
    certificate = _load_leaf(contents, parts, checks)
    bundle_cas = _load_bundle_ca(contents, parts, checks)
    trusted = bundle_cas
    if ca_pem is not None:
        trusted = _load_trusted_ca(ca_pem, ca_source, bundle_cas, parts, checks)

    if certificate is not None:
        _check_chain(certificate, trusted, ca_source if ca_pem is not None else _path(parts.ca), parts, checks)
        _check_key(contents, certificate, parts, checks)
        _check_sans(certificate, manifest, parts, checks)
        _check_validity(certificate, _path(parts.certificate), "certificate", now, warn_days, checks)
    for ca in trusted[:1]:
        _check_validity(ca, ca_source if ca_pem is not None else _path(parts.ca), "CA", now, warn_days, checks)
    _check_kubeconfig(contents, parts, checks)

    if checks.problems:
        raise VerificationError(checks.problems,
                                summary=f"{contents.source}: verification failed "
                                        f"({len(checks.problems)} problem(s))")
    return checks.passed


def _path(member: Any) -> str:
    return member.path if member is not None else "bundle"


def _check_checksums(contents: BundleContents, checks: _Checks) -> None:
    member = contents.get(CHECKSUMS)
    if member is None:
        checks.fail(CHECKSUMS, "missing, so the files cannot be checked")
        return

    listed: dict[str, str] = {}
    for number, line in enumerate(member.content.decode("utf-8", errors="replace").splitlines(), start=1):
        digest, separator, path = line.partition("  ")
        if not separator or len(digest) != 64:
            checks.fail(CHECKSUMS, f"line {number} is invalid, expected '<sha256>  <path>'")
            continue
        listed[path] = digest

    bad = False
    for path, digest in listed.items():
        listed_member = contents.get(path)
        if listed_member is None:
            checks.fail(path, "listed in SHA256SUMS but missing from the bundle")
            bad = True
        elif listed_member.sha256 != digest:
            checks.fail(path, "checksum mismatch: the file differs from SHA256SUMS, so it was modified")
            bad = True
    for path in contents.members:
        if path not in listed and path not in (CHECKSUMS, SIGNATURE):
            checks.fail(path, "not listed in SHA256SUMS, so it was added after the build")
            bad = True
    if not bad:
        checks.passed.append(f"checksums: {len(listed)} files match SHA256SUMS")


def _check_manifest_files(contents: BundleContents, manifest: dict[str, Any], checks: _Checks) -> None:
    entries = manifest.get("files")
    if not isinstance(entries, list):
        checks.fail("MANIFEST.json", "invalid manifest: 'files' is not a list")
        return
    bad = False
    for entry in entries:
        path = str(entry.get("path")) if isinstance(entry, dict) else "?"
        member = contents.get(path)
        if member is None:
            checks.fail(path, "listed in MANIFEST.json but missing from the bundle")
            bad = True
            continue
        if member.sha256 != entry.get("sha256"):
            checks.fail(path, "checksum differs from MANIFEST.json")
            bad = True
        if format(member.mode, "04o") != entry.get("mode"):
            checks.fail(path, f"mode {member.mode:04o} differs from {entry.get('mode')} in MANIFEST.json")
            bad = True
    if not bad:
        checks.passed.append(f"manifest: {len(entries)} installed files match their checksums and modes")


def _check_signature(contents: BundleContents, public_pem: bytes, checks: _Checks) -> None:
    from kcmbundle.signing import load_public_key

    public_key = load_public_key(public_pem, "--key")
    sums, signature = contents.get(CHECKSUMS), contents.get(SIGNATURE)
    if signature is None:
        checks.fail(SIGNATURE, "missing: the bundle is not signed",
                    "Build it with 'kcmbundle build --sign-key KEY', or verify without --key")
        return
    if sums is None:
        return  # already reported by the checksum check
    try:
        public_key.verify(signature.content, sums.content)
    except InvalidSignature:
        checks.fail(SIGNATURE, "invalid signature: SHA256SUMS was modified or signed with another key", REBUILD)
        return
    checks.passed.append("signature: SHA256SUMS.sig is a valid signature by --key")


def _load_leaf(contents: BundleContents, parts: BundleParts, checks: _Checks) -> x509.Certificate | None:
    if parts.certificate is None:
        checks.fail("rootfs", "kube-controller-manager's certificate not found")
        return None
    try:
        return load_certificates(parts.certificate.content, contents.where(parts.certificate.path))[0]
    except BundleError as error:
        checks.fail(parts.certificate.path, str(error))
        return None


def _load_bundle_ca(contents: BundleContents, parts: BundleParts, checks: _Checks) -> list[x509.Certificate]:
    if parts.ca is None:
        checks.fail("rootfs", "the CA certificate (the manifest's service.caFile) not found")
        return []
    try:
        return load_certificates(parts.ca.content, contents.where(parts.ca.path))
    except BundleError as error:
        checks.fail(parts.ca.path, str(error))
        return []


def _load_trusted_ca(ca_pem: bytes, ca_source: str, bundle_cas: list[x509.Certificate], parts: BundleParts,
                     checks: _Checks) -> list[x509.Certificate]:
    trusted = load_certificates(ca_pem, ca_source)
    if bundle_cas and trusted[0] not in bundle_cas:
        checks.fail(_path(parts.ca), f"the bundle's CA is not the CA in {ca_source}, "
                                     "so the master would trust another CA")
    return trusted


def _check_chain(certificate: x509.Certificate, cas: list[x509.Certificate], ca_name: str, parts: BundleParts,
                 checks: _Checks) -> None:
    if not cas:
        return
    for ca in cas:
        try:
            certificate.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        checks.passed.append(f"chain: the certificate is signed by {ca.subject.rfc4514_string()} ({ca_name})")
        return
    checks.fail(_path(parts.certificate),
                f"not signed by the CA in {ca_name} (issuer {certificate.issuer.rfc4514_string()}, "
                f"CA {cas[0].subject.rfc4514_string()})")


def _check_key(contents: BundleContents, certificate: x509.Certificate, parts: BundleParts, checks: _Checks) -> None:
    if parts.key is None:
        checks.fail("rootfs", "kube-controller-manager's private key not found")
        return
    try:
        key = load_private_key(parts.key.content, contents.where(parts.key.path))
    except BundleError as error:
        checks.fail(parts.key.path, str(error))
        return
    if public_key_der(key) != public_key_der(certificate.public_key()):
        checks.fail(parts.key.path, f"not the private key of the certificate in {_path(parts.certificate)}")
        return
    checks.passed.append("key: the private key matches the certificate")


def _check_sans(certificate: x509.Certificate, manifest: dict[str, Any], parts: BundleParts,
                checks: _Checks) -> None:
    master = manifest.get("master") or {}
    try:
        address = ipaddress.ip_address(str(master.get("ip")))
    except ValueError:
        checks.fail("MANIFEST.json", f"invalid master.ip {master.get('ip')!r}")
        return
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        addresses = sans.get_values_for_type(x509.IPAddress)
    except x509.ExtensionNotFound:
        addresses = []
    if address not in addresses:
        checks.fail(_path(parts.certificate), f"the SANs do not include the master's IP {address}",
                    "Add the master to the config's masters or certificate.extraSANs and build again")
        return
    checks.passed.append(f"SANs: include the master's IP {address}")


def _check_validity(certificate: x509.Certificate, path: str, label: str, now: datetime, warn_days: int,
                    checks: _Checks) -> None:
    not_after = certificate.not_valid_after_utc
    not_before = certificate.not_valid_before_utc
    if not_after <= now:
        checks.fail(path, f"the {label} expired on {iso_time(not_after)}",
                    "Renew it with 'kcmbundle renew'" if label == "certificate" else "Renew the cluster CA")
    elif not_after - now < timedelta(days=warn_days):
        checks.fail(path, f"the {label} expires on {iso_time(not_after)}, within {warn_days} days",
                    "Renew it with 'kcmbundle renew', or lower --warn-days" if label == "certificate"
                    else "Plan the CA's renewal, or lower --warn-days")
    elif not_before > now:
        checks.fail(path, f"the {label} is not valid until {iso_time(not_before)}",
                    "Check this machine's clock")
    else:
        checks.passed.append(f"validity: the {label} is valid until {iso_time(not_after)}")


def _check_kubeconfig(contents: BundleContents, parts: BundleParts, checks: _Checks) -> None:
    if parts.kubeconfig is None:
        checks.fail("rootfs", "the kubeconfig not found")
        return
    path = parts.kubeconfig.path
    try:
        document = load_kubeconfig(parts.kubeconfig.content, contents.where(path))
        embedded = embedded_data(document, contents.where(path))
    except BundleError as error:
        checks.fail(path, str(error))
        return

    expected = {
        "certificate-authority-data": parts.ca,
        "client-certificate-data": parts.certificate,
        KUBECONFIG_KEY_FIELD: parts.key,
    }
    found = {item.field: item for item in embedded}
    bad = False
    for field, member in expected.items():
        item = found.get(field)
        if item is None:
            checks.fail(path, f"{field} missing; the kubeconfig must embed it")
            bad = True
        elif member is not None and item.content != member.content:
            checks.fail(path, f"{item.location} differs from {member.path}")
            bad = True
    if not bad:
        checks.passed.append("kubeconfig: embeds the same CA, certificate and key as the bundle's files")
