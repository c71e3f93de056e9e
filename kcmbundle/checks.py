"""Checks on a config document that JSON Schema cannot express.

Each check reads the raw document defensively: a field of the wrong type is
skipped here because the schema already reported it. ``reported`` contains the
paths the schema flagged, so that one mistake gives one line.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from kcmbundle.durations import DURATION_HINT, parse_duration
from kcmbundle.errors import Problem
from kcmbundle.text import has_control_character
from kcmbundle.versions import parse_kubernetes_version

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_NAME = re.compile(r"(?=.{1,253}\Z)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*")

# Characters allowed in host paths: they are written into a systemd unit and a
# shell script, so anything a shell or systemd would interpret is rejected.
SAFE_PATH = re.compile(r"/[A-Za-z0-9._+@/-]*")
MAX_PATH_LENGTH = 1024

MIN_VALIDITY_HOURS = 1
MAX_VALIDITY_HOURS = 876000  # 100 years, the longest lifetime the classic guides use

# The apiserver allocates service IPs from a bitmap of at most 2^20 entries,
# so it rejects service CIDRs wider than these prefixes.
MIN_SERVICE_PREFIX = {4: 12, 6: 108}
# The service CIDR must hold a network address, the apiserver's own service
# IP (the first host address) and at least one more service.
MAX_SERVICE_PREFIX = {4: 30, 6: 126}

# Flags that a config field sets; extraArgs must not set them a second way.
FLAGS_OWNED_BY_FIELDS = {
    "kubeconfig": "paths.kubeconfig",
    "tls-cert-file": "paths.certDir",
    "tls-private-key-file": "paths.certDir",
    "cluster-signing-key-file": "paths.clusterSigningKey",
    "service-account-private-key-file": "paths.serviceAccountKey",
    "service-cluster-ip-range": "cluster.serviceCIDR",
    "cluster-cidr": "cluster.clusterCIDR",
    "cluster-name": "cluster.name",
    "leader-elect": "controllerManager.leaderElect",
    "v": "controllerManager.verbosity",
}

# Owned flags that extraArgs may still remove with null. cluster_checks then
# requires the controller that reads the key to be disabled in --controllers
# (or, for the signing key, per-signer files), so that turning it off is explicit.
REMOVABLE_OWNED_FLAGS = frozenset({"cluster-signing-key-file", "service-account-private-key-file"})


def host_for_url(ip: IPAddress) -> str:
    """Return ``ip`` as a URL host: IPv6 addresses go in brackets."""
    return f"[{ip}]" if ip.version == 6 else str(ip)


def parse_cidrs(text: str) -> tuple[IPNetwork, ...]:
    """Parse one CIDR, or two of different families separated by a comma.

    Raises:
        ValueError: a part is not a CIDR or has host bits set.
    """
    if not text:
        return ()
    return tuple(ipaddress.ip_network(part.strip(), strict=True) for part in text.split(","))


def check_document(document: dict[str, Any], reported: set[str] | frozenset[str] = frozenset()) -> list[Problem]:
    """Return the semantic problems in ``document`` whose paths the schema did not flag."""
    problems: list[Problem] = []
    cluster = _object(document.get("cluster"))
    service = list(_check_cidrs(cluster, "serviceCIDR", problems))
    pods = list(_check_cidrs(cluster, "clusterCIDR", problems))
    families = {network.version for network in service}

    _check_cluster(cluster, service, pods, problems)
    _check_masters(document.get("masters"), families, problems)
    _check_ca(_object(document.get("ca")), problems)
    _check_certificate(_object(document.get("certificate")), problems)
    _check_paths(_object(document.get("paths")), problems)
    _check_controller_manager(document, problems)
    _check_binary(_object(document.get("binary")), cluster, problems)

    seen: set[str] = set()
    unique = []
    for problem in problems:
        if problem.path in reported or (problem.path, problem.message) in seen:
            continue
        seen.add((problem.path, problem.message))  # type: ignore[arg-type]
        unique.append(problem)
    return unique


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _check_cluster(cluster: dict[str, Any], service: list[IPNetwork], pods: list[IPNetwork],
                   problems: list[Problem]) -> None:
    name = cluster.get("name")
    if isinstance(name, str) and not DNS_LABEL.fullmatch(name):
        problems.append(Problem("cluster.name", "invalid value", _dns_label_fix(), name))

    version = cluster.get("kubernetesVersion")
    if isinstance(version, str):
        try:
            parse_kubernetes_version(version)
        except ValueError as error:
            problems.append(Problem("cluster.kubernetesVersion", str(error),
                                    "Set the version of the kube-controller-manager binary", version))

    for network in service:
        _check_service_size(network, cluster.get("serviceCIDR"), problems)
    for pod_network in pods:
        for service_network in service:
            if pod_network.overlaps(service_network):
                problems.append(Problem(
                    "cluster.clusterCIDR", f"overlaps serviceCIDR {service_network}",
                    "Pick pod and service ranges that do not overlap", cluster.get("clusterCIDR")))
    if pods and service and {n.version for n in pods} != {n.version for n in service}:
        problems.append(Problem(
            "cluster.clusterCIDR", "IP family differs from serviceCIDR",
            "Use the same families for pods and services (both IPv4, both IPv6, or both dual-stack)",
            cluster.get("clusterCIDR")))

    _check_node_mask(cluster, pods, problems)
    _check_api_server(_object(cluster.get("apiServer")), problems)


def _check_cidrs(section: dict[str, Any], field: str, problems: list[Problem]) -> Iterator[IPNetwork]:
    text = section.get(field)
    if not isinstance(text, str) or not text:
        return
    path = f"cluster.{field}"
    parts = [part.strip() for part in text.split(",")]
    networks = []
    for part in parts:
        try:
            networks.append(ipaddress.ip_network(part, strict=True))
        except ValueError as error:
            fix = "Use the network address, such as 10.254.0.0/16"
            if "host bits set" in str(error):
                fixed = ipaddress.ip_network(part, strict=False)
                fix = f"Clear the host bits: use {fixed}"
            problems.append(Problem(path, f"invalid CIDR {part!r}", fix, text))
            return
    if len(networks) > 2 or (len(networks) == 2 and networks[0].version == networks[1].version):
        problems.append(Problem(path, "invalid dual-stack range",
                                "Give one CIDR, or one IPv4 and one IPv6 CIDR separated by a comma", text))
        return
    yield from networks


def _check_service_size(network: IPNetwork, text: Any, problems: list[Problem]) -> None:
    family = network.version
    if network.prefixlen < MIN_SERVICE_PREFIX[family]:
        problems.append(Problem(
            "cluster.serviceCIDR", f"{network} is larger than kube-apiserver accepts",
            f"Use a prefix of /{MIN_SERVICE_PREFIX[family]} or longer", text))
    if network.prefixlen > MAX_SERVICE_PREFIX[family]:
        problems.append(Problem(
            "cluster.serviceCIDR", f"{network} is too small to hold the apiserver's service IP and other services",
            f"Use a prefix of /{MAX_SERVICE_PREFIX[family]} or shorter, such as 10.254.0.0/16", text))


def _check_node_mask(cluster: dict[str, Any], pods: list[IPNetwork], problems: list[Problem]) -> None:
    mask = cluster.get("nodeCIDRMaskSize")
    if not isinstance(mask, int) or isinstance(mask, bool):
        return
    path = "cluster.nodeCIDRMaskSize"
    if not pods:
        problems.append(Problem(path, "only applies when clusterCIDR is set",
                                "Set cluster.clusterCIDR or remove nodeCIDRMaskSize", mask))
        return
    if len(pods) > 1:
        problems.append(Problem(path, "ambiguous for a dual-stack clusterCIDR",
                                "Remove it and set node-cidr-mask-size-ipv4 and node-cidr-mask-size-ipv6 "
                                "in controllerManager.extraArgs", mask))
        return
    # cluster_checks compares the mask with clusterCIDR, because extraArgs can set it too.


def _check_api_server(api: dict[str, Any], problems: list[Problem]) -> None:
    mode = api.get("mode", "node-local")
    url = api.get("url")
    if mode == "url" and url is None:
        problems.append(Problem("cluster.apiServer.url", "missing required field",
                                "Set the apiserver URL, such as https://192.0.2.10:6443, or use mode \"node-local\""))
    if mode == "node-local" and url is not None:
        problems.append(Problem("cluster.apiServer.url", "only used when mode is \"url\"",
                                "Remove url, or set mode to \"url\"", url))
    if mode == "url" and "port" in api:
        problems.append(Problem("cluster.apiServer.port", "only used when mode is \"node-local\"",
                                "Put the port in url instead", api["port"]))
    if isinstance(url, str):
        reason = _url_problem(url)
        if reason:
            problems.append(Problem("cluster.apiServer.url", reason,
                                    "Use https://HOST:PORT, with IPv6 hosts in brackets, such as https://[2001:db8::10]:6443", url))


def _url_problem(url: str) -> str | None:
    if any(character.isspace() or ord(character) < 32 for character in url):
        return "invalid URL: contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"invalid URL: {error}"
    if parts.scheme != "https":
        return "invalid URL: kube-apiserver is reached over https"
    if not parts.hostname:
        return "invalid URL: missing host"
    if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
        return "invalid URL: only scheme, host and port are allowed"
    if port == 0:
        return "invalid URL: port 0"
    host = parts.hostname
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not DNS_NAME.fullmatch(host):
            return f"invalid URL: {host!r} is neither an IP address nor a DNS name"
    return None


def _check_masters(masters: Any, families: set[int], problems: list[Problem]) -> None:
    if not isinstance(masters, list):
        return
    names = Counter(m.get("name") for m in masters if isinstance(m, dict) and isinstance(m.get("name"), str))
    addresses: Counter[IPAddress] = Counter()
    for index, master in enumerate(masters):
        if not isinstance(master, dict):
            continue
        name = master.get("name")
        if isinstance(name, str):
            if not DNS_LABEL.fullmatch(name):
                problems.append(Problem(f"masters[{index}].name", "invalid value", _dns_label_fix(), name))
            elif names[name] > 1:
                problems.append(Problem(f"masters[{index}].name", "duplicate master name",
                                        "Give every master a different name", name))
        ip = _check_master_ip(master.get("ip"), f"masters[{index}].ip", families, problems)
        if ip is not None:
            addresses[ip] += 1
            if addresses[ip] == 2:
                problems.append(Problem(f"masters[{index}].ip", "duplicate master IP",
                                        "Give every master its own address", str(ip)))


def _check_master_ip(text: Any, path: str, families: set[int], problems: list[Problem]) -> IPAddress | None:
    if not isinstance(text, str):
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        problems.append(Problem(path, "invalid IP address",
                                "Use a full IPv4 or IPv6 address, such as 192.0.2.11 or 2001:db8::11", text))
        return None
    reason = _unusable_address(ip)
    if reason:
        problems.append(Problem(path, f"{reason} address cannot be a master's address",
                                "Use the node's own unicast address", text))
        return None
    if families and ip.version not in families:
        problems.append(Problem(path, f"IPv{ip.version} address in a single-stack IPv{min(families)} cluster",
                                "Use the same IP family for every master as cluster.serviceCIDR", text))
    return ip


def _unusable_address(ip: IPAddress) -> str | None:
    if ip.is_unspecified:
        return "an unspecified"
    if ip.is_loopback:
        return "a loopback"
    if ip.is_multicast:
        return "a multicast"
    if ip.is_link_local:
        return "a link-local"
    if ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255"):
        return "the broadcast"
    return None


def _check_ca(ca: dict[str, Any], problems: list[Problem]) -> None:
    # Existence only; pki.load_ca reads and checks the contents.
    for field in ("cert", "key"):
        value = ca.get(field)
        if isinstance(value, str) and "-----BEGIN" in value:
            # The value is PEM text pasted in place of a file name, possibly the CA key: never show it.
            problems.append(Problem(f"ca.{field}", "holds PEM text instead of a file path (value not shown)",
                                    "Save the PEM in a file and give its path, such as pki/ca.pem"))
        elif isinstance(value, str) and value and "\x00" in value:
            problems.append(Problem(f"ca.{field}", "invalid path", "Remove the NUL character", value))


def _check_certificate(certificate: dict[str, Any], problems: list[Problem]) -> None:
    validity = certificate.get("validity")
    if isinstance(validity, str) and validity:
        _check_validity(validity, problems)

    sans = certificate.get("extraSANs")
    if isinstance(sans, list):
        for index, san in enumerate(sans):
            if isinstance(san, str) and not _is_ip(san) and not DNS_NAME.fullmatch(san):
                problems.append(Problem(f"certificate.extraSANs[{index}]", "neither an IP address nor a DNS name",
                                        "Use an address such as 192.0.2.100 or a lowercase name such as kcm.example.com", san))


def _check_validity(validity: str, problems: list[Problem]) -> None:
    path = "certificate.validity"
    try:
        duration = parse_duration(validity)
    except ValueError as error:
        problems.append(Problem(path, f"invalid duration: {error}", DURATION_HINT, validity))
        return
    hours = duration.total_seconds() / 3600
    if hours < MIN_VALIDITY_HOURS:
        problems.append(Problem(path, f"shorter than {MIN_VALIDITY_HOURS}h",
                                "Use a positive duration such as 8760h (one year)", validity))
    elif hours > MAX_VALIDITY_HOURS:
        problems.append(Problem(path, f"longer than {MAX_VALIDITY_HOURS}h (100 years)",
                                "Use a shorter lifetime such as 8760h and renew before it ends", validity))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_paths(paths: dict[str, Any], problems: list[Problem]) -> None:
    for field, value in paths.items():
        if isinstance(value, str):
            reason = _host_path_problem(value)
            if reason:
                problems.append(Problem(f"paths.{field}", f"invalid host path: {reason}",
                                        "Use an absolute path of letters, digits and . _ + @ - /, "
                                        "such as /etc/kubernetes/cert", value))

    unit = paths.get("unit")
    if isinstance(unit, str) and not _host_path_problem(unit):
        reason = _unit_path_problem(unit)
        if reason:
            problems.append(Problem("paths.unit", f"invalid unit path: {reason}",
                                    "Use a .service file in a folder systemd loads, such as "
                                    "/etc/systemd/system/kube-controller-manager.service", unit))

    _check_path_collisions(paths, problems)


# Folders from which systemd loads system units (systemd.unit(5), "System Unit Search Path").
SYSTEMD_UNIT_FOLDERS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system",
                        "/lib/systemd/system", "/usr/local/lib/systemd/system")


def _unit_path_problem(value: str) -> str | None:
    folder, _, name = value.rpartition("/")
    if not name.endswith(".service") or name == ".service":
        return "the file name must end in .service"
    if name.endswith("@.service"):
        return "a template unit (name@.service) needs an instance name, which install.sh does not give"
    if folder not in SYSTEMD_UNIT_FOLDERS:
        return f"systemd does not load units from {folder}"
    return None


def _host_path_problem(value: str) -> str | None:
    if not value.startswith("/"):
        return "not absolute"
    if len(value) > MAX_PATH_LENGTH:
        return f"longer than {MAX_PATH_LENGTH} characters"
    if not SAFE_PATH.fullmatch(value):
        return "contains whitespace, quotes or shell metacharacters"
    parts = value.split("/")[1:]
    if any(part in ("", ".", "..") for part in parts) or value == "/":
        return "contains '..', '.', '//' or a trailing '/'"
    return None


def _check_path_collisions(paths: dict[str, Any], problems: list[Problem]) -> None:
    from kcmbundle.config import DEFAULT_PATHS

    merged = {**DEFAULT_PATHS, **{k: v for k, v in paths.items() if isinstance(v, str)}}
    if any(_host_path_problem(value) for value in merged.values()):
        return
    cert_dir = merged["certDir"]
    installed = {
        f"{cert_dir}/ca.pem": "the CA certificate in paths.certDir",
        f"{cert_dir}/kube-controller-manager.pem": "the certificate in paths.certDir",
        f"{cert_dir}/kube-controller-manager-key.pem": "the key in paths.certDir",
        merged["kubeconfig"]: "paths.kubeconfig",
        merged["unit"]: "paths.unit",
    }
    if len(installed) < 5:
        problems.append(Problem("paths", "two bundle files would be installed at the same path",
                                "Give paths.kubeconfig, paths.unit and the files in paths.certDir distinct paths"))
    for field in ("clusterSigningKey", "serviceAccountKey", "binary"):
        if merged[field] in installed:
            problems.append(Problem(
                f"paths.{field}", f"is where the bundle installs {installed[merged[field]]}",
                "Point it at the file already on the master, such as /etc/kubernetes/cert/ca-key.pem",
                merged[field]))


def _check_controller_manager(document: dict[str, Any], problems: list[Problem]) -> None:
    manager = _object(document.get("controllerManager"))
    masters = document.get("masters")
    if manager.get("leaderElect") is False and isinstance(masters, list) and len(masters) > 1:
        problems.append(Problem(
            "controllerManager.leaderElect", f"must be true with {len(masters)} masters",
            "Set leaderElect to true, or several controller managers will act on the cluster at once", False))

    args = manager.get("extraArgs")
    if not isinstance(args, dict):
        return
    cluster = _object(document.get("cluster"))
    for name, value in args.items():
        path = f"controllerManager.extraArgs.{name}"
        if name in FLAGS_OWNED_BY_FIELDS and not (value is None and name in REMOVABLE_OWNED_FLAGS):
            problems.append(Problem(path, "is set by a config field",
                                    f"Remove it and set {FLAGS_OWNED_BY_FIELDS[name]} instead", value))
        elif name == "node-cidr-mask-size" and value is not None and "nodeCIDRMaskSize" in cluster:
            problems.append(Problem(path, "sets the same flag as cluster.nodeCIDRMaskSize",
                                    "Keep only one of the two", value))
        elif isinstance(value, str) and has_control_character(value):
            problems.append(Problem(path, "contains a newline or control character",
                                    "Write the value on one line without control characters", value))


def _check_binary(binary: dict[str, Any], cluster: dict[str, Any], problems: list[Problem]) -> None:
    path = binary.get("path")
    if isinstance(path, str) and "\x00" in path:
        problems.append(Problem("binary.path", "invalid path", "Remove the NUL character", path))

    version = binary.get("version")
    cluster_version = cluster.get("kubernetesVersion")
    if not isinstance(version, str) or not isinstance(cluster_version, str):
        return
    try:
        cluster_release = parse_kubernetes_version(cluster_version)
    except ValueError:
        return  # reported at cluster.kubernetesVersion
    try:
        binary_release = parse_kubernetes_version(version)
    except ValueError as error:
        problems.append(Problem("binary.version", str(error), "Use the binary of a supported release", version))
        return
    same_minor = binary_release.minor_version == cluster_release.minor_version
    same_patch = cluster_release.patch is None or cluster_release.patch == binary_release.patch
    if not (same_minor and same_patch):
        problems.append(Problem(
            "binary.version", f"does not match cluster.kubernetesVersion {cluster_version}",
            "Bundle the binary of the cluster's release, or correct cluster.kubernetesVersion", version))


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of the file at ``path`` as lowercase hex, reading it in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def check_binary_file(path: Path, sha256: str) -> list[Problem]:
    """Return problems for a bundled binary that is missing, unreadable or not the expected file."""
    if not path.exists():
        return [Problem("binary.path", f"file not found: {path}",
                        "Check the path (relative to the config file) of the kube-controller-manager binary",
                        str(path))]
    if not path.is_file():
        return [Problem("binary.path", f"not a regular file: {path}", "Point it at the binary itself", str(path))]
    try:
        actual = file_sha256(path)
    except OSError as error:
        return [Problem("binary.path", f"file not readable: {path}: {error.strerror}",
                        "Run kcmbundle as a user who can read it, or fix its permissions", str(path))]
    if actual != sha256.lower():
        return [Problem("binary.sha256", f"does not match {path}, whose SHA-256 is {actual}",
                        "Download the binary again and compare it with the release's checksum, "
                        "then set binary.sha256 to that checksum", sha256)]
    return []


def _dns_label_fix() -> str:
    return ("Use a DNS label: lowercase letters, digits and '-', at most 63 characters, "
            "starting and ending with a letter or digit, such as k8s-master1")


def check_ca_files(cert: Path, key: Path) -> list[Problem]:
    """Return problems for CA files that are missing, not regular files or unreadable."""
    problems = []
    for field, path in (("ca.cert", cert), ("ca.key", key)):
        if not path.exists():
            problems.append(Problem(field, f"file not found: {path}",
                                    "Check the path (relative to the config file), or create a CA with 'kcmbundle ca init'",
                                    str(path)))
        elif not path.is_file():
            problems.append(Problem(field, f"not a regular file: {path}", "Point it at the PEM file", str(path)))
        elif not os.access(path, os.R_OK):
            problems.append(Problem(field, f"file not readable: {path}",
                                    "Run kcmbundle as a user who can read it, or fix its permissions", str(path)))
    return problems
