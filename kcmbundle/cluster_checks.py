"""Checks on the whole cluster, run once per build before anything is built.

``check_cluster`` plans the unit's flags once (``unit.plan_flags``), so every
master gets the same signing CA, service-account key, CIDRs and flag set, and
then checks what no single flag shows: whether the CSR signer and the
service-account token controller have their keys, whether the pod range has
a subnet for every node, and whether /metrics stays reachable.

Checks made elsewhere, kept in one place each: leader election with several
masters (``checks``), leader-election durations and the ``leases`` lock from
1.27 (``flags.check_flags``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Mapping, Sequence

from kcmbundle.config import Config
from kcmbundle.errors import ConfigError, Problem
from kcmbundle.flags import load_table, parse_go_bool
from kcmbundle.unit import DEFAULT_NODE_MASK, DEFAULT_SECURE_PORT, EXTRA_ARGS_PREFIX, Flag, FlagPlan, plan_flags

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CSR_SIGNER = "certificatesigningrequest-signing-controller"
SERVICE_ACCOUNT_TOKENS = "serviceaccount-token-controller"

SIGNING_PAIR = ("cluster-signing-cert-file", "cluster-signing-key-file")
PER_SIGNER_FLAGS = tuple(
    f"cluster-signing-{signer}-{part}-file"
    for signer in ("kubelet-serving", "kubelet-client", "kube-apiserver-client", "legacy-unknown")
    for part in ("cert", "key")
)

# KCM's CIDR set keeps one bit per node subnet and rejects an IPv6 range with
# more than 2^16 of them (clusterSubnetMaxDiff in
# pkg/controller/nodeipam/ipam/cidrset/cidr_set.go). IPv4 has no such limit.
MAX_IPV6_SUBNET_BITS = 16


@dataclass(frozen=True)
class ClusterReport:
    """The findings of ``check_cluster`` for a config without errors."""

    flags: tuple[Flag, ...]
    """The unit's flags, the same for every master."""
    warnings: tuple[Problem, ...]
    """Problems in the config that do not stop the build; ``--strict`` makes them errors."""
    notes: tuple[Problem, ...]
    """kcmbundle's own defaults adjusted for the Kubernetes minor, reported once per build."""


def check_cluster(config: Config, *, strict: bool = False) -> ClusterReport:
    """Plan the unit's flags and check the cluster as a whole.

    Raises:
        ConfigError: a flag or a cluster-wide setting is invalid, or, with
            ``strict``, a warning was found. Every problem is listed.
    """
    plan = plan_flags(config)
    errors = list(plan.errors)
    warnings = list(plan.warnings)

    _check_signers(plan, config.cluster.version.minor, errors, warnings)
    _check_node_cidrs(plan, config, errors)
    _check_delegated_auth(plan, warnings)
    _check_secure_port(plan, errors)

    if strict and warnings:
        errors += warnings
    if errors:
        summary = f"{config.source}: invalid config"
        if strict and warnings:
            summary += " (--strict turns warnings into errors)"
        raise ConfigError(errors, summary=summary)
    return ClusterReport(flags=plan.flags, warnings=tuple(warnings), notes=plan.notes)


def controller_enabled(controllers: str, name: str, minor: int) -> bool:
    """Tell whether a ``--controllers`` value turns on controller ``name`` in Kubernetes 1.``minor``.

    As in KCM, the first item that names the controller decides, as NAME or
    -NAME, by its name or its alias. Without such an item, ``*`` turns on
    every controller that is not disabled by default.
    """
    spec = load_table().controllers[name]
    names = {spec.name, spec.alias} - {None}
    has_star = False
    for item in controllers.split(","):
        if item in names:
            return True
        if item.startswith("-") and item[1:] in names:
            return False
        has_star = has_star or item == "*"
    return has_star and not spec.is_disabled_by_default(minor)


def assert_same_units(units: Mapping[str, str]) -> None:
    """Check that the units of several masters differ only in their comment lines.

    Raises:
        AssertionError: two units differ elsewhere; that is a bug in kcmbundle,
            because the flags are planned once per cluster.
    """
    bodies = {master: _without_comments(text) for master, text in units.items()}
    if len(set(bodies.values())) > 1:
        raise AssertionError(f"kube-controller-manager units differ between masters {sorted(bodies)}; "
                             "the unit's flags must be the same on every master")


