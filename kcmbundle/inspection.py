"""Describe a bundle for a reviewer: manifest, certificates, the unit's flags and the file list.

The helpers here also find a bundle's parts (CA, certificate, key,
kubeconfig, unit) and turn certificates into plain facts, for ``verify``,
``diff`` and ``check-expiration``. Nothing here prints key material: a
private key is described by its algorithm and public-key fingerprint only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from kcmbundle.errors import BundleError
from kcmbundle.pki import iso_time, san_strings
from kcmbundle.reader import BundleContents, BundleMember

SECONDS_PER_DAY = 86400

KUBECONFIG_CERTIFICATE_FIELDS = ("certificate-authority-data", "client-certificate-data")
KUBECONFIG_KEY_FIELD = "client-key-data"


def load_certificates(data: bytes, where: str) -> list[x509.Certificate]:
    """Parse every PEM certificate in ``data``.

    Raises:
        BundleError: ``data`` contains no certificate or an invalid one; ``where`` names the file.
    """
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise BundleError(f"{where}: no PEM certificate found")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise BundleError(f"{where}: invalid PEM certificate ({error})") from None


def load_private_key(data: bytes, where: str) -> Any:
    """Parse an unencrypted PEM private key.

    Raises:
        BundleError: the key is missing, encrypted or invalid. The message never quotes the file.
    """
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise BundleError(f"{where}: invalid or encrypted PEM private key") from None


def public_key_der(key: Any) -> bytes:
    """Return the SubjectPublicKeyInfo DER of a public key, or of a private key's public half."""
    if hasattr(key, "public_key"):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_fingerprint(key: Any) -> str:
    """Return ``sha256:<hex>`` of the SubjectPublicKeyInfo, which identifies a key without revealing it."""
    return "sha256:" + hashlib.sha256(public_key_der(key)).hexdigest()


def key_algorithm(key: Any) -> str:
    """Return a key's algorithm in config form, such as ``rsa-2048`` or ``ecdsa-p256``."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"rsa-{key.key_size}"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}.get(key.curve.name, f"ecdsa-{key.curve.name}")
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    return type(key).__name__.removeprefix("_")


def days_left(not_after: datetime, now: datetime) -> int:
    """Return whole days from ``now`` to ``not_after``, rounded down; negative once expired."""
    return math.floor((not_after - now).total_seconds() / SECONDS_PER_DAY)


def describe_certificate(certificate: x509.Certificate, now: datetime) -> dict[str, Any]:
    """Return a certificate's reviewable facts; ``daysLeft`` counts from ``now``."""
    public_key = certificate.public_key()
    return {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": format(certificate.serial_number, "x"),
        "sans": san_strings(certificate),
        "keyAlgorithm": key_algorithm(public_key),
        "keyFingerprint": key_fingerprint(public_key),
        "isCA": _is_ca(certificate),
        "notBefore": iso_time(certificate.not_valid_before_utc),
        "notAfter": iso_time(certificate.not_valid_after_utc),
        "daysLeft": days_left(certificate.not_valid_after_utc, now),
    }


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def load_kubeconfig(data: bytes, where: str) -> dict[str, Any]:
    """Parse a kubeconfig as YAML.

    Raises:
        BundleError: the file is not YAML or not a ``kind: Config`` mapping.
    """
    import yaml

    try:
        document = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise BundleError(f"{where}: invalid kubeconfig YAML ({type(error).__name__})") from None
    if not is_kubeconfig_document(document):
        raise BundleError(f"{where}: not a kubeconfig (no 'kind: Config')")
    return document


def is_kubeconfig_document(document: Any) -> bool:
    return isinstance(document, dict) and document.get("kind") == "Config"


@dataclass(frozen=True)
class EmbeddedData:
    """One ``*-data`` field of a kubeconfig, decoded."""

    location: str
    """The field's path, such as ``users[0].user.client-certificate-data``."""
    field: str
    content: bytes


