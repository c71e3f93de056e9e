"""kube-controller-manager's command line and its systemd unit.

``command_flags`` starts from ``CLASSIC_FLAGS``, applies the config's
``extraArgs`` by name and sorts the result, so the unit reads the same
whatever order the config lists things in. ``render_unit`` only lays the
escaped flags into the template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from kcmbundle.config import Config, Master
from kcmbundle.templating import render

DEFAULT_SECURE_PORT = 10257

# NB: this table is the single source of truth for the flags kcmbundle emits
# by default. It follows the classic binary-install guide for an HA control
# plane; a config changes it only through cluster, paths and extraArgs. Each
# entry maps a flag name to a function of the config giving its value.
CLASSIC_FLAGS: tuple[tuple[str, Callable[[Config], str]], ...] = (
    ("authentication-kubeconfig", lambda c: str(c.paths.kubeconfig)),
    ("authorization-kubeconfig", lambda c: str(c.paths.kubeconfig)),
    ("client-ca-file", lambda c: str(c.paths.ca_cert)),
    ("cluster-name", lambda c: c.cluster.name),
    ("cluster-signing-cert-file", lambda c: str(c.paths.ca_cert)),
    ("cluster-signing-duration", lambda c: "876000h"),
    ("cluster-signing-key-file", lambda c: str(c.paths.cluster_signing_key)),
    ("concurrent-deployment-syncs", lambda c: "10"),
    ("concurrent-gc-syncs", lambda c: "30"),
    ("controllers", lambda c: "*,bootstrapsigner,tokencleaner"),
    ("kube-api-burst", lambda c: "2000"),
    ("kube-api-qps", lambda c: "1000"),
    ("kubeconfig", lambda c: str(c.paths.kubeconfig)),
    ("leader-elect", lambda c: "true" if c.controller_manager.leader_elect else "false"),
    ("requestheader-allowed-names", lambda c: "aggregator"),
    ("requestheader-client-ca-file", lambda c: str(c.paths.ca_cert)),
    ("requestheader-extra-headers-prefix", lambda c: "X-Remote-Extra-"),
    ("requestheader-group-headers", lambda c: "X-Remote-Group"),
    ("requestheader-username-headers", lambda c: "X-Remote-User"),
    ("root-ca-file", lambda c: str(c.paths.ca_cert)),
    ("service-account-private-key-file", lambda c: str(c.paths.service_account_key)),
    ("service-cluster-ip-range", lambda c: ",".join(str(n) for n in c.cluster.service_cidrs)),
    ("terminated-pod-gc-threshold", lambda c: "10000"),
    ("tls-cert-file", lambda c: str(c.paths.cert)),
    ("tls-private-key-file", lambda c: str(c.paths.key)),
    ("use-service-account-credentials", lambda c: "true"),
    ("v", lambda c: str(c.controller_manager.verbosity)),
)


@dataclass(frozen=True)
class Flag:
    """One command-line flag and the config path it came from."""

    name: str
    value: str
    origin: str


def command_flags(config: Config) -> list[Flag]:
    """Return kube-controller-manager's flags for ``config``, sorted by name.

    ``extraArgs`` entries replace defaults of the same name, add new flags,
    or, with a null value, remove a default.
    """
    flags = {name: Flag(name, value(config), "controllerManager") for name, value in CLASSIC_FLAGS}
    flags.update(_node_ipam_flags(config))

    for name, value in config.controller_manager.extra_args:
        origin = f"controllerManager.extraArgs.{name}"
        if value is None:
            flags.pop(name, None)
        else:
            flags[name] = Flag(name, value, origin)

    return sorted(flags.values(), key=lambda flag: flag.name)


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
        mask = config.cluster.node_cidr_mask_size or (24 if cidrs[0].version == 4 else 64)
        flags["node-cidr-mask-size"] = Flag("node-cidr-mask-size", str(mask), "cluster.nodeCIDRMaskSize")
    return flags


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
    if any(ord(character) < 32 or ord(character) == 127 for character in argument):
        raise ValueError("contains a control character")
    escaped = argument.replace("%", "%%").replace("$", "$$")
    if any(character in escaped for character in " \t\"'\\;"):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def render_unit(config: Config, master: Master, flags: list[Flag]) -> str:
    """Render the systemd unit for ``master``."""
    arguments = [systemd_quote(f"--{flag.name}={flag.value}") for flag in flags]
    return render(
        "kube-controller-manager.service.j2",
        master=master.name,
        cluster=config.cluster.name,
        working_dir=str(config.paths.working_dir),
        binary=str(config.paths.binary),
        arguments=arguments,
    )
