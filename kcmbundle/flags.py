"""Per-version knowledge of kube-controller-manager (KCM) flags.

The facts live in ``kcmbundle/data/kcm-flags.toml``; its header explains each
field. This module loads that table once and reports, for one minor of
Kubernetes 1.24 to 1.36, whether a flag exists, whether a value is valid and
which flags kcmbundle may write into the unit.

It reads ``kcm-flags.json``, the same table converted to JSON, because
parsing the TOML file took about 30 ms, a twentieth of a small build on the
benchmark machine. A test keeps the two equal: after editing the TOML file,
refresh the JSON file with ``pytest tests/test_flags.py --snapshot-update``.

Minors are plain integers: 27 means Kubernetes 1.27.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from importlib import resources
from types import MappingProxyType
from typing import Any

from kcmbundle.durations import DURATION_HINT, parse_duration
from kcmbundle.errors import NO_VALUE, Problem
from kcmbundle.text import has_control_character
from kcmbundle.versions import SUPPORTED_MINORS, format_minor, supported_range

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Go strconv.ParseBool, which pflag uses for bool flags.
GO_BOOL_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_BOOL_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

# kcmbundle accepts decimal numbers only, although pflag also takes 0x and 0o forms.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FLAG_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_FEATURE_GATE = re.compile(r"(?:[A-Za-z0-9-]+:)?[A-Za-z0-9]+=(?:true|false)")
_VMODULE_ITEM = re.compile(r"[^=,\s]+=[0-9]+")
_CONTROLLER_TOKEN = re.compile(r"-?[a-z0-9]+(?:-[a-z0-9]+)*")

# Value types that the table may use; load_table rejects any other.
VALUE_TYPES = frozenset(
    {
        "bool", "int32", "int", "port", "level", "float", "duration", "string", "path",
        "ip", "cidrs", "strings", "enum", "controllers", "feature-gates", "vmodule",
    }
)

_DEFAULT_ORIGIN_PREFIX = "controllerManager.extraArgs."


class FlagStatus(str, Enum):
    """The status of a flag, or of a controller name, in one minor."""

    PRESENT = "present"
    DEPRECATED = "deprecated"
    NOOP = "noop"
    REMOVED = "removed"
    NOT_YET_INTRODUCED = "not-yet-introduced"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class FlagChange:
    """Overrides that apply to a flag from minor ``since`` on."""

    since: int
    overrides: Mapping[str, Any]


@dataclass(frozen=True)
class FlagSpec:
    """One KCM flag as the table describes it, with the fields of its header."""

    name: str
    type: str
    default: str | None = None
    values: tuple[str, ...] = ()
    min: int | float | str | None = None
    max: int | float | str | None = None
    max_items: int | None = None
    introduced: int | None = None
    deprecated: int | None = None
    noop: int | None = None
    noop_unless: tuple[str, str] | None = None
    removed: int | None = None
    replacement: str | None = None
    reason: str | None = None
    unsupported: str | None = None
    sources: tuple[str, ...] = ()
    confidence: str = "verified"
    note: str | None = None
    changes: tuple[FlagChange, ...] = ()

    def at(self, minor: int) -> FlagSpec:
        """Return the spec with the changes up to ``minor`` applied."""
        spec = self
        for change in self.changes:
            if change.since <= minor:
                spec = dataclasses.replace(spec, **change.overrides)
        return spec

    def status(self, minor: int) -> FlagStatus:
        """Return the status of this flag in ``minor``; removal wins over the rest."""
        return _lifecycle_status(self.introduced, self.deprecated, self.noop, self.removed, minor)


@dataclass(frozen=True)
class ControllerSpec:
    """One controller of ``--controllers``, named as KCM names it from 1.28 on."""

    name: str
    alias: str | None = None
    introduced: int | None = None
    noop: int | None = None
    removed: int | None = None
    disabled_by_default_since: int | None = None
    sources: tuple[str, ...] = ()
    confidence: str = "verified"
    note: str | None = None

    def status(self, minor: int) -> FlagStatus:
        """Return the status of this controller in ``minor``."""
        return _lifecycle_status(self.introduced, None, self.noop, self.removed, minor)

    def accepted_names(self, minor: int) -> tuple[str, ...]:
        """Return the names KCM accepts for this controller in ``minor``.

        Before 1.28 only the old short name exists. From 1.28 on the
        ``-controller`` name is canonical and the old name is an alias
        (kubernetes/kubernetes#115813).
        """
        if self.status(minor) in (FlagStatus.REMOVED, FlagStatus.NOT_YET_INTRODUCED):
            return ()
        if minor < CONTROLLER_RENAME_MINOR:
            return (self.alias,) if self.alias else ()
        return (self.name, self.alias) if self.alias else (self.name,)

    def is_disabled_by_default(self, minor: int) -> bool:
        """Tell whether ``*`` leaves this controller off in ``minor``."""
        since = self.disabled_by_default_since
        return since is not None and minor >= since


CONTROLLER_RENAME_MINOR = 28


@dataclass(frozen=True)
class FlagTable:
    """All flags and controllers of the data file, keyed by name."""

    flags: Mapping[str, FlagSpec]
    controllers: Mapping[str, ControllerSpec]
    sources: Mapping[str, str]

    def spec(self, name: str) -> FlagSpec | None:
        """Return the spec of ``name``, or None when the table does not know it."""
        return self.flags.get(name)

    def status(self, name: str, minor: int) -> FlagStatus:
        """Return the status of flag ``name`` in ``minor``."""
        spec = self.flags.get(name)
        if spec is None:
            return FlagStatus.UNKNOWN
        return spec.status(minor)

    def usable_flags(self, minor: int) -> list[str]:
        """Return the flags KCM accepts in ``minor`` (present, deprecated or no-op), sorted."""
        usable = (FlagStatus.PRESENT, FlagStatus.DEPRECATED, FlagStatus.NOOP)
        return sorted(name for name, spec in self.flags.items() if spec.status(minor) in usable)

    def controller_names(self, minor: int) -> dict[str, ControllerSpec]:
        """Return every controller name and alias KCM accepts in ``minor``."""
        names: dict[str, ControllerSpec] = {}
        for controller in self.controllers.values():
            for name in controller.accepted_names(minor):
                names[name] = controller
        return names


def _lifecycle_status(
    introduced: int | None, deprecated: int | None, noop: int | None, removed: int | None, minor: int
) -> FlagStatus:
    if removed is not None and minor >= removed:
        return FlagStatus.REMOVED
    if introduced is not None and minor < introduced:
        return FlagStatus.NOT_YET_INTRODUCED
    if noop is not None and minor >= noop:
        return FlagStatus.NOOP
    if deprecated is not None and minor >= deprecated:
        return FlagStatus.DEPRECATED
    return FlagStatus.PRESENT


# ---------------------------------------------------------------------------
# Loading the table
# ---------------------------------------------------------------------------


@functools.cache
def load_table() -> FlagTable:
    """Load the flag table (``kcmbundle/data/kcm-flags.json``) once and return it.

    Raises:
        ValueError: the data file has a field or type this module does not
            handle. That is a bug in the file, not in the user's config.
    """
    document = json.loads((resources.files("kcmbundle") / "data" / "kcm-flags.json").read_bytes())

    flags = {name: _parse_flag(name, entry) for name, entry in document.get("flags", {}).items()}
    controllers = {
        name: _parse_controller(name, entry) for name, entry in document.get("controllers", {}).items()
    }
    return FlagTable(
        flags=MappingProxyType(flags),
        controllers=MappingProxyType(controllers),
        sources=MappingProxyType(dict(document.get("sources", {}))),
    )


_FLAG_FIELDS = {f.name for f in dataclasses.fields(FlagSpec)} - {"name", "changes"}
_CHANGE_FIELDS = {"type", "values", "default", "min", "max", "max_items"}
_CHANGE_NOTES = {"since", "sources", "confidence", "note"}


def _parse_flag(name: str, entry: Mapping[str, Any]) -> FlagSpec:
    unknown = set(entry) - _FLAG_FIELDS - {"changes"}
    if unknown:
        raise ValueError(f"kcm-flags.toml: flag {name!r} has unknown fields {sorted(unknown)}")

    fields: dict[str, Any] = {key: value for key, value in entry.items() if key != "changes"}
    if "values" in fields:
        fields["values"] = tuple(fields["values"])
    if "sources" in fields:
        fields["sources"] = tuple(fields["sources"])
    if "noop_unless" in fields:
        condition = fields["noop_unless"]
        fields["noop_unless"] = (condition["flag"], condition["value"])

    changes = []
    for change in entry.get("changes", ()):
        unknown = set(change) - _CHANGE_FIELDS - _CHANGE_NOTES
        if unknown:
            raise ValueError(f"kcm-flags.toml: a change of flag {name!r} has unknown fields {sorted(unknown)}")
        overrides = {key: value for key, value in change.items() if key in _CHANGE_FIELDS}
        if "values" in overrides:
            overrides["values"] = tuple(overrides["values"])
        changes.append(FlagChange(since=change["since"], overrides=MappingProxyType(overrides)))

    spec = FlagSpec(name=name, changes=tuple(sorted(changes, key=lambda c: c.since)), **fields)
    for minor in SUPPORTED_MINORS:
        if spec.at(minor).type not in VALUE_TYPES:
            raise ValueError(f"kcm-flags.toml: flag {name!r} has unknown type {spec.at(minor).type!r}")
    return spec


def _parse_controller(name: str, entry: Mapping[str, Any]) -> ControllerSpec:
    fields = dict(entry)
    disabled = fields.pop("disabled_by_default", False)
    if disabled and "disabled_by_default_since" not in fields:
        fields["disabled_by_default_since"] = fields.get("introduced") or SUPPORTED_MINORS[0]
    if "sources" in fields:
        fields["sources"] = tuple(fields["sources"])
    try:
        return ControllerSpec(name=name, **fields)
    except TypeError as error:
        raise ValueError(f"kcm-flags.toml: controller {name!r}: {error}") from None


def _check_minor(minor: int) -> None:
    if minor not in SUPPORTED_MINORS:
        raise ValueError(
            f"unsupported Kubernetes minor {format_minor(minor)}: kcmbundle supports {supported_range()}"
        )


def status(name: str, minor: int) -> FlagStatus:
    """Return the status of flag ``name`` (without dashes) in Kubernetes 1.``minor``."""
    _check_minor(minor)
    return load_table().status(name, minor)


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


def expected_form(spec: FlagSpec) -> str:
    """Describe the values ``spec`` accepts, for the fix of a Problem."""
    kind = spec.type
    if kind == "bool":
        return "true or false"
    if kind in ("int32", "int", "port", "level"):
        low, high = _integer_limits(spec)
        return f"a whole number from {low} to {high}"
    if kind == "float":
        low = spec.min if spec.min is not None else "any"
        return f"a decimal number such as 20 or 0.5 (minimum {low})"
    if kind == "duration":
        return f"a duration: {DURATION_HINT[0].lower()}{DURATION_HINT[1:]}"
    if kind == "path":
        return "an absolute path such as /etc/kubernetes/pki/ca.crt"
    if kind == "ip":
        return "an IPv4 or IPv6 address such as 0.0.0.0 or 192.168.0.10"
    if kind == "cidrs":
        limit = f", at most {spec.max_items}" if spec.max_items else ""
        return f"comma-separated CIDRs such as 10.96.0.0/12{limit}"
    if kind == "strings" and spec.values:
        return "a comma-separated list of: " + ", ".join(spec.values)
    if kind == "strings":
        return "a comma-separated list"
    if kind == "enum":
        return "one of: " + ", ".join(repr(value) if value == "" else value for value in spec.values)
    if kind == "controllers":
        return "a comma-separated list of *, NAME and -NAME, for example *,bootstrapsigner,tokencleaner"
    if kind == "feature-gates":
        return "a comma-separated list of Name=true or Name=false"
    if kind == "vmodule":
        return "a comma-separated list of pattern=N"
    return "text on one line"


def check_value(spec: FlagSpec, value: str) -> str | None:
    """Check ``value`` against the type of ``spec`` and return what is wrong, or None.

    Pass a spec already resolved for the minor (``FlagSpec.at``), because some
    flags change their type or values between minors. For ``controllers`` this
    checks only the syntax; ``check_controllers`` checks the names.
    """
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if has_control_character(value):
        return "contains a control character such as a newline or tab"

    checker = _VALUE_CHECKERS.get(spec.type, _check_string)
    return checker(spec, value)


def _check_string(spec: FlagSpec, value: str) -> str | None:
    return None


def _check_bool(spec: FlagSpec, value: str) -> str | None:
    if value in GO_BOOL_TRUE or value in GO_BOOL_FALSE:
        return None
    return "not a boolean"


def _integer_limits(spec: FlagSpec) -> tuple[int, int]:
    low, high = {
        "int32": (INT32_MIN, INT32_MAX),
        "int": (INT64_MIN, INT64_MAX),
        "port": (0, 65535),
        "level": (0, INT32_MAX),
    }[spec.type]
    if spec.min is not None:
        low = max(low, int(spec.min))
    if spec.max is not None:
        high = min(high, int(spec.max))
    return low, high


def _check_integer(spec: FlagSpec, value: str) -> str | None:
    if not _INTEGER.fullmatch(value):
        return "not a whole number"
    number = int(value)
    low, high = _integer_limits(spec)
    if number < low:
        return f"{number} is less than the minimum {low}"
    if number > high:
        return f"{number} is greater than the maximum {high}"
    return None


def _check_float(spec: FlagSpec, value: str) -> str | None:
    if not _FLOAT.fullmatch(value):
        return "not a decimal number"
    number = float(value)
    if not math.isfinite(number):
        return "out of range"
    if spec.min is not None and number < float(spec.min):
        return f"{value} is less than the minimum {spec.min}"
    if spec.max is not None and number > float(spec.max):
        return f"{value} is greater than the maximum {spec.max}"
    return None


def _check_duration(spec: FlagSpec, value: str) -> str | None:
    try:
        duration = parse_duration(value)
    except ValueError as error:
        return f"not a duration ({error})"
    if duration < timedelta(0):
        return "a negative duration has no meaning here"
    if spec.min is not None and duration < parse_duration(str(spec.min)):
        return f"shorter than the minimum {spec.min}"
    if spec.max is not None and duration > parse_duration(str(spec.max)):
        return f"longer than the maximum {spec.max}"
    return None


def _check_path(spec: FlagSpec, value: str) -> str | None:
    if value == "" or value.startswith("/"):
        return None
    return "not an absolute path; systemd would resolve it against the working directory of the unit"


def _check_ip(spec: FlagSpec, value: str) -> str | None:
    if value == "":
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "not an IP address"
    return None


def _check_cidrs(spec: FlagSpec, value: str) -> str | None:
    if value == "":
        return None
    items = value.split(",")
    if spec.max_items is not None and len(items) > spec.max_items:
        return f"has {len(items)} CIDRs; at most {spec.max_items} are allowed"

    networks = []
    for item in items:
        problem, network = _parse_cidr(item)
        if problem:
            return problem
        networks.append(network)
    if len(networks) == 2 and networks[0].version == networks[1].version:
        return "two CIDRs must be one IPv4 and one IPv6 (dual-stack)"
    return None


def _parse_cidr(item: str) -> tuple[str | None, Any]:
    if "/" not in item:
        return f"{item!r} is not a CIDR: the /prefix length is missing", None
    try:
        return None, ipaddress.ip_network(item, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(item, strict=False)
    except ValueError:
        return f"{item!r} is not a CIDR", None
    return f"{item!r} has host bits set; the network is {loose}", None


def _check_strings(spec: FlagSpec, value: str) -> str | None:
    if value == "":
        return None
    items = value.split(",")
    if any(item == "" for item in items):
        return "has an empty item; remove the extra comma"
    if spec.max_items is not None and len(items) > spec.max_items:
        return f"has {len(items)} items; at most {spec.max_items} are allowed"
    if spec.values:
        unknown = [item for item in items if item not in spec.values]
        if unknown:
            return f"{', '.join(unknown)} not allowed"
    return None


def _check_enum(spec: FlagSpec, value: str) -> str | None:
    if value in spec.values:
        return None
    return f"{value!r} is not an allowed value"


def _check_controllers_syntax(spec: FlagSpec, value: str) -> str | None:
    for token in value.split(","):
        if token == "":
            return "has an empty controller name; remove the extra comma"
        if token != "*" and not _CONTROLLER_TOKEN.fullmatch(token):
            return f"{token!r} is not *, NAME or -NAME"
    return None


def _check_feature_gates(spec: FlagSpec, value: str) -> str | None:
    if value == "":
        return None
    bad = [item for item in value.split(",") if not _FEATURE_GATE.fullmatch(item)]
    if bad:
        return f"{', '.join(repr(item) for item in bad)} not in the form Name=true or Name=false"
    return None


def _check_vmodule(spec: FlagSpec, value: str) -> str | None:
    if value == "":
        return None
    bad = [item for item in value.split(",") if not _VMODULE_ITEM.fullmatch(item)]
    if bad:
        return f"{', '.join(repr(item) for item in bad)} not in the form pattern=N"
    return None


_VALUE_CHECKERS = {
    "bool": _check_bool,
    "int32": _check_integer,
    "int": _check_integer,
    "port": _check_integer,
    "level": _check_integer,
    "float": _check_float,
    "duration": _check_duration,
    "string": _check_string,
    "path": _check_path,
    "ip": _check_ip,
    "cidrs": _check_cidrs,
    "strings": _check_strings,
    "enum": _check_enum,
    "controllers": _check_controllers_syntax,
    "feature-gates": _check_feature_gates,
    "vmodule": _check_vmodule,
}


def parse_go_bool(value: str) -> bool | None:
    """Return the bool that Go's strconv.ParseBool reads from ``value``, or None."""
    if value in GO_BOOL_TRUE:
        return True
    if value in GO_BOOL_FALSE:
        return False
    return None


# ---------------------------------------------------------------------------
# --controllers
# ---------------------------------------------------------------------------


def check_controllers(value: str, minor: int) -> list[str]:
    """Check a ``--controllers`` value for Kubernetes 1.``minor`` and return the errors.

    Tokens are ``*``, ``NAME`` and ``-NAME``; NAME may be a canonical name or
    an alias. KCM exits on any name it does not know, so each one is an error
    here, with the closest known names as suggestions.
    """
    _check_minor(minor)
    table = load_table()
    known = table.controller_names(minor)
    every_name = {
        name: controller
        for controller in table.controllers.values()
        for name in (controller.name, controller.alias)
        if name
    }

    errors = []
    for position, token in enumerate(value.split(","), start=1):
        if token == "":
            errors.append(f"item {position} is empty; remove the extra comma")
            continue
        if token == "*":
            continue
        name = token[1:] if token.startswith("-") else token
        if name in known:
            continue
        errors.append(_describe_unknown_controller(name, minor, known, every_name.get(name)))
    return errors


def _describe_unknown_controller(
    name: str, minor: int, known: Mapping[str, ControllerSpec], controller: ControllerSpec | None
) -> str:
    version = format_minor(minor)
    if controller is not None:
        controller_status = controller.status(minor)
        if controller_status is FlagStatus.REMOVED:
            return f"controller {name!r} was removed in Kubernetes {format_minor(controller.removed)}; remove it"
        if controller_status is FlagStatus.NOT_YET_INTRODUCED:
            return (
                f"controller {name!r} is not in Kubernetes {version}; "
                f"it was introduced in {format_minor(controller.introduced)}"
            )
        if minor < CONTROLLER_RENAME_MINOR and name == controller.name and controller.alias:
            return (
                f"controller {name!r} is not known to Kubernetes {version}; "
                f"before 1.28 it is named {controller.alias!r}"
            )

    suggestions = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
    text = f"controller {name!r} is not known to Kubernetes {version}"
    if suggestions:
        return text + "; did you mean " + " or ".join(repr(item) for item in suggestions) + "?"

    # Nothing is close, so list the names: the shortest accepted name of each controller.
    shortest = sorted({min(spec.accepted_names(minor), key=len) for spec in known.values()})
    return text + "; known controllers are " + ", ".join(shortest)


# ---------------------------------------------------------------------------
# Whole flag sets
# ---------------------------------------------------------------------------


@dataclass
class FlagReport:
    """The outcome of ``check_flags``.

    ``flags`` contains what kcmbundle may write into the unit, keyed by flag
    name without dashes. Present and deprecated flags are kept, no-op flags
    are dropped.
    """

    flags: dict[str, str] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)


