"""Load a cluster config: read the JSON, check it, and return frozen dataclasses.

``load_config`` reads the file, validates it against the JSON Schema, then runs
the checks a schema cannot express (address families, overlapping CIDRs,
unique masters, host paths). Every problem found is reported at once in one
``ConfigError``. Nothing here reads the CA files beyond checking that they
exist; ``pki.load_ca`` does that.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from kcmbundle import checks, schema
from kcmbundle.durations import parse_duration
from kcmbundle.errors import NO_VALUE, ConfigError, Problem
from kcmbundle.versions import KubernetesVersion, parse_kubernetes_version

MAX_CONFIG_BYTES = 1024 * 1024
"""Largest config file accepted; a real one is a few kilobytes."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_KEY_ALGORITHM = "rsa-2048"

DEFAULT_PATHS = {
    "binary": "/opt/k8s/bin/kube-controller-manager",
    "certDir": "/etc/kubernetes/cert",
    "kubeconfig": "/etc/kubernetes/kube-controller-manager.kubeconfig",
    "unit": "/etc/systemd/system/kube-controller-manager.service",
    "workingDir": "/data/k8s/k8s/kube-controller-manager",
    "clusterSigningKey": "/etc/kubernetes/cert/ca-key.pem",
    "serviceAccountKey": "/etc/kubernetes/cert/ca-key.pem",
}


@dataclass(frozen=True)
class Master:
    """One master node."""

    name: str
    ip: IPAddress


@dataclass(frozen=True)
class ApiServer:
    """The kube-apiserver endpoint that kube-controller-manager uses."""

    mode: str
    port: int
    url: str | None

    def url_for(self, master: Master) -> str:
        """Return the apiserver URL that ``master``'s kubeconfig uses."""
        if self.mode == "url":
            assert self.url is not None
            return self.url
        return f"https://{checks.host_for_url(master.ip)}:{self.port}"


@dataclass(frozen=True)
class Cluster:
    """Cluster-wide settings."""

    name: str
    version: KubernetesVersion
    service_cidrs: tuple[IPNetwork, ...]
    cluster_cidrs: tuple[IPNetwork, ...]
    node_cidr_mask_size: int | None
    api_server: ApiServer
    expected_nodes: int | None = None
    """Planned node count that the pod range must hold a subnet for; None means the number of masters."""


@dataclass(frozen=True)
class CASource:
    """Locations of the cluster CA's certificate and key on this machine."""

    cert: Path
    key: Path
    passphrase_env: str | None


@dataclass(frozen=True)
class CertificateSettings:
    """Settings for kube-controller-manager's certificates."""

    key_algorithm: str
    validity: timedelta
    per_master: bool
    subject: tuple[tuple[str, str], ...]
    """Extra subject attributes as (config field name, value), in config order."""
    extra_sans: tuple[str, ...]


@dataclass(frozen=True)
class HostPaths:
    """Absolute paths on a master."""

    binary: PurePosixPath
    cert_dir: PurePosixPath
    kubeconfig: PurePosixPath
    unit: PurePosixPath
    working_dir: PurePosixPath
    cluster_signing_key: PurePosixPath
    service_account_key: PurePosixPath

    @property
    def ca_cert(self) -> PurePosixPath:
        return self.cert_dir / "ca.pem"

    @property
    def cert(self) -> PurePosixPath:
        return self.cert_dir / "kube-controller-manager.pem"

    @property
    def key(self) -> PurePosixPath:
        return self.cert_dir / "kube-controller-manager-key.pem"


@dataclass(frozen=True)
class ControllerManagerSettings:
    """kube-controller-manager options from the config."""

    leader_elect: bool
    verbosity: int
    extra_args: tuple[tuple[str, str | None], ...]
    """Flags as (name, value) in config order; a value of None removes a default."""


