"""kube-controller-manager's command line and its systemd unit.

``plan_flags`` starts from ``CLASSIC_FLAGS`` and leaves out the defaults that
the config's Kubernetes minor no longer honours. It then applies ``extraArgs``
by name, checks every flag with ``flags.check_flags`` and sorts the result, so
the unit reads the same whatever order the config lists things in. The flags
depend on the config alone, never on a master, so every master gets the same
command line. ``render_unit`` only lays the escaped flags into the template.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Callable

from kcmbundle.config import Config, Master
from kcmbundle.errors import ConfigError, Problem
from kcmbundle.flags import FlagStatus, check_flags, load_table, parse_go_bool
from kcmbundle.templating import render
from kcmbundle.text import has_control_character
from kcmbundle.versions import format_minor

DEFAULT_SECURE_PORT = 10257

# Origin of a default that no config field sets.
DEFAULT_ORIGIN = "controllerManager"
EXTRA_ARGS_PREFIX = "controllerManager.extraArgs."

# NB: this table is the single source of truth for the flags kcmbundle emits
# by default. It follows the classic binary-install guide for an HA control
# plane; a config changes it only through cluster, paths and extraArgs. Each
# entry is (flag name, config path that sets it, function of the config giving
# its value). It is never changed at run time: plan_flags derives a copy for
# the config's Kubernetes minor and drops the entries that minor ignores,
# such as --concurrent-service-syncs from 1.31 on.
#
# Choices that differ from the classic guide:
# - --profiling=false: the guide sets --profiling (true, KCM's default). The
#   CIS Kubernetes Benchmark (control 1.3.2) recommends false, because
#   /debug/pprof hands heap and goroutine dumps to any client that RBAC lets
#   read it. Set extraArgs "profiling": "true" to get it back.
# - --cluster-signing-duration replaces --experimental-cluster-signing-duration,
#   which Kubernetes 1.25 removed.
# - --port=0 and --address are left out: Kubernetes 1.24 removed the insecure port.
# - --pod-eviction-timeout=6m is left out; CLASSIC_FLAGS_LEFT_OUT says why.
CLASSIC_FLAGS: tuple[tuple[str, str, Callable[[Config], str]], ...] = (
    ("authentication-kubeconfig", "paths.kubeconfig", lambda c: str(c.paths.kubeconfig)),
    ("authorization-kubeconfig", "paths.kubeconfig", lambda c: str(c.paths.kubeconfig)),
    ("client-ca-file", "paths.certDir", lambda c: str(c.paths.ca_cert)),
    ("cluster-name", "cluster.name", lambda c: c.cluster.name),
    ("cluster-signing-cert-file", "paths.certDir", lambda c: str(c.paths.ca_cert)),
    ("cluster-signing-duration", DEFAULT_ORIGIN, lambda c: "876000h"),
    ("cluster-signing-key-file", "paths.clusterSigningKey", lambda c: str(c.paths.cluster_signing_key)),
    ("concurrent-deployment-syncs", DEFAULT_ORIGIN, lambda c: "10"),
    ("concurrent-gc-syncs", DEFAULT_ORIGIN, lambda c: "30"),
    ("concurrent-service-syncs", DEFAULT_ORIGIN, lambda c: "2"),
    ("controllers", DEFAULT_ORIGIN, lambda c: "*,bootstrapsigner,tokencleaner"),
    ("kube-api-burst", DEFAULT_ORIGIN, lambda c: "2000"),
    ("kube-api-qps", DEFAULT_ORIGIN, lambda c: "1000"),
    ("kubeconfig", "paths.kubeconfig", lambda c: str(c.paths.kubeconfig)),
    ("leader-elect", "controllerManager.leaderElect", lambda c: "true" if c.controller_manager.leader_elect else "false"),
    ("profiling", DEFAULT_ORIGIN, lambda c: "false"),
    ("requestheader-allowed-names", DEFAULT_ORIGIN, lambda c: "aggregator"),
    ("requestheader-client-ca-file", "paths.certDir", lambda c: str(c.paths.ca_cert)),
    ("requestheader-extra-headers-prefix", DEFAULT_ORIGIN, lambda c: "X-Remote-Extra-"),
    ("requestheader-group-headers", DEFAULT_ORIGIN, lambda c: "X-Remote-Group"),
    ("requestheader-username-headers", DEFAULT_ORIGIN, lambda c: "X-Remote-User"),
    ("root-ca-file", "paths.certDir", lambda c: str(c.paths.ca_cert)),
    ("service-account-private-key-file", "paths.serviceAccountKey", lambda c: str(c.paths.service_account_key)),
    ("service-cluster-ip-range", "cluster.serviceCIDR", lambda c: ",".join(str(n) for n in c.cluster.service_cidrs)),
    ("terminated-pod-gc-threshold", DEFAULT_ORIGIN, lambda c: "10000"),
    ("tls-cert-file", "paths.certDir", lambda c: str(c.paths.cert)),
    ("tls-private-key-file", "paths.certDir", lambda c: str(c.paths.key)),
    ("use-service-account-credentials", DEFAULT_ORIGIN, lambda c: "true"),
    ("v", "controllerManager.verbosity", lambda c: str(c.controller_manager.verbosity)),
)

# Flags of the classic guide that kcmbundle never emits, as (name, the guide's
# value, what replaces it). Every build reports them in a note, because a
# cluster installed from the guide relied on them.
CLASSIC_FLAGS_LEFT_OUT: tuple[tuple[str, str, str], ...] = (
    (
        "pod-eviction-timeout",
        "6m",
        "it has no effect with taint-based eviction (the only mode from Kubernetes 1.27, which removed the flag). "
        "To keep pods 6m on a failed node, set --default-not-ready-toleration-seconds=360 and "
        "--default-unreachable-toleration-seconds=360 on kube-apiserver (default 300)",
    ),
)

DEFAULT_NODE_MASK = {4: 24, 6: 64}
"""KCM's default node subnet prefix per IP family."""