def check_flags(flags: Mapping[str, str], minor: int, origins: Mapping[str, str]) -> FlagReport:
    """Check KCM flags for Kubernetes 1.``minor`` and decide which ones to emit.

    ``flags`` maps a flag name without leading dashes to its value.
    ``origins`` maps the same keys to the config path each flag came from; a
    key without an origin is reported as ``controllerManager.extraArgs.KEY``.

    Unknown, removed, not yet introduced and unsupported flags and invalid
    values are errors. Deprecated flags are kept with a warning. No-op flags
    are dropped with a warning.
    """
    _check_minor(minor)
    table = load_table()
    report = FlagReport()

    names = _normalise_names(flags, origins, table, report)
    for name, (key, value) in names.items():
        path = origins.get(key, _DEFAULT_ORIGIN_PREFIX + key)
        _check_one_flag(name, value, path, minor, names, table, report)

    _check_leader_election(report, minor, origins, table)
    return report


def _normalise_names(
    flags: Mapping[str, str], origins: Mapping[str, str], table: FlagTable, report: FlagReport
) -> dict[str, tuple[str, str]]:
    """Map each usable flag name to its original key and value, reporting bad keys."""
    names: dict[str, tuple[str, str]] = {}
    for key, value in flags.items():
        path = origins.get(key, _DEFAULT_ORIGIN_PREFIX + key)
        name = _check_key(key, value, path, report)
        if name is None:
            continue

        if "_" in name:
            dashed = name.replace("_", "-")
            report.warnings.append(
                Problem(
                    path=path,
                    message=f"flag name {key!r} uses underscores; KCM reads it as --{dashed}",
                    fix=f"Write {dashed!r} as the key",
                )
            )
            name = dashed

        if name in names:
            first_key = names[name][0]
            report.errors.append(
                Problem(
                    path=path,
                    message=f"flag --{name} is set twice (as {first_key!r} and {key!r})",
                    fix="Keep one of the two keys",
                )
            )
            continue
        names[name] = (key, value)
    return names


