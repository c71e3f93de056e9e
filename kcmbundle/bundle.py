"""Plan each master's bundle in memory: every file's bundle path, content and mode.

A ``Bundle`` is plain data; ``archive.write_bundle`` turns it into a tarball
and the snapshot tests compare its text files directly. Layout inside the
top folder ``<cluster>-<master>/``::

    install.sh  README.txt  MANIFEST.json  SHA256SUMS
    rootfs/<install path>   the files as they land on the master
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import shlex
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable, Iterator, Sequence

from kcmbundle import __version__
from kcmbundle.checks import host_for_url
from kcmbundle.config import BinarySource, Config, Master
from kcmbundle.errors import ConfigError, Problem
from kcmbundle.keygen import iter_keys
from kcmbundle.kubeconfig import build_kubeconfig, dump_kubeconfig
from kcmbundle.pki import (CA, IssuedCertificate, PrivateKey, Seams, build_sans, build_subject, check_ca_outlives,
                           describe_key, issue_certificate, iso_time, san_strings)
from kcmbundle.templating import compile_all, render
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
    """Install path on the master; None for the bundle's own files."""

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


def plan_bundles(config: Config, ca: CA, masters: Sequence[Master], seams: Seams = Seams(),
                 signer: Callable[[bytes], bytes] | None = None,
                 keys: Iterable[PrivateKey] | None = None) -> list[Bundle]:
    """Sign certificates and lay out the bundle of each master in ``masters``.

    With ``certificate.perMaster`` false, one key and certificate naming every
    master is shared by all bundles, as the classic guide does. With a
    ``signer``, each bundle also gets SHA256SUMS.sig, its signature of SHA256SUMS.
    ``keys`` yields the ``keys_needed`` private keys, possibly while they are
    being made; without it they come from ``seams.key_factory``, spread over
    the cores when the factory is the default one.

    Raises:
        CAError: the CA expires before the certificates would.
    """
    return list(iter_bundles(config, ca, masters, seams, signer, keys))


def iter_bundles(config: Config, ca: CA, masters: Sequence[Master], seams: Seams = Seams(),
                 signer: Callable[[bytes], bytes] | None = None,
                 keys: Iterable[PrivateKey] | None = None) -> Iterator[Bundle]:
    """Yield the bundles of ``plan_bundles`` one at a time, each as soon as its key is ready.

    The caller can write a bundle while the workers make the keys of the next ones.
    """
    now = seams.clock()
    check_ca_outlives(ca, now + config.certificate.validity)
    flags = command_flags(config)

    binary = None if config.binary is None else _read_binary(config.binary)
    if keys is not None:
        yield from _plan_all(config, ca, masters, seams, signer, iter(keys), now, flags, binary)
        return

    requests = [config.certificate.key_algorithm] * keys_needed(config, masters)
    with closing(iter_keys(requests, seams.key_factory)) as generated:
        yield from _plan_all(config, ca, masters, seams, signer, generated, now, flags, binary)


def _plan_all(config: Config, ca: CA, masters: Sequence[Master], seams: Seams,
              signer: Callable[[bytes], bytes] | None, keys: Iterator[PrivateKey], now: datetime,
              flags: list[Flag], binary: bytes | None) -> Iterator[Bundle]:
    # Keys are taken one at a time, so that each bundle is signed and laid
    # out while worker processes are still making the keys of the next ones.
    compile_all()
    shared = None
    if not config.certificate.per_master:
        shared = _issue(config, ca, config.masters, seams, now, next(keys))

    for master in masters:
        issued = shared or _issue(config, ca, [master], seams, now, next(keys))
        yield _plan_one(config, ca, master, issued, flags, binary, signer)


def keys_needed(config: Config, masters: Sequence[Master]) -> int:
    """Return how many private keys ``plan_bundles`` needs for ``masters``."""
    return len(masters) if config.certificate.per_master else 1