def embedded_data(document: dict[str, Any], where: str) -> list[EmbeddedData]:
    """Return the decoded certificate and key fields of a kubeconfig, in file order.

    Raises:
        BundleError: a field is not valid base64.
    """
    found = []
    for section, inner in (("clusters", "cluster"), ("users", "user")):
        entries = document.get(section) or []
        if not isinstance(entries, list):
            continue
        for index, entry in enumerate(entries):
            body = entry.get(inner) if isinstance(entry, dict) else None
            if not isinstance(body, dict):
                continue
            for name in (*KUBECONFIG_CERTIFICATE_FIELDS, KUBECONFIG_KEY_FIELD):
                value = body.get(name)
                if value is None:
                    continue
                location = f"{section}[{index}].{inner}.{name}"
                try:
                    content = base64.b64decode(str(value), validate=True)
                except (binascii.Error, ValueError):
                    raise BundleError(f"{where}: {location} is not valid base64") from None
                found.append(EmbeddedData(location, name, content))
    return found


@dataclass(frozen=True)
class BundleParts:
    """The members of a bundle by role; a role is None when the bundle lacks it."""

    ca: BundleMember | None
    certificate: BundleMember | None
    key: BundleMember | None
    kubeconfig: BundleMember | None
    unit: BundleMember | None


def find_parts(contents: BundleContents) -> BundleParts:
    """Find the CA, certificate, key, kubeconfig and unit among the files under ``rootfs/``.

    The CA is the file installed at the manifest's ``service.caFile``; the
    other roles are identified by content, so a renamed path is still found.
    """
    manifest = contents.manifest()
    ca_path = str((manifest.get("service") or {}).get("caFile", ""))
    ca = certificate = key = kubeconfig = unit = None
    for member in contents.members.values():
        if member.install_path is None:
            continue
        if member.install_path.endswith(".service"):
            unit = unit or member
        elif b"PRIVATE KEY-----" in member.content and b"-----BEGIN CERTIFICATE-----" not in member.content:
            key = key or member
        elif b"-----BEGIN CERTIFICATE-----" in member.content:
            if member.install_path == ca_path:
                ca = member
            else:
                certificate = certificate or member
        elif b"kind: Config" in member.content:
            kubeconfig = kubeconfig or member
    return BundleParts(ca=ca, certificate=certificate, key=key, kubeconfig=kubeconfig, unit=unit)


def parse_exec_start(unit_text: str) -> tuple[str, list[dict[str, str | None]]]:
    """Return the binary and the flags of a unit's ExecStart line.

    Continuation lines are joined, words are split and unquoted the way
    systemd does for the forms ``unit.systemd_quote`` writes (double quotes,
    ``\\"``, ``\\\\``, ``%%``, ``$$``). A flag written ``--name value`` takes
    the next word as its value; a lone ``--name`` has the value None.
    """
    words = _split_systemd_words(_exec_start_text(unit_text))
    if not words:
        return "", []
    binary, arguments = words[0].lstrip("-@:+!"), words[1:]
    flags: list[dict[str, str | None]] = []
    index = 0
    while index < len(arguments):
        word = arguments[index]
        index += 1
        if not word.startswith("-"):
            flags.append({"name": "", "value": word})
            continue
        name, equals, value = word.lstrip("-").partition("=")
        if equals:
            flags.append({"name": name, "value": value})
        elif index < len(arguments) and not arguments[index].startswith("-"):
            flags.append({"name": name, "value": arguments[index]})
            index += 1
        else:
            flags.append({"name": name, "value": None})
    return binary, flags


def _exec_start_text(unit_text: str) -> str:
    lines = unit_text.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("ExecStart="):
            joined = line.strip().removeprefix("ExecStart=")
            while joined.endswith("\\") and index + 1 < len(lines):
                index += 1
                joined = joined[:-1] + " " + lines[index].strip()
            return joined
    return ""


def _split_systemd_words(text: str) -> list[str]:
    words: list[str] = []
    current: list[str] = []
    in_word = quoted = False
    index = 0
    while index < len(text):
        character = text[index]
        if quoted:
            if character == "\\" and index + 1 < len(text):
                index += 1
                current.append(text[index])
            elif character == '"':
                quoted = False
            else:
                current.append(character)
        elif character.isspace():
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        elif character == '"':
            quoted = in_word = True
        elif character == "\\" and index + 1 < len(text):
            index += 1
            current.append(text[index])
            in_word = True
        else:
            current.append(character)
            in_word = True
        index += 1
    if in_word:
        words.append("".join(current))
    return [word.replace("%%", "%").replace("$$", "$") for word in words]