def _check_key(key: object, value: object, path: str, report: FlagReport) -> str | None:
    if not isinstance(key, str) or key == "":
        report.errors.append(Problem(path=path, message="flag name is empty", fix="Remove the entry"))
        return None
    if key.startswith("-"):
        bare = key.lstrip("-")
        report.errors.append(
            Problem(
                path=path,
                message=f"flag name {key!r} starts with a dash",
                fix=f"Write the name without dashes, as {bare!r}; kcmbundle adds the \"--\"",
            )
        )
        return None
    if "=" in key:
        bare, _, rest = key.partition("=")
        report.errors.append(
            Problem(
                path=path,
                message=f"flag name {key!r} contains '='",
                fix=f"Use {bare!r} as the key and put {rest!r} in the value",
            )
        )
        return None
    if not _FLAG_NAME.fullmatch(key.replace("_", "-")):
        report.errors.append(
            Problem(
                path=path,
                message=f"flag name {key!r} is invalid",
                fix="Write a KCM flag name in lower case with dashes, such as 'kube-api-qps'",
            )
        )
        return None
    if not isinstance(value, str):
        report.errors.append(
            Problem(
                path=path,
                message=f"value of flag --{key} is not a string",
                fix="Write the value as a JSON string, for example \"true\" or \"10s\"",
                value=value,
            )
        )
        return None
    return key


