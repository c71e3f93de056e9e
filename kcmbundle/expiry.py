"""List when every certificate in bundles, folders and kubeconfigs expires, soonest first.

A path can be a bundle tarball, an unpacked bundle folder, a kubeconfig, a
PEM certificate file, or a folder searched for all of these (symbolic links
are not followed). Certificates embedded in kubeconfigs are included.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable

from kcmbundle.errors import BundleError
from kcmbundle.inspection import (KUBECONFIG_KEY_FIELD, certificate_entries, describe_certificate, embedded_data,
                                  is_kubeconfig_document, load_certificates)
from kcmbundle.reader import MAX_MEMBER_BYTES, is_tarball, read_bundle, read_folder

TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")
CERTIFICATE_SUFFIXES = (".pem", ".crt", ".cert")
KUBECONFIG_SUFFIXES = (".kubeconfig", ".conf", ".yaml", ".yml")

STATUS_OK = "ok"
STATUS_WARNING = "expiring"
STATUS_EXPIRED = "expired"


def collect_expirations(paths: Iterable[Path], *, now: datetime, warn_days: int) -> list[dict[str, Any]]:
    """Return one entry per certificate found under ``paths``, sorted by notAfter, then by location.

    Each entry has ``source`` (file, plus the member or field inside it),
    ``subject``, ``issuer``, ``serial``, ``notAfter``, ``daysLeft`` and
    ``status`` (ok, expiring within ``warn_days``, or expired).

    Raises:
        BundleError: a path is missing, or a file given by name contains no certificate.
    """
    entries = []
    for path in paths:
        if not path.exists() and not path.is_symlink():
            raise BundleError(f"{path}: not found; pass bundles, bundle folders, kubeconfigs or PEM files")
        if path.is_dir():
            entries += _from_folder(path, now)
        else:
            found = _from_file(path, now)
            if not found:
                raise BundleError(f"{path}: no certificate found; pass a bundle tarball, a kubeconfig or a PEM file")
            entries += found

    window = timedelta(days=warn_days)
    for entry in entries:
        not_after = datetime.fromisoformat(entry["notAfter"].replace("Z", "+00:00"))
        if not_after <= now:
            entry["status"] = STATUS_EXPIRED
        elif not_after - now < window:
            entry["status"] = STATUS_WARNING
        else:
            entry["status"] = STATUS_OK
    entries.sort(key=lambda entry: (entry["notAfter"], entry["source"]))
    return entries


def _from_folder(folder: Path, now: datetime) -> list[dict[str, Any]]:
    if (folder / "MANIFEST.json").is_file():
        return _from_bundle(read_folder(folder), now)

    entries = []
    for current, folders, names in os.walk(folder, followlinks=False):
        folders.sort()
        unpacked = [name for name in folders if (Path(current) / name / "MANIFEST.json").is_file()]
        for name in unpacked:
            entries += _from_bundle(read_folder(Path(current) / name), now)
        folders[:] = [name for name in folders if name not in unpacked]
        for name in sorted(names):
            path = Path(current) / name
            if path.is_symlink() or not _looks_relevant(name):
                continue
            entries += _from_file(path, now)
    return entries


def _looks_relevant(name: str) -> bool:
    return name.endswith(TARBALL_SUFFIXES + CERTIFICATE_SUFFIXES + KUBECONFIG_SUFFIXES) or name == "kubeconfig"


def _from_file(path: Path, now: datetime) -> list[dict[str, Any]]:
    if is_tarball(path):
        return _from_bundle(read_bundle(path), now)

    data = _read_limited(path)
    if b"-----BEGIN CERTIFICATE-----" in data:
        return [{"source": f"{path} (certificate {index + 1})", **describe_certificate(certificate, now)}
                for index, certificate in enumerate(load_certificates(data, str(path)))]
    return _from_kubeconfig(path, data, now)


def _from_kubeconfig(path: Path, data: bytes, now: datetime) -> list[dict[str, Any]]:
    import yaml

    try:
        document = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        return []
    if not is_kubeconfig_document(document):
        return []
    entries = []
    for item in embedded_data(document, str(path)):
        if item.field == KUBECONFIG_KEY_FIELD:
            continue
        for certificate in load_certificates(item.content, f"{path}: {item.location}"):
            entries.append({"source": f"{path}: {item.location}", **describe_certificate(certificate, now)})
    return entries


def _from_bundle(contents, now: datetime) -> list[dict[str, Any]]:
    entries = []
    for entry in certificate_entries(contents, now):
        inner = entry.pop("file")
        location = entry.pop("location")
        suffix = f" ({location})" if location.startswith("certificate") else f": {location}"
        entries.append({"source": f"{contents.source}:{inner}{suffix}", **entry})
    return entries


def _read_limited(path: Path) -> bytes:
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_MEMBER_BYTES + 1)
    except OSError as error:
        raise BundleError(f"{path}: could not be read: {error.strerror}") from None
    if len(data) > MAX_MEMBER_BYTES:
        raise BundleError(f"{path}: larger than {MAX_MEMBER_BYTES // (1024 * 1024)} MiB; "
                          "pass a bundle, a kubeconfig or a PEM file")
    return data


def format_expirations(entries: list[dict[str, Any]]) -> str:
    """Lay out the entries as a table: notAfter, days left, status, subject and where."""
    header = ("NOT AFTER", "DAYS", "STATUS", "SUBJECT", "SOURCE")
    rows = [(entry["notAfter"], str(entry["daysLeft"]), entry["status"], entry["subject"], entry["source"])
            for entry in entries]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(4)]
    lines = []
    for row in [header, *rows]:
        cells = [row[column].ljust(widths[column]) for column in range(4)]
        lines.append("  ".join([*cells, row[4]]))
    return "\n".join(lines) + "\n"