def _read_binary(source: BinarySource) -> bytes:
    # load_config checked the checksum already; checking the bytes actually
    # bundled catches a file replaced since then.
    try:
        content = source.path.read_bytes()
    except OSError as error:
        raise ConfigError([Problem("binary.path", f"failed to read {source.path}: {error.strerror}",
                                   "Check the file and its permissions", str(source.path))]) from None
    actual = hashlib.sha256(content).hexdigest()
    if actual != source.sha256:
        raise ConfigError([Problem("binary.sha256", f"does not match {source.path}, whose SHA-256 is {actual}",
                                   "Download the binary again and compare it with the release's checksum, "
                                   "then set binary.sha256 to that checksum", source.sha256)])
    return content


def _issue(config: Config, ca: CA, masters: Sequence[Master], seams: Seams, now: datetime,
           key: PrivateKey) -> IssuedCertificate:
    issued = issue_certificate(
        ca,
        key,
        subject=build_subject(config.certificate.subject),
        sans=build_sans(certificate_names(config, masters)),
        now=now,
        validity=config.certificate.validity,
        serial=seams.serial(),
    )
    logger.debug("signed certificate serial %x for %s", issued.certificate.serial_number,
                 ", ".join(master.name for master in masters))
    return issued


def certificate_names(config: Config, masters: Sequence[Master]) -> list[str]:
    """Return the names and addresses a certificate for ``masters`` covers, before ``build_sans`` orders them."""
    return ["localhost", *(master.name for master in masters), "127.0.0.1",
            *(str(master.ip) for master in masters), *config.certificate.extra_sans]


def _plan_one(config: Config, ca: CA, master: Master, issued: IssuedCertificate, flags: list[Flag],
              binary: bytes | None, signer: Callable[[bytes], bytes] | None) -> Bundle:
    files = lay_out_files(config, master, flags, binary, ca_pem=ca.pem, cert_pem=issued.cert_pem,
                          key_pem=issued.key_pem, certificate=describe_issued(config, issued), signer=signer)
    return Bundle(cluster=config.cluster.name, master=master, issued=issued, files=files)


def lay_out_files(config: Config, master: Master, flags: list[Flag], binary: bytes | None, *, ca_pem: bytes,
                  cert_pem: bytes, key_pem: bytes, certificate: dict,
                  signer: Callable[[bytes], bytes] | None = None) -> tuple[BundleFile, ...]:
    """Lay out every file of ``master``'s bundle from the given PEM texts.

    ``certificate`` is the manifest's certificate section (see
    ``describe_issued``). ``kcmbundle render`` passes placeholder texts here,
    so this function must not parse them.
    """
    paths = config.paths
    kubeconfig = build_kubeconfig(
        cluster_name=config.cluster.name,
        server=config.cluster.api_server.url_for(master),
        ca_pem=ca_pem,
        cert_pem=cert_pem,
        key_pem=key_pem,
    )
    installed = [
        _installed(str(paths.ca_cert), ca_pem, MODE_PUBLIC),
        _installed(str(paths.cert), cert_pem, MODE_PUBLIC),
        _installed(str(paths.key), key_pem, MODE_PRIVATE),
        # The kubeconfig embeds the private key, so it is as secret as the key file.
        _installed(str(paths.kubeconfig), dump_kubeconfig(kubeconfig), MODE_PRIVATE),
        _installed(str(paths.unit), render_unit(config, master, flags).encode(), MODE_PUBLIC),
    ]
    if binary is not None:
        installed.append(_installed(str(paths.binary), binary, MODE_EXECUTABLE))
    installed.sort(key=lambda bundle_file: bundle_file.path)

    manifest = manifest_for(config, master, certificate, installed, flags)
    manifest_file = BundleFile("MANIFEST.json", _dump_json(manifest), MODE_PUBLIC)
    # shell_quote lets install.sh.j2 quote every value it writes into the script.
    context = {"manifest": manifest, "top": f"{config.cluster.name}-{master.name}", "shell_quote": shlex.quote}
    install_script = BundleFile("install.sh", render("install.sh.j2", **context).encode(), MODE_EXECUTABLE)
    readme = BundleFile("README.txt", render("README.txt.j2", **context).encode(), MODE_PUBLIC)

    files = [install_script, manifest_file, readme, *installed]
    checksums = _checksums(files)
    files.append(BundleFile("SHA256SUMS", checksums, MODE_PUBLIC))
    if signer is not None:
        files.append(BundleFile("SHA256SUMS.sig", signer(checksums), MODE_PUBLIC))
    files.sort(key=lambda bundle_file: bundle_file.path)
    return tuple(files)