def _check_one_flag(
    name: str,
    value: str,
    path: str,
    minor: int,
    names: Mapping[str, tuple[str, str]],
    table: FlagTable,
    report: FlagReport,
) -> None:
    version = format_minor(minor)
    spec = table.spec(name)
    if spec is None:
        report.errors.append(_unknown_flag_problem(name, path, minor, table))
        return

    spec = spec.at(minor)
    flag_status = spec.status(minor)

    if flag_status is FlagStatus.REMOVED:
        report.errors.append(
            Problem(
                path=path,
                message=f"flag --{name} was removed in Kubernetes {format_minor(spec.removed)} "
                f"and KCM {version} exits on it",
                fix=_removal_fix(spec, minor, table),
            )
        )
        return
    if flag_status is FlagStatus.NOT_YET_INTRODUCED:
        report.errors.append(
            Problem(
                path=path,
                message=f"flag --{name} is not in Kubernetes {version}; "
                f"it was introduced in {format_minor(spec.introduced)}",
                fix=f"Remove it, or set the Kubernetes version to {format_minor(spec.introduced)} or later",
            )
        )
        return
    if spec.unsupported:
        report.errors.append(
            Problem(path=path, message=f"flag --{name} is not supported in a kcmbundle unit", fix=spec.unsupported)
        )
        return

    if flag_status is FlagStatus.NOOP and not _noop_condition_met(spec, names):
        report.warnings.append(
            Problem(
                path=path,
                message=f"flag --{name} has no effect in Kubernetes {version}, so kcmbundle does not emit it",
                fix=_removal_fix(spec, minor, table),
                value=value,
            )
        )
        return

    problem = check_value(spec, value)
    if problem is None and spec.type == "controllers":
        controller_errors = check_controllers(value, minor)
        problem = "; ".join(controller_errors) if controller_errors else None
    if problem is not None:
        report.errors.append(
            Problem(
                path=path,
                message=f"invalid value for flag --{name}: {problem}",
                fix=f"Write {expected_form(spec)}",
                value=value,
            )
        )
        return

    if flag_status in (FlagStatus.DEPRECATED, FlagStatus.NOOP):
        since = spec.deprecated if spec.deprecated is not None else minor
        message = f"flag --{name} is deprecated since Kubernetes {format_minor(since)}"
        if spec.removed is not None:
            message += f" and removed in {format_minor(spec.removed)}"
        report.warnings.append(Problem(path=path, message=message, fix=_removal_fix(spec, minor, table)))
    report.flags[name] = value