def _without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def _controllers_value(plan: FlagPlan) -> str | None:
    """Return the ``--controllers`` value KCM runs with, or None when the given one is invalid."""
    requested = plan.requested.get("controllers")
    if requested is None:
        return load_table().flags["controllers"].default
    emitted = plan.get("controllers")
    return None if emitted is None else emitted.value


def _removed_path(name: str) -> str:
    return EXTRA_ARGS_PREFIX + name


def _check_signers(plan: FlagPlan, minor: int, errors: list[Problem], warnings: list[Problem]) -> None:
    controllers = _controllers_value(plan)
    if controllers is None:
        return  # check_flags reported the invalid --controllers value
    requested = plan.requested.get("controllers")
    controllers_path = requested.origin if requested is not None else _removed_path("controllers")

    if controller_enabled(controllers, CSR_SIGNER, minor):
        _check_signing_files(plan, errors)
    else:
        warnings.append(Problem(
            controllers_path,
            "the CSR signing controller is disabled, so kube-controller-manager signs no "
            "CertificateSigningRequests and kubelet TLS bootstrap waits forever for its client certificate",
            "Keep it disabled only when another signer handles kubernetes.io/kube-apiserver-client-kubelet "
            "and kubernetes.io/kubelet-serving requests",
            controllers))

    if controller_enabled(controllers, SERVICE_ACCOUNT_TOKENS, minor) and \
            "service-account-private-key-file" not in plan.requested:
        errors.append(Problem(
            _removed_path("service-account-private-key-file"),
            "removed while the service-account token controller is enabled; kube-controller-manager then "
            "skips that controller without an error, so token Secrets of service accounts stay empty",
            "Remove the null to use paths.serviceAccountKey, or disable the controller explicitly by adding "
            "-serviceaccount-token to controllerManager.extraArgs.controllers",
            None))


def _check_signing_files(plan: FlagPlan, errors: list[Problem]) -> None:
    per_signer = [name for name in PER_SIGNER_FLAGS if name in plan.requested]
    pair = [name for name in SIGNING_PAIR if name in plan.requested]

    if per_signer and pair:
        # KCM exits: "cannot specify default and per controller certs at the same time".
        for name in pair:
            errors.append(Problem(
                plan.requested[name].origin,
                f"--{name} cannot be combined with per-signer files such as --{per_signer[0]}; "
                "kube-controller-manager exits on start",
                f"Set extraArgs \"{name}\" to null to sign with the per-signer files only, "
                "or remove the per-signer flags"))
        return
    if per_signer or len(pair) == len(SIGNING_PAIR):
        return

    for name in SIGNING_PAIR:
        if name not in plan.requested:
            errors.append(Problem(
                _removed_path(name),
                "removed while the CSR signing controller is enabled; kube-controller-manager then skips the "
                "signer without an error, so no CertificateSigningRequest is signed and kubelet TLS bootstrap stalls",
                "Remove the null to sign with the cluster CA, or disable the signer explicitly by adding "
                "-csrsigning to controllerManager.extraArgs.controllers",
                None))


def _check_secure_port(plan: FlagPlan, errors: list[Problem]) -> None:
    # An emitted flag passed the port check, so its value is a whole number,
    # possibly signed: +0 and -0 are zero too.
    port = plan.get("secure-port")
    if port is not None and int(port.value) == 0:
        errors.append(Problem(
            port.origin,
            "0 turns off kube-controller-manager's HTTPS endpoint, so install.sh cannot check /healthz "
            "after the restart and would roll the install back",
            f"Remove it to use the default port {DEFAULT_SECURE_PORT}, or set a port from 1 to 65535",
            port.value))


def _check_delegated_auth(plan: FlagPlan, warnings: list[Problem]) -> None:
    # kcmbundle always emits both flags, so an absent one was removed with null.
    if "authentication-kubeconfig" not in plan.requested:
        warnings.append(Problem(
            _removed_path("authentication-kubeconfig"),
            "without --authentication-kubeconfig kube-controller-manager cannot review bearer tokens, so a "
            "scraper that sends one is anonymous and GET /metrics returns 403 Forbidden",
            "Remove the null so that kcmbundle sets it to paths.kubeconfig",
            None))
    if "authorization-kubeconfig" not in plan.requested:
        warnings.append(Problem(
            _removed_path("authorization-kubeconfig"),
            "without --authorization-kubeconfig kube-controller-manager forbids every path outside "
            "--authorization-always-allow-paths (/healthz, /readyz, /livez), so GET /metrics returns 403 Forbidden",
            "Remove the null so that kcmbundle sets it to paths.kubeconfig",
            None))