def certificate_entries(contents: BundleContents, now: datetime) -> list[dict[str, Any]]:
    """Describe every certificate of a bundle: in PEM files and embedded in kubeconfigs.

    Each entry has the facts of ``describe_certificate`` plus ``file`` (the
    bundle path) and ``location`` (the PEM position, or the kubeconfig field).
    """
    entries = []
    for member in contents.members.values():
        where = contents.where(member.path)
        if b"-----BEGIN CERTIFICATE-----" in member.content:
            for index, certificate in enumerate(load_certificates(member.content, where)):
                entries.append({"file": member.path, "location": f"certificate {index + 1}",
                                **describe_certificate(certificate, now)})
        elif member.install_path is not None and b"kind: Config" in member.content:
            document = load_kubeconfig(member.content, where)
            for item in embedded_data(document, where):
                if item.field == KUBECONFIG_KEY_FIELD:
                    continue
                for certificate in load_certificates(item.content, f"{where}: {item.location}"):
                    entries.append({"file": member.path, "location": item.location,
                                    **describe_certificate(certificate, now)})
    return entries


def inspect_bundle(contents: BundleContents, now: datetime) -> dict[str, Any]:
    """Return what ``kcmbundle inspect`` reports about a bundle, as JSON-ready data.

    Raises:
        BundleError: MANIFEST.json or a certificate or kubeconfig cannot be parsed.
    """
    manifest = contents.manifest()
    parts = find_parts(contents)
    unit: dict[str, Any] | None = None
    if parts.unit is not None:
        binary, flags = parse_exec_start(parts.unit.content.decode("utf-8", errors="replace"))
        unit = {"file": parts.unit.path, "binary": binary, "flags": flags}

    key: dict[str, Any] | None = None
    if parts.key is not None:
        private_key = load_private_key(parts.key.content, contents.where(parts.key.path))
        key = {"file": parts.key.path, "algorithm": key_algorithm(private_key),
               "publicKeyFingerprint": key_fingerprint(private_key)}

    return {
        "source": contents.source,
        "top": contents.top,
        "manifest": manifest,
        "certificates": certificate_entries(contents, now),
        "privateKey": key,
        "unit": unit,
        "files": [
            {"path": member.path, "installPath": member.install_path, "mode": format(member.mode, "04o"),
             "size": member.size, "sha256": member.sha256}
            for member in contents.members.values()
        ],
    }


def format_inspection(report: dict[str, Any]) -> str:
    """Lay out an ``inspect_bundle`` report as text for a terminal."""
    manifest = report["manifest"]
    master = manifest.get("master") or {}
    lines = [
        f"bundle     {report['source']} (top folder {report['top']}/)",
        f"cluster    {manifest.get('cluster')}, Kubernetes {manifest.get('kubernetesVersion')}, "
        f"built by kcmbundle {manifest.get('kcmbundle')}",
        f"master     {master.get('name')} ({master.get('ip')})",
        f"apiserver  {manifest.get('apiServer')}",
        "",
        "Certificates",
    ]
    for entry in report["certificates"]:
        lines += [
            f"  {entry['file']} ({entry['location']})",
            f"    subject    {entry['subject']}",
            f"    issuer     {entry['issuer']}",
            f"    SANs       {', '.join(entry['sans']) or '(none)'}",
            f"    serial     {entry['serial']}",
            f"    key        {entry['keyAlgorithm']}",
            f"    notBefore  {entry['notBefore']}",
            f"    notAfter   {entry['notAfter']} ({entry['daysLeft']} days left)",
        ]
    if report["privateKey"]:
        key = report["privateKey"]
        lines += ["", "Private key", f"  {key['file']}: {key['algorithm']}, public key {key['publicKeyFingerprint']}"]
    if report["unit"]:
        unit = report["unit"]
        lines += ["", f"Unit {unit['file']}", f"  binary  {unit['binary']}"]
        for flag in unit["flags"]:
            shown = f"--{flag['name']}" if flag["value"] is None else f"--{flag['name']}={flag['value']}"
            lines.append(f"  {shown}")
    lines += ["", "Files"]
    for item in report["files"]:
        target = f" -> {item['installPath']}" if item["installPath"] else ""
        lines.append(f"  {item['mode']}  {item['path']}{target}")
    return "\n".join(lines) + "\n"
