"""Render the files a bundle would contain, for review, without keys or the CA key.

The files are laid out by ``bundle.lay_out_files``, the same code ``build``
uses, from placeholder PEM texts. Then each file that would hold key or
certificate data is replaced by a readable summary, and every checksum that
depends on build-time data reads ``(set at build time)``. The result is the
same on every run, so it can be committed and compared as a diff.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kcmbundle.archive import write_atomically
from kcmbundle.build import select_masters
from kcmbundle.bundle import BundleFile, certificate_names, lay_out_files
from kcmbundle.config import Config, Master, load_config
from kcmbundle.errors import CAError, Problem
from kcmbundle.inspection import (KUBECONFIG_CERTIFICATE_FIELDS, KUBECONFIG_KEY_FIELD, describe_certificate,
                                  is_kubeconfig_document)
from kcmbundle.pki import CLOCK_SKEW, build_sans, build_subject, utc_now
from kcmbundle.unit import command_flags

AT_BUILD = "(set at build time)"

_CERT_MARK = b"kcmbundle-render: certificate placeholder\n"
_KEY_MARK = b"kcmbundle-render: private key placeholder\n"
_BINARY_MARK = b"kcmbundle-render: binary placeholder\n"

# Fields of describe_certificate that stay the same from run to run; daysLeft does not.
_STABLE_FIELDS = ("subject", "issuer", "serial", "sans", "keyAlgorithm", "notBefore", "notAfter")
REVIEW_FIELDS = (*_STABLE_FIELDS, "keyFingerprint")
"""The certificate fields ``kcmbundle diff`` compares."""


@dataclass(frozen=True)
class RenderedFile:
    """One file as review text."""

    path: str
    text: str
    mode: int
    facts: Any = None
    """For key and certificate files: what ``kcmbundle diff`` compares field by field.

    A list of certificate facts, a dict of key facts, or for the kubeconfig
    a dict from each embedded field's location to those."""


@dataclass(frozen=True)
class RenderedBundle:
    """The review text of one master's bundle."""

    top: str
    master: str
    files: tuple[RenderedFile, ...]


def render_config(config_path: Path, *, masters: Sequence[str] = ()) -> list[RenderedBundle]:
    """Render the bundles of the selected masters (all when ``masters`` is empty).

    Raises:
        ConfigError: the config is invalid.
        CAError: the CA certificate cannot be read. The CA key is never read.
        UsageError: a name in ``masters`` is not a master of the config.
    """
    config = load_config(config_path)
    selected = select_masters(config, masters)
    ca_certificates = read_ca_certificates(config)
    return [render_master(config, master, ca_certificates) for master in selected]


def read_ca_certificates(config: Config) -> list[x509.Certificate]:
    """Read the CA certificate file named by the config.

    Raises:
        CAError: the file is missing, unreadable or contains no valid PEM certificate.
    """
    path = config.ca.cert
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CAError([Problem("ca.cert", f"could not be read: {error.strerror}",
                               "Check the path (relative to the config file)", str(path))]) from None
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CAError([Problem("ca.cert", "no valid PEM certificate found",
                               "Point ca.cert at the CA certificate in PEM form", str(path))]) from None


def planned_certificate(config: Config, ca: x509.Certificate, covered: Sequence[Master]) -> dict[str, Any]:
    """Return the manifest's certificate section for a certificate not yet issued."""
    sans = build_sans(certificate_names(config, covered))
    return {
        "subject": build_subject(config.certificate.subject).rfc4514_string(),
        "issuer": ca.subject.rfc4514_string(),
        "serial": AT_BUILD,
        "sans": [str(name.value) for name in sans],
        "keyAlgorithm": config.certificate.key_algorithm,
        "notBefore": f"(build time - {go_duration(CLOCK_SKEW)})",
        "notAfter": f"(build time + {go_duration(config.certificate.validity)})",
        "shared": not config.certificate.per_master,
    }