@dataclass(frozen=True)
class BinarySource:
    """A kube-controller-manager binary on this machine that every bundle carries."""

    path: Path
    sha256: str
    """Expected SHA-256 of the file, lowercase hex."""
    version: str
    """The release the binary reports, with a leading v, such as ``v1.30.4``."""

    @property
    def version_line(self) -> str:
        """The line that ``kube-controller-manager --version`` prints for this release."""
        return f"Kubernetes {self.version}"


@dataclass(frozen=True)
class Config:
    """A checked cluster config."""

    source: Path
    cluster: Cluster
    ca: CASource
    masters: tuple[Master, ...]
    certificate: CertificateSettings
    paths: HostPaths
    controller_manager: ControllerManagerSettings
    binary: BinarySource | None = None
    """The binary the bundles install, or None when it is already on the masters."""

    def master(self, name: str) -> Master:
        """Return the master called ``name``.

        Raises:
            KeyError: no master has that name.
        """
        for master in self.masters:
            if master.name == name:
                return master
        raise KeyError(name)


def load_config(path: Path) -> Config:
    """Read, check and convert the config file at ``path``.

    Raises:
        ConfigError: the file is missing, unreadable, not JSON or invalid.
    """
    document = read_document(path)

    problems = schema.validate(document)
    problems += checks.check_document(document, reported={p.path for p in problems})
    if problems:
        raise ConfigError([_hide_secret_value(p) for p in problems], summary=f"{path}: invalid config")

    config = _convert(document, path.resolve())
    if config.binary is not None:
        problems = checks.check_binary_file(config.binary.path, config.binary.sha256)
        if problems:
            raise ConfigError(problems, summary=f"{path}: invalid config")
    return config


_ENVIRONMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _hide_secret_value(problem: Problem) -> Problem:
    """Drop the value from ``problem`` when it may be a secret.

    That is key material pasted into any field, or a ``ca.passphraseEnv``
    that is not a variable name and so may be the passphrase itself.
    """
    value = problem.value
    if value is NO_VALUE:
        return problem
    pasted_key = "PRIVATE KEY" in json.dumps(value, default=str)
    passphrase = (problem.path == "ca.passphraseEnv" and isinstance(value, str)
                  and not _ENVIRONMENT_NAME.fullmatch(value))
    if pasted_key or passphrase:
        return replace(problem, message=f"{problem.message} (value not shown: it may be a secret)", value=NO_VALUE)
    return problem


def read_document(path: Path) -> dict[str, Any]:
    """Read ``path`` as one JSON object.

    Raises:
        ConfigError: the file cannot be read or is not a JSON object.
    """
    data = _read_bytes(path)

    if not data.strip():
        _fail(path, "the file is empty", "Write the config as a JSON object, or run 'kcmbundle init'")
    if data.startswith(b"\xef\xbb\xbf"):
        _fail(path, "the file starts with a UTF-8 byte order mark", "Save it as UTF-8 without a BOM")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        _fail(path, f"invalid UTF-8 at byte {error.start}", "Save the file as UTF-8")

    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as error:
        _fail(path, f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}",
              _json_fix(error))
    except DuplicateKeyError as error:
        _fail(path, f"invalid JSON: the key {error.key!r} appears twice in one object",
              "Keep one of them; JSON readers disagree on which one wins")
    except RecursionError:
        _fail(path, "invalid JSON: arrays or objects are nested too deeply",
              "Pass the cluster config, whose deepest value is a few levels down")

    if not isinstance(document, dict):
        _fail(path, f"the top level is a JSON {_JSON_TYPE_NAMES.get(type(document), 'value')}, not an object",
              "Put the settings in one JSON object: {\"cluster\": ..., \"ca\": ..., \"masters\": [...]}")
    return document


_JSON_TYPE_NAMES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
                    type(None): "null"}


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise DuplicateKeyError(key)
        document[key] = value
    return document


