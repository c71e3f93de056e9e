"""Kubernetes versions that kcmbundle supports, and parsing of version strings.

The flag table ``kcmbundle/data/kcm-flags.toml`` covers Kubernetes 1.24 to
1.36 only, so every other minor is rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SUPPORTED_MAJOR = 1
SUPPORTED_MINORS: tuple[int, ...] = tuple(range(24, 37))
"""Minors of Kubernetes 1.x that kcmbundle can build bundles for, oldest first."""

FIRST_MINOR = SUPPORTED_MINORS[0]
LAST_MINOR = SUPPORTED_MINORS[-1]

# No leading zeros, no pre-release or build suffix, no surrounding whitespace.
_VERSION = re.compile(r"v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:\.(0|[1-9][0-9]*))?")

VERSION_HINT = "Write MAJOR.MINOR or MAJOR.MINOR.PATCH, for example 1.30, 1.30.4 or v1.30.4"


@dataclass(frozen=True, order=True)
class KubernetesVersion:
    """A Kubernetes release; ``patch`` is None when only the minor was given."""

    major: int
    minor: int
    patch: int | None = None

    def __str__(self) -> str:
        if self.patch is None:
            return f"{self.major}.{self.minor}"
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def minor_version(self) -> str:
        """The version without its patch number, such as ``1.30``."""
        return f"{self.major}.{self.minor}"


def supported_range() -> str:
    """Return the supported minors as text, such as ``1.24 to 1.36``."""
    return f"{format_minor(FIRST_MINOR)} to {format_minor(LAST_MINOR)}"


def format_minor(minor: int) -> str:
    """Format a minor of Kubernetes 1.x as ``1.NN``."""
    return f"{SUPPORTED_MAJOR}.{minor}"


def parse_kubernetes_version(text: str) -> KubernetesVersion:
    """Parse ``1.30``, ``1.30.4`` or ``v1.30.4`` into a supported version.

    Raises:
        ValueError: ``text`` is not a version, or its minor is outside
            ``SUPPORTED_MINORS``; the message names the supported range.
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid Kubernetes version {text!r}: expected a string. {VERSION_HINT}")

    match = _VERSION.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid Kubernetes version {text!r}. {VERSION_HINT}")

    major, minor, patch = match.groups()
    version = KubernetesVersion(int(major), int(minor), None if patch is None else int(patch))
    if version.major != SUPPORTED_MAJOR or version.minor not in SUPPORTED_MINORS:
        raise ValueError(
            f"unsupported Kubernetes minor {version.minor_version}: "
            f"kcmbundle supports {supported_range()}"
        )
    return version
