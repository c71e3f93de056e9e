"""Plan each master's bundle in memory: every file's bundle path, content and mode.

A ``Bundle`` is plain data; ``archive.write_bundle`` turns it into a tarball
and the snapshot tests compare its text files directly. Layout inside the
top folder ``<cluster>-<master>/``::

    install.sh  README.txt  MANIFEST.json  SHA256SUMS
    rootfs/<install path>   the files as they land on the master
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Sequence

from kcmbundle import __version__
from kcmbundle.config import Config, Master
from kcmbundle.kubeconfig import build_kubeconfig, dump_kubeconfig
from kcmbundle.pki import (CA, IssuedCertificate, Seams, build_sans, build_subject, check_ca_outlives,
                           describe_key, issue_certificate, iso_time, san_strings)
from kcmbundle.templating import render
from kcmbundle.unit import DEFAULT_SECURE_PORT, Flag, command_flags, flag_value, render_unit

logger = logging.getLogger(__name__)

MODE_PRIVATE = 0o600
MODE_PUBLIC = 0o644
MODE_EXECUTABLE = 0o755


@dataclass(frozen=True)
class BundleFile:
    """One file in a bundle, with its path relative to the bundle's top folder."""

    path: str
    content: bytes
    mode: int
    install_path: str | None = None
    """Where install.sh puts it on the master; None for the bundle's own files."""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class Bundle:
    """Everything one master's tarball contains."""

    cluster: str
    master: Master
    issued: IssuedCertificate
    files: tuple[BundleFile, ...]

    @property
    def top(self) -> str:
        """The bundle's top folder name inside the tarball."""
        return f"{self.cluster}-{self.master.name}"

    def file(self, path: str) -> BundleFile:
        """Return the file at bundle path ``path``.

        Raises:
            KeyError: the bundle has no such file.
        """
        for bundle_file in self.files:
            if bundle_file.path == path:
                return bundle_file
        raise KeyError(path)


def plan_bundles(config: Config, ca: CA, masters: Sequence[Master], seams: Seams = Seams()) -> list[Bundle]:
    """Sign certificates and lay out the bundle of each master in ``masters``.

    With ``certificate.perMaster`` false, one key and certificate naming every
    master is shared by all bundles, as the classic guide does.

    Raises:
        CAError: the CA expires before the certificates would.
    """
    now = seams.clock()
    check_ca_outlives(ca, now + config.certificate.validity)
    flags = command_flags(config)

    shared = None
    if not config.certificate.per_master:
        shared = _issue(config, ca, config.masters, seams, now)

    bundles = []
    for master in masters:
        issued = shared or _issue(config, ca, [master], seams, now)
        bundles.append(_plan_one(config, ca, master, issued, flags))
    return bundles


def _issue(config: Config, ca: CA, masters: Sequence[Master], seams: Seams, now) -> IssuedCertificate:
    names = ["localhost", *(master.name for master in masters), "127.0.0.1",
             *(str(master.ip) for master in masters), *config.certificate.extra_sans]
    key = seams.key_factory(config.certificate.key_algorithm)
    issued = issue_certificate(
        ca,
        key,
        subject=build_subject(config.certificate.subject),
        sans=build_sans(names),
        now=now,
        validity=config.certificate.validity,
        serial=seams.serial(),
    )
    logger.debug("signed certificate serial %x for %s", issued.certificate.serial_number,
                 ", ".join(master.name for master in masters))
    return issued


def _plan_one(config: Config, ca: CA, master: Master, issued: IssuedCertificate, flags: list[Flag]) -> Bundle:
    paths = config.paths
    kubeconfig = build_kubeconfig(
        cluster_name=config.cluster.name,
        server=config.cluster.api_server.url_for(master),
        ca_pem=ca.pem,
        cert_pem=issued.cert_pem,
        key_pem=issued.key_pem,
    )
    installed = [
        _installed(str(paths.ca_cert), ca.pem, MODE_PUBLIC),
        _installed(str(paths.cert), issued.cert_pem, MODE_PUBLIC),
        _installed(str(paths.key), issued.key_pem, MODE_PRIVATE),
        # The kubeconfig embeds the private key, so it is as secret as the key file.
        _installed(str(paths.kubeconfig), dump_kubeconfig(kubeconfig), MODE_PRIVATE),
        _installed(str(paths.unit), render_unit(config, master, flags).encode(), MODE_PUBLIC),
    ]
    installed.sort(key=lambda bundle_file: bundle_file.path)

    manifest = build_manifest(config, master, issued, installed, flags)
    manifest_file = BundleFile("MANIFEST.json", _dump_json(manifest), MODE_PUBLIC)
    context = {"manifest": manifest, "top": f"{config.cluster.name}-{master.name}"}
    install_script = BundleFile("install.sh", render("install.sh.j2", **context).encode(), MODE_EXECUTABLE)
    readme = BundleFile("README.txt", render("README.txt.j2", **context).encode(), MODE_PUBLIC)

    files = [install_script, manifest_file, readme, *installed]
    files.append(BundleFile("SHA256SUMS", _checksums(files), MODE_PUBLIC))
    files.sort(key=lambda bundle_file: bundle_file.path)
    return Bundle(cluster=config.cluster.name, master=master, issued=issued, files=tuple(files))


def _installed(install_path: str, content: bytes, mode: int) -> BundleFile:
    return BundleFile("rootfs" + install_path, content, mode, install_path)


def build_manifest(config: Config, master: Master, issued: IssuedCertificate,
                   installed: list[BundleFile], flags: list[Flag]) -> dict:
    """Return the MANIFEST.json data: what the bundle is for and what it installs where."""
    certificate = issued.certificate
    secure_port = int(flag_value(flags, "secure-port", str(DEFAULT_SECURE_PORT)))
    return {
        "kcmbundle": __version__,
        "cluster": config.cluster.name,
        "kubernetesVersion": str(config.cluster.version),
        "master": {"name": master.name, "ip": str(master.ip)},
        "apiServer": config.cluster.api_server.url_for(master),
        "certificate": {
            "subject": certificate.subject.rfc4514_string(),
            "issuer": certificate.issuer.rfc4514_string(),
            "serial": format(certificate.serial_number, "x"),
            "sans": san_strings(certificate),
            "keyAlgorithm": describe_key(issued.key),
            "notBefore": iso_time(certificate.not_valid_before_utc),
            "notAfter": iso_time(certificate.not_valid_after_utc),
            "shared": not config.certificate.per_master,
        },
        "service": {
            "unit": config.paths.unit.name,
            "binary": str(config.paths.binary),
            "workingDir": str(config.paths.working_dir),
            "securePort": secure_port,
            "bindAddress": flag_value(flags, "bind-address", "0.0.0.0"),
            "caFile": str(config.paths.ca_cert),
        },
        "hostFiles": [
            {"path": str(config.paths.cluster_signing_key), "purpose": "cluster signing CA key (--cluster-signing-key-file)"},
            {"path": str(config.paths.service_account_key), "purpose": "service-account signing key (--service-account-private-key-file)"},
            {"path": str(config.paths.binary), "purpose": "kube-controller-manager binary"},
        ],
        "files": [
            {"path": f.path, "installPath": f.install_path, "mode": format(f.mode, "04o"),
             "owner": "root:root", "sha256": f.sha256}
            for f in installed
        ],
    }


def _dump_json(data: dict) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _checksums(files: list[BundleFile]) -> bytes:
    lines = [f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda bundle_file: bundle_file.path)]
    return "".join(lines).encode("ascii")