def _read_bytes(path: Path) -> bytes:
    try:
        if path.is_dir():
            _fail(path, "is a directory", "Pass the config file, such as cluster.json")
        with path.open("rb") as stream:
            data = stream.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        _fail(path, "config file not found", "Check the path, or create one with 'kcmbundle init'")
    except PermissionError:
        _fail(path, "config file not readable (permission denied)", "Make it readable by this user")
    except OSError as error:
        _fail(path, f"config file could not be read: {error.strerror}", "Check the file and try again")

    if len(data) > MAX_CONFIG_BYTES:
        _fail(path, f"the file is larger than {MAX_CONFIG_BYTES // 1024} KiB",
              "Pass the cluster config, not another file; real configs are a few kilobytes")
    return data


def _json_fix(error: json.JSONDecodeError) -> str:
    before = error.doc[: error.pos].rstrip()
    if not before:
        return ("The file does not start like JSON; write the config as one JSON object (YAML is not read), "
                "or run 'kcmbundle init' for a starter")
    if error.msg.startswith("Expecting property name") or (
        error.msg.startswith("Expecting value") and before.endswith(",")
    ):
        return "Remove the trailing comma before this point; JSON does not allow one"
    return "Fix the JSON syntax at that position"


def _fail(path: Path, message: str, fix: str) -> NoReturn:
    raise ConfigError([Problem(str(path), message, fix)])


def _convert(document: dict[str, Any], source: Path) -> Config:
    base = source.parent
    cluster = document["cluster"]
    api = cluster.get("apiServer", {})
    certificate = document.get("certificate", {})
    paths = {**DEFAULT_PATHS, **document.get("paths", {})}
    manager = document.get("controllerManager", {})
    ca = document["ca"]
    binary = document.get("binary")

    return Config(
        source=source,
        cluster=Cluster(
            name=cluster["name"],
            version=parse_kubernetes_version(cluster["kubernetesVersion"]),
            service_cidrs=checks.parse_cidrs(cluster["serviceCIDR"]),
            cluster_cidrs=checks.parse_cidrs(cluster.get("clusterCIDR", "")),
            node_cidr_mask_size=cluster.get("nodeCIDRMaskSize"),
            expected_nodes=cluster.get("expectedNodes"),
            api_server=ApiServer(
                mode=api.get("mode", "node-local"),
                port=api.get("port", 6443),
                url=api.get("url"),
            ),
        ),
        ca=CASource(
            cert=base / ca["cert"],
            key=base / ca["key"],
            passphrase_env=ca.get("passphraseEnv"),
        ),
        masters=tuple(
            Master(name=master["name"], ip=ipaddress.ip_address(master["ip"]))
            for master in document["masters"]
        ),
        certificate=CertificateSettings(
            key_algorithm=certificate.get("keyAlgorithm", DEFAULT_KEY_ALGORITHM),
            validity=parse_duration(certificate.get("validity", "8760h")),
            per_master=certificate.get("perMaster", True),
            subject=tuple(certificate.get("subject", {}).items()),
            extra_sans=tuple(certificate.get("extraSANs", [])),
        ),
        paths=HostPaths(
            binary=PurePosixPath(paths["binary"]),
            cert_dir=PurePosixPath(paths["certDir"]),
            kubeconfig=PurePosixPath(paths["kubeconfig"]),
            unit=PurePosixPath(paths["unit"]),
            working_dir=PurePosixPath(paths["workingDir"]),
            cluster_signing_key=PurePosixPath(paths["clusterSigningKey"]),
            service_account_key=PurePosixPath(paths["serviceAccountKey"]),
        ),
        controller_manager=ControllerManagerSettings(
            leader_elect=manager.get("leaderElect", True),
            verbosity=manager.get("verbosity", 2),
            extra_args=tuple(manager.get("extraArgs", {}).items()),
        ),
        binary=None if binary is None else BinarySource(
            path=base / binary["path"],
            sha256=binary["sha256"].lower(),
            version="v" + binary["version"].removeprefix("v"),
        ),
    )