def _noop_condition_met(spec: FlagSpec, names: Mapping[str, tuple[str, str]]) -> bool:
    if spec.noop_unless is None:
        return False
    other, required_value = spec.noop_unless
    if other not in names:
        return False
    actual_value = names[other][1]
    required_bool = parse_go_bool(required_value)
    if required_bool is not None:
        return parse_go_bool(actual_value) is required_bool
    return actual_value == required_value


def _removal_fix(spec: FlagSpec, minor: int, table: FlagTable) -> str:
    """Say what to do instead of ``spec``: its replacement flag, its reason, or removal."""
    parts = []
    if spec.replacement:
        replacement = table.spec(spec.replacement)
        usable = replacement is not None and replacement.status(minor) in (FlagStatus.PRESENT, FlagStatus.DEPRECATED)
        if usable:
            parts.append(f"Use --{spec.replacement} instead")
        else:
            parts.append(f"Its successor is --{spec.replacement}")
    if spec.reason:
        parts.append(spec.reason)
    if not parts:
        parts.append(f"Remove --{spec.name}")
    return ". ".join(part.rstrip(".") for part in parts)


def _unknown_flag_problem(name: str, path: str, minor: int, table: FlagTable) -> Problem:
    suggestions = difflib.get_close_matches(name, table.usable_flags(minor), n=3, cutoff=0.6)
    if suggestions:
        fix = "Did you mean " + " or ".join(f"--{item}" for item in suggestions) + "?"
    else:
        fix = f"Remove it; run 'kcmbundle flags --version {format_minor(minor)}' to list the known flags"
    return Problem(
        path=path,
        message=f"unknown kube-controller-manager flag --{name} for Kubernetes {format_minor(minor)}",
        fix=fix,
    )