def _installed(install_path: str, content: bytes, mode: int) -> BundleFile:
    return BundleFile("rootfs" + install_path, content, mode, install_path)


def build_manifest(config: Config, master: Master, issued: IssuedCertificate,
                   installed: list[BundleFile], flags: list[Flag]) -> dict:
    """Return the MANIFEST.json data: what the bundle is for and what it installs where."""
    return manifest_for(config, master, describe_issued(config, issued), installed, flags)


def describe_issued(config: Config, issued: IssuedCertificate) -> dict:
    """Return the manifest's certificate section for ``issued``."""
    certificate = issued.certificate
    return {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": format(certificate.serial_number, "x"),
        "sans": san_strings(certificate),
        "keyAlgorithm": describe_key(issued.key),
        "notBefore": iso_time(certificate.not_valid_before_utc),
        "notAfter": iso_time(certificate.not_valid_after_utc),
        "shared": not config.certificate.per_master,
    }


def manifest_for(config: Config, master: Master, certificate: dict, installed: list[BundleFile],
                 flags: list[Flag]) -> dict:
    """Return the MANIFEST.json data with ``certificate`` as its certificate section."""
    secure_port = int(flag_value(flags, "secure-port", str(DEFAULT_SECURE_PORT)))
    bind_address = flag_value(flags, "bind-address", "0.0.0.0")
    # A key file is required on the host only while its flag is in the unit;
    # extraArgs may remove either flag with null (see cluster_checks).
    host_files = [
        {"path": value, "purpose": f"{purpose} (--{name})"}
        for name, purpose in (("cluster-signing-key-file", "cluster signing CA key"),
                              ("service-account-private-key-file", "service-account signing key"))
        if (value := flag_value(flags, name, "")) != ""
    ]
    if config.binary is None:
        host_files.append({"path": str(config.paths.binary), "purpose": "kube-controller-manager binary"})
    return {
        "kcmbundle": __version__,
        "cluster": config.cluster.name,
        "kubernetesVersion": str(config.cluster.version),
        "master": {"name": master.name, "ip": str(master.ip)},
        "apiServer": config.cluster.api_server.url_for(master),
        "certificate": certificate,
        "service": {
            "unit": config.paths.unit.name,
            "unitFile": str(config.paths.unit),
            "binary": str(config.paths.binary),
            "workingDir": str(config.paths.working_dir),
            "securePort": secure_port,
            "bindAddress": bind_address,
            "caFile": str(config.paths.ca_cert),
            "healthzUrl": f"https://{_probe_host(bind_address)}:{secure_port}/healthz",
        },
        "binary": _binary_entry(config, installed),
        "hostFiles": host_files,
        "files": [
            {"path": f.path, "installPath": f.install_path, "mode": format(f.mode, "04o"),
             "owner": "root:root", "sha256": f.sha256}
            for f in installed
        ],
    }


def _probe_host(bind_address: str) -> str:
    """Return the URL host install.sh probes: loopback for a wildcard bind address, else the address."""
    try:
        address = ipaddress.ip_address(bind_address)
    except ValueError:
        # kube-controller-manager only accepts an IP; it fails to start on
        # anything else, and the probe reports that.
        return "127.0.0.1"
    if address.is_unspecified:
        return "127.0.0.1"
    return host_for_url(address)


def _binary_entry(config: Config, installed: list[BundleFile]) -> dict | None:
    if config.binary is None:
        return None
    binary_file = next(f for f in installed if f.install_path == str(config.paths.binary))
    return {"path": binary_file.path, "installPath": binary_file.install_path, "version": config.binary.version,
            "versionLine": config.binary.version_line, "sha256": binary_file.sha256}


def _dump_json(data: dict) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _checksums(files: list[BundleFile]) -> bytes:
    lines = [f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda bundle_file: bundle_file.path)]
    return "".join(lines).encode("ascii")