def _check_node_cidrs(plan: FlagPlan, config: Config, errors: list[Problem]) -> None:
    allocate = plan.get("allocate-node-cidrs")
    if allocate is None or parse_go_bool(allocate.value) is not True:
        return
    if any(name in plan.requested and plan.get(name) is None for name in ("cluster-cidr", *_MASK_FLAGS)):
        return  # check_flags reported the invalid value

    cluster_cidr = plan.get("cluster-cidr")
    if cluster_cidr is None or cluster_cidr.value == "":
        errors.append(Problem(
            allocate.origin, "--allocate-node-cidrs=true needs a pod range (--cluster-cidr)",
            "Set cluster.clusterCIDR, or remove allocate-node-cidrs from controllerManager.extraArgs",
            allocate.value))
        return

    networks = [ipaddress.ip_network(item, strict=True) for item in cluster_cidr.value.split(",")]
    single = plan.get("node-cidr-mask-size")
    if len(networks) > 1 and single is not None:
        errors.append(Problem(
            single.origin, "kube-controller-manager rejects --node-cidr-mask-size with a dual-stack cluster CIDR",
            "Set node-cidr-mask-size-ipv4 and node-cidr-mask-size-ipv6 in controllerManager.extraArgs instead",
            single.value))
        return

    expected = config.cluster.expected_nodes or len(config.masters)
    expected_source = "cluster.expectedNodes" if config.cluster.expected_nodes else "the number of masters"
    for network in networks:
        mask = _node_mask(plan, network, len(networks) > 1)
        _check_node_mask(network, mask, cluster_cidr.origin, expected, expected_source, errors)


_MASK_FLAGS = ("node-cidr-mask-size", "node-cidr-mask-size-ipv4", "node-cidr-mask-size-ipv6")


def _node_mask(plan: FlagPlan, network: IPNetwork, dual_stack: bool) -> tuple[int, str]:
    """Return the node subnet prefix KCM uses for ``network`` and the config path that set it."""
    candidates: Sequence[str] = (f"node-cidr-mask-size-ipv{network.version}",)
    if not dual_stack:
        candidates = ("node-cidr-mask-size", *candidates)
    for name in candidates:
        flag = plan.get(name)
        if flag is not None:
            return int(flag.value), flag.origin
    return DEFAULT_NODE_MASK[network.version], "cluster.clusterCIDR"


def _check_node_mask(network: IPNetwork, mask_and_origin: tuple[int, str], cidr_origin: str,
                     expected: int, expected_source: str, errors: list[Problem]) -> None:
    mask, origin = mask_and_origin
    family = network.version
    if mask > network.max_prefixlen:
        errors.append(Problem(
            origin, f"node subnet prefix /{mask} is longer than an IPv{family} address, "
                    f"so it cannot split the IPv{family} range {network}",
            f"Use a prefix from {network.prefixlen + 1} to {network.max_prefixlen}", mask))
        return
    if mask <= network.prefixlen:
        errors.append(Problem(
            origin, f"node subnet prefix /{mask} must be longer than the cluster CIDR prefix "
                    f"/{network.prefixlen} of {network}",
            f"Use a prefix from {network.prefixlen + 1} to {network.max_prefixlen}, or widen cluster.clusterCIDR",
            mask))
        return

    subnet_bits = mask - network.prefixlen
    if family == 6 and subnet_bits > MAX_IPV6_SUBNET_BITS:
        errors.append(Problem(
            origin, f"{network} split into /{mask} gives 2^{subnet_bits} node subnets; kube-controller-manager "
                    f"accepts at most 2^{MAX_IPV6_SUBNET_BITS} for IPv6 and fails to start",
            f"Use a node prefix of at most /{network.prefixlen + MAX_IPV6_SUBNET_BITS}, or a longer cluster CIDR",
            mask))
        return

    capacity = 2 ** subnet_bits
    if capacity < expected:
        needed_bits = (expected - 1).bit_length()
        fix = f"Widen cluster.clusterCIDR to /{mask - needed_bits} or shorter"
        if network.prefixlen + needed_bits <= network.max_prefixlen:
            fix += f", or use a node prefix of /{network.prefixlen + needed_bits} (fewer pod IPs per node)"
        errors.append(Problem(
            cidr_origin, f"{network} holds {capacity} node subnets of /{mask}, fewer than the {expected} nodes "
                         f"expected ({expected_source}); nodes beyond that get no pod range",
            fix, str(network)))