NODE_MASK_FLAGS = ("node-cidr-mask-size", "node-cidr-mask-size-ipv4", "node-cidr-mask-size-ipv6")


@dataclass(frozen=True)
class Flag:
    """One command-line flag and the config path it came from."""

    name: str
    value: str
    origin: str


@dataclass(frozen=True)
class FlagPlan:
    """The flags of a config's unit and what checking them found.

    ``notes`` describe kcmbundle's own defaults adjusted for the Kubernetes
    minor; the user cannot act on them, so ``--strict`` does not count them.
    """

    flags: tuple[Flag, ...]
    """The flags to emit, sorted by name."""
    requested: Mapping[str, Flag]
    """Every flag asked for, by name, before checking: an invalid flag is here but not in ``flags``."""
    warnings: tuple[Problem, ...]
    notes: tuple[Problem, ...]
    errors: tuple[Problem, ...]

    def get(self, name: str) -> Flag | None:
        """Return the emitted flag ``name``, or None when the unit does not have it."""
        for flag in self.flags:
            if flag.name == name:
                return flag
        return None


def default_flags(config: Config) -> dict[str, Flag]:
    """Return kcmbundle's default flags for ``config`` before any version adjustment."""
    flags = {name: Flag(name, value(config), origin) for name, origin, value in CLASSIC_FLAGS}
    flags.update(_node_ipam_flags(config))
    return flags


@lru_cache(maxsize=1024)
def plan_flags(config: Config) -> FlagPlan:
    """Decide kube-controller-manager's flags for ``config`` and check them for its Kubernetes minor.

    A build plans each config twice, once to check it and once to write its
    unit, so the result is kept for the next call with an equal config.

    ``extraArgs`` entries replace defaults of the same name, add new flags,
    or, with a null value, remove a default. Every flag, default or not, goes
    through ``flags.check_flags``: no-op flags are left out with a warning,
    and removed or unknown flags and invalid values are errors.
    """
    minor = config.cluster.version.minor
    warnings: list[Problem] = []
    notes = _left_out_notes(config)

    defaults = default_flags(config)
    user_names = {name for name, _ in config.controller_manager.extra_args}
    requested: dict[str, Flag] = {}
    for flag in defaults.values():
        note = _version_note(flag, minor)
        if note is None:
            requested[flag.name] = flag
        elif flag.name not in user_names:
            notes.append(note)

    for name, value in config.controller_manager.extra_args:
        origin = EXTRA_ARGS_PREFIX + name
        if value is not None:
            requested[name] = Flag(name, value, origin)
        elif name in defaults:
            requested.pop(name, None)
        else:
            warnings.append(Problem(origin, f"null removes nothing: kcmbundle does not emit --{name} by default",
                                    "Remove the entry"))

    requested = _drop_unused_node_masks(requested, config, warnings)

    report = check_flags({name: flag.value for name, flag in requested.items()}, minor,
                         {name: flag.origin for name, flag in requested.items()})
    emitted = tuple(requested[name] for name in sorted(report.flags))
    return FlagPlan(flags=emitted, requested=MappingProxyType(requested), warnings=tuple(warnings + report.warnings), notes=tuple(notes),
                    errors=tuple(report.errors))


def command_flags(config: Config) -> list[Flag]:
    """Return kube-controller-manager's checked flags for ``config``, sorted by name.

    Raises:
        ConfigError: a flag is unknown, removed in the config's Kubernetes
            minor, or has an invalid value.
    """
    plan = plan_flags(config)
    if plan.errors:
        raise ConfigError(plan.errors, summary=f"{config.source}: invalid config")
    return list(plan.flags)