_LEADER_DURATIONS = ("leader-elect-lease-duration", "leader-elect-renew-deadline", "leader-elect-retry-period")

# client-go's NewLeaderElector requires leaseDuration > renewDeadline and
# renewDeadline > JitterFactor * retryPeriod, with JitterFactor = 1.2.
_LEADER_JITTER_FACTOR = 1.2


def _check_leader_election(report: FlagReport, minor: int, origins: Mapping[str, str], table: FlagTable) -> None:
    """Check the leader-election durations against each other, as client-go does at start."""
    if parse_go_bool(report.flags.get("leader-elect", "true")) is False:
        return
    if not any(name in report.flags for name in _LEADER_DURATIONS):
        return

    durations = {}
    for name in _LEADER_DURATIONS:
        text = report.flags.get(name, table.flags[name].at(minor).default)
        durations[name] = parse_duration(text)
    lease, renew, retry = (durations[name] for name in _LEADER_DURATIONS)

    def path_of(name: str) -> str:
        return origins.get(name, _DEFAULT_ORIGIN_PREFIX + name)

    zero = [name for name in _LEADER_DURATIONS if durations[name] <= timedelta(0)]
    for name in zero:
        report.errors.append(
            Problem(
                path=path_of(name),
                message=f"--{name} must be longer than 0 while --leader-elect is true",
                fix=f"Remove it to use the default {table.flags[name].at(minor).default}",
                value=report.flags.get(name, NO_VALUE),
            )
        )
    if zero:
        return

    if not lease > renew:
        report.errors.append(
            Problem(
                path=path_of("leader-elect-renew-deadline"),
                message="--leader-elect-renew-deadline must be shorter than --leader-elect-lease-duration "
                f"({report.flags.get('leader-elect-lease-duration', table.flags['leader-elect-lease-duration'].default)})",
                fix="Lower the renew deadline or raise the lease duration, for example 10s and 15s",
                value=report.flags.get("leader-elect-renew-deadline", NO_VALUE),
            )
        )
    if not renew > retry * _LEADER_JITTER_FACTOR:
        report.errors.append(
            Problem(
                path=path_of("leader-elect-retry-period"),
                message="--leader-elect-renew-deadline must be longer than 1.2 times --leader-elect-retry-period",
                fix="Lower the retry period or raise the renew deadline, for example 2s and 10s",
                value=report.flags.get("leader-elect-retry-period", NO_VALUE),
            )
        )