def go_duration(duration: timedelta) -> str:
    """Format a duration the way the config writes it, such as ``8760h`` or ``5m``."""
    seconds = int(duration.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{seconds}s" if seconds else ""]
    return "".join(parts) or "0s"


def render_master(config: Config, master: Master, ca_certificates: list[x509.Certificate]) -> RenderedBundle:
    """Render one master's bundle as review text."""
    covered = config.masters if not config.certificate.per_master else [master]
    planned = planned_certificate(config, ca_certificates[0], covered)
    ca_pem = b"".join(certificate.public_bytes(serialization.Encoding.PEM) for certificate in ca_certificates)
    binary = _BINARY_MARK if config.binary is not None else None
    files = lay_out_files(config, master, command_flags(config), binary, ca_pem=ca_pem, cert_pem=_CERT_MARK,
                          key_pem=_KEY_MARK, certificate=planned)

    # Checksums of placeholder bytes would look real, so each is replaced wherever it appears.
    replacements = _checksum_replacements(config, files)
    ca_facts = [review_facts(certificate) for certificate in ca_certificates]
    planned_facts = [{**{name: planned[name] for name in _STABLE_FIELDS}, "keyFingerprint": AT_BUILD}]
    key_facts = {"keyAlgorithm": config.certificate.key_algorithm, "keyFingerprint": AT_BUILD}
    summaries = {
        str(config.paths.ca_cert): (summarize_certificates(ca_certificates), ca_facts),
        str(config.paths.cert): (summarize_planned(planned), planned_facts),
        str(config.paths.key): (summarize_key(config.certificate.key_algorithm), key_facts),
        str(config.paths.binary): (_summarize_binary(config), None),
    }
    embedded_facts = {"certificate-authority-data": ca_facts, "client-certificate-data": planned_facts,
                      KUBECONFIG_KEY_FIELD: key_facts}

    rendered = []
    for bundle_file in files:
        if bundle_file.path == "SHA256SUMS":
            continue
        facts = None
        if bundle_file.install_path in summaries:
            text, facts = summaries[bundle_file.install_path]
        elif bundle_file.install_path == str(config.paths.kubeconfig):
            text = summarize_kubeconfig(bundle_file.content, ca_certificates, planned, config)
            facts = {}
            document = yaml_load(bundle_file.content)
            replace_embedded(document, lambda location, field, value: facts.setdefault(location, embedded_facts[field]))
        else:
            text = _replace_all(bundle_file.content.decode("utf-8"), replacements)
        rendered.append(RenderedFile(bundle_file.path, text, bundle_file.mode, facts))

    rendered.append(RenderedFile("SHA256SUMS", _checksums(files, replacements), 0o644))
    rendered.sort(key=lambda item: item.path)
    return RenderedBundle(top=f"{config.cluster.name}-{master.name}", master=master.name, files=tuple(rendered))


def _checksum_replacements(config: Config, files: tuple[BundleFile, ...]) -> dict[str, str]:
    replacements = {}
    for bundle_file in files:
        if bundle_file.content == _BINARY_MARK and config.binary is not None:
            replacements[bundle_file.sha256] = config.binary.sha256
        elif _depends_on_build(bundle_file):
            replacements[bundle_file.sha256] = AT_BUILD
    return replacements


def _depends_on_build(bundle_file: BundleFile) -> bool:
    """Return True when the built file would differ from the laid-out one (keys, certificates, build times)."""
    content = bundle_file.content
    return (content in (_CERT_MARK, _KEY_MARK)
            or b"kind: Config" in content and bundle_file.install_path is not None
            or b"(build time " in content or AT_BUILD.encode() in content
            or bundle_file.path in ("MANIFEST.json", "README.txt"))


def _replace_all(text: str, replacements: dict[str, str]) -> str:
    for digest, replacement in replacements.items():
        text = text.replace(digest, replacement)
    return text


def _checksums(files: tuple[BundleFile, ...], replacements: dict[str, str]) -> str:
    lines = []
    for bundle_file in files:
        if bundle_file.path == "SHA256SUMS":
            continue
        digest = bundle_file.sha256
        text_digest = replacements.get(digest, digest)
        if text_digest == digest and AT_BUILD.encode() in _replace_all(
                bundle_file.content.decode("utf-8", errors="replace"), replacements).encode():
            text_digest = AT_BUILD  # the file quotes a build-time checksum, so its own changes too
        lines.append(f"{text_digest}  {bundle_file.path}\n")
    return "".join(lines)


def review_facts(certificate: x509.Certificate) -> dict[str, Any]:
    """Return the certificate fields that ``kcmbundle diff`` compares; none depends on the current time."""
    facts = describe_certificate(certificate, utc_now())
    return {name: facts[name] for name in REVIEW_FIELDS}


def yaml_load(content: bytes) -> Any:
    import yaml

    return yaml.safe_load(content.decode("utf-8"))


def summarize_certificates(certificates: list[x509.Certificate]) -> str:
    """Describe PEM certificates by their fields, one per line, for review instead of base64."""
    blocks = []
    for certificate in certificates:
        facts = describe_certificate(certificate, utc_now())
        blocks.append(_format_facts("certificate", {name: facts[name] for name in _STABLE_FIELDS}))
    return "".join(blocks)


def summarize_planned(planned: dict[str, Any]) -> str:
    """Describe the certificate that ``build`` would issue."""
    facts = {name: planned[name] for name in _STABLE_FIELDS}
    return _format_facts("certificate, issued at build time", facts)


def summarize_key(algorithm: str) -> str:
    """Describe the private key that ``build`` would generate, without any key material."""
    return f"private key ({algorithm}), generated at build time; kcmbundle render never generates or shows keys\n"


def _summarize_binary(config: Config) -> str:
    if config.binary is None:
        return ""
    return (f"kube-controller-manager binary {config.binary.version}\n"
            f"  sha256  {config.binary.sha256}\n"
            f"  copied from {config.binary.path.name} at build time\n")


def _format_facts(title: str, facts: dict[str, Any]) -> str:
    lines = [f"# {title} (summary by kcmbundle render; the bundle holds PEM)"]
    for name, value in facts.items():
        shown = (", ".join(value) or "(none)") if isinstance(value, list) else str(value)
        lines.append(f"{name + ':':14} {shown}")
    return "\n".join(lines) + "\n"


def summarize_kubeconfig(content: bytes, ca_certificates: list[x509.Certificate], planned: dict[str, Any],
                         config: Config) -> str:
    """Return the kubeconfig as YAML with each embedded ``*-data`` field replaced by a summary."""
    import yaml

    document = yaml.safe_load(content.decode("utf-8"))
    assert is_kubeconfig_document(document)
    summaries = {
        KUBECONFIG_CERTIFICATE_FIELDS[0]: summarize_certificates(ca_certificates),
        KUBECONFIG_CERTIFICATE_FIELDS[1]: summarize_planned(planned),
        KUBECONFIG_KEY_FIELD: summarize_key(config.certificate.key_algorithm),
    }
    replace_embedded(document, lambda _location, field, _value: summaries[field])
    return dump_review_yaml(document)


def replace_embedded(document: dict[str, Any], replace) -> None:
    """Replace each ``*-data`` field of a kubeconfig with ``replace(location, field, value)``.

    ``location`` is the field's path, such as ``users[0].user.client-key-data``,
    as ``inspection.embedded_data`` names it.
    """
    for section, inner in (("clusters", "cluster"), ("users", "user")):
        entries = document.get(section) or []
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            body = entry.get(inner) if isinstance(entry, dict) else None
            if not isinstance(body, dict):
                continue
            for name in (*KUBECONFIG_CERTIFICATE_FIELDS, KUBECONFIG_KEY_FIELD):
                if name in body:
                    body[name] = replace(f"{section}[{index}].{inner}.{name}", name, body[name])


def dump_review_yaml(document: Any) -> str:
    """Dump YAML in the kubeconfig's key order, with multi-line strings as literal blocks."""
    import yaml

    class _ReviewDumper(yaml.SafeDumper):
        pass

    def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _ReviewDumper.add_representer(str, _string)
    return yaml.dump(document, Dumper=_ReviewDumper, sort_keys=False, default_flow_style=False, width=1 << 16)


def format_rendered(bundles: list[RenderedBundle]) -> str:
    """Join every rendered file into one text, each led by a ``==> path (mode) <==`` header."""
    parts = []
    for bundle in bundles:
        for item in bundle.files:
            text = item.text if item.text.endswith("\n") else item.text + "\n"
            parts.append(f"==> {bundle.top}/{item.path} (mode {item.mode:04o}) <==\n{text}\n")
    return "".join(parts)


def rendered_tree(bundles: list[RenderedBundle]) -> dict[str, dict[str, str]]:
    """Return ``{top: {path: text}}``, the files ``write_rendered`` writes."""
    return {bundle.top: {item.path: item.text for item in bundle.files} for bundle in bundles}


def write_rendered(bundles: list[RenderedBundle], out: Path) -> list[Path]:
    """Write every rendered file under ``out/<top>/`` (mode 0644, replacing older renders); return the paths.

    Raises:
        OutputError: a file cannot be written.
    """
    outputs = [(out / bundle.top / item.path, item.text.encode("utf-8"), 0o644)
               for bundle in bundles for item in bundle.files]
    write_atomically(outputs, force=True)
    return [path for path, _, _ in outputs]