def _version_note(flag: Flag, minor: int) -> Problem | None:
    """Return a note when kcmbundle's default ``flag`` does nothing or is gone in ``minor``, else None."""
    spec = load_table().spec(flag.name)
    if spec is None:
        return None
    flag_status = spec.status(minor)
    version = format_minor(minor)
    if flag_status is FlagStatus.NOOP:
        reason = f"it has no effect from Kubernetes {format_minor(spec.noop)} on"
    elif flag_status is FlagStatus.REMOVED:
        reason = f"Kubernetes {version} no longer has it (removed in {format_minor(spec.removed)})"
    elif flag_status is FlagStatus.NOT_YET_INTRODUCED:
        reason = f"Kubernetes {version} does not have it yet"
    else:
        return None
    return Problem("cluster.kubernetesVersion",
                   f"kcmbundle leaves out its default --{flag.name}={flag.value} for Kubernetes {version} "
                   f"because {reason}", "")


def _left_out_notes(config: Config) -> list[Problem]:
    set_by_user = {name for name, value in config.controller_manager.extra_args if value is not None}
    return [
        Problem("controllerManager", f"kcmbundle leaves out the classic guide's --{name}={value}: {reason}", "")
        for name, value, reason in CLASSIC_FLAGS_LEFT_OUT
        if name not in set_by_user
    ]


def _node_ipam_flags(config: Config) -> dict[str, Flag]:
    cidrs = config.cluster.cluster_cidrs
    if not cidrs:
        return {}
    origin = "cluster.clusterCIDR"
    flags = {
        "allocate-node-cidrs": Flag("allocate-node-cidrs", "true", origin),
        "cluster-cidr": Flag("cluster-cidr", ",".join(str(n) for n in cidrs), origin),
    }
    if len(cidrs) == 1:
        # A dual-stack cluster gets KCM's per-family defaults, because KCM
        # rejects --node-cidr-mask-size with two cluster CIDRs.
        mask = config.cluster.node_cidr_mask_size
        mask_origin = "cluster.nodeCIDRMaskSize" if mask is not None else origin
        if mask is None:
            mask = DEFAULT_NODE_MASK[cidrs[0].version]
        flags["node-cidr-mask-size"] = Flag("node-cidr-mask-size", str(mask), mask_origin)
    return flags


def _drop_unused_node_masks(requested: dict[str, Flag], config: Config, warnings: list[Problem]) -> dict[str, Flag]:
    """Leave out node mask flags that KCM ignores, warning about those the user set.

    A mask does nothing without --allocate-node-cidrs=true, and a per-family
    mask does nothing when the cluster CIDR has no range of that family.
    """
    allocate = requested.get("allocate-node-cidrs")
    allocating = allocate is not None and parse_go_bool(allocate.value) is True
    families = {network.version for network in config.cluster.cluster_cidrs}

    kept = dict(requested)
    for name in NODE_MASK_FLAGS:
        flag = requested.get(name)
        if flag is None:
            continue
        family = None
        if name.endswith("-ipv4"):
            family = 4
        elif name.endswith("-ipv6"):
            family = 6
        if not allocating:
            reason = "it does nothing without --allocate-node-cidrs=true"
            fix = "Remove it, or set allocate-node-cidrs to \"true\" with a cluster.clusterCIDR"
        elif family is not None and family not in families:
            reason = f"cluster.clusterCIDR has no IPv{family} range"
            fix = f"Remove it, or add an IPv{family} range to cluster.clusterCIDR"
        else:
            continue
        del kept[name]
        if flag.origin != "cluster.clusterCIDR":
            warnings.append(Problem(flag.origin, f"kcmbundle leaves out --{name} because {reason}", fix,
                                    flag.value))
    return kept


def flag_value(flags: list[Flag], name: str, default: str) -> str:
    """Return the value of flag ``name`` in ``flags``, or ``default`` when absent."""
    for flag in flags:
        if flag.name == name:
            return flag.value
    return default


def systemd_quote(argument: str) -> str:
    """Escape one ExecStart argument so that systemd passes it through unchanged.

    systemd expands ``%`` specifiers and ``$`` variables in ExecStart and
    splits words on whitespace; ``%%`` and ``$$`` are the literal forms, and a
    double-quoted word may contain spaces, ``\\"`` and ``\\\\``.

    Raises:
        ValueError: the argument contains a control character such as a
        newline, which has no safe form on one ExecStart line.
    """
    if has_control_character(argument):
        raise ValueError("contains a control character")
    escaped = argument.replace("%", "%%").replace("$", "$$")
    if _NEEDS_QUOTES.search(escaped):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


_NEEDS_QUOTES = re.compile(r"[ \t\"'\\;]")


def render_unit(config: Config, master: Master, flags: list[Flag]) -> str:
    """Render the systemd unit for ``master``; only its header comment names the master."""
    arguments = [systemd_quote(f"--{flag.name}={flag.value}") for flag in flags]
    return render(
        "kube-controller-manager.service.j2",
        master=master.name,
        cluster=config.cluster.name,
        working_dir=str(config.paths.working_dir),
        binary=str(config.paths.binary),
        arguments=arguments,
    )