# ---------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------


def render_table(minor: int, as_json: bool) -> str:
    """Render the flags KCM accepts in Kubernetes 1.``minor``, for ``kcmbundle flags``.

    The text form has one aligned row per flag: name, type, default, status
    and what to use instead. The JSON form is a list of objects with the
    same facts plus the allowed values and the lifecycle minors.
    """
    _check_minor(minor)
    table = load_table()
    rows = []
    for name in table.usable_flags(minor):
        spec = table.flags[name].at(minor)
        rows.append(
            {
                "name": name,
                "type": spec.type,
                "default": spec.default,
                "status": spec.status(minor).value,
                "replacement": spec.replacement,
                "values": list(spec.values),
                "introduced": _format_optional_minor(spec.introduced),
                "deprecated": _format_optional_minor(spec.deprecated),
                "noop": _format_optional_minor(spec.noop),
                "removed": _format_optional_minor(spec.removed),
                "confidence": spec.confidence,
            }
        )

    if as_json:
        return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"

    header = ("FLAG", "TYPE", "DEFAULT", "STATUS", "REPLACEMENT")
    lines = [header]
    for row in rows:
        default = row["default"] if row["default"] is not None else "-"
        lines.append(("--" + row["name"], row["type"], default, row["status"], row["replacement"] or "-"))
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    text_lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(text_lines) + "\n"


def _format_optional_minor(minor: int | None) -> str | None:
    return None if minor is None else format_minor(minor)
