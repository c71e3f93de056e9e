"""Errors that kcmbundle reports to the user, and their exit codes.

Lower layers raise these with the specifics (the JSON path, the value, the
fix); the CLI catches ``KcmbundleError`` once, prints it to stderr and exits
with ``exit_code``. Any other exception is a bug and exits with 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Iterable


class ExitCode(IntEnum):
    """Process exit statuses, documented in README.md and ``kcmbundle --help``."""

    OK = 0
    INTERNAL = 1
    INVALID_CONFIG = 2
    INVALID_CA = 3
    OUTPUT = 4
    BUNDLE_CHECK = 5


class _Missing:
    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE = _Missing()
"""Marks a problem that has no offending value, such as a missing field."""


def format_path(parts: Iterable[str | int]) -> str:
    """Format JSON path parts as ``masters[1].ip``; the document root is ``$``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = str(part)
    return text or "$"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where, the value, what is wrong and the fix.

    ``value`` is shown as JSON so that strings keep their quotes and an
    empty string stays visible. Pass ``NO_VALUE`` for a missing field and
    never pass secret material.
    """

    path: str
    message: str
    fix: str
    value: object = NO_VALUE

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}"
        if self.value is not NO_VALUE:
            text += f" (got {_show(self.value)})"
        return f"{text}. {self.fix}" if self.fix else f"{text}."


def _show(value: object) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > 120:
        text = text[:117] + "..."
    return text


class KcmbundleError(Exception):
    """Base class for every error that reaches the user as a message."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def lines(self) -> list[str]:
        """Return the message as the lines the CLI prints."""
        return str(self).splitlines() or [type(self).__name__]


class ProblemsError(KcmbundleError):
    """An error made of one or more ``Problem`` lines, all reported at once."""

    def __init__(self, problems: Iterable[Problem], summary: str | None = None):
        self.problems = sorted(problems, key=lambda problem: problem.path)
        self.summary = summary
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        lines = [self.summary] if self.summary else []
        return lines + [str(problem) for problem in self.problems]


class ConfigError(ProblemsError):
    """The config file is missing, unreadable or invalid."""

    exit_code = ExitCode.INVALID_CONFIG


class CAError(ProblemsError):
    """The CA certificate or key cannot be used to sign the bundle's certificate."""

    exit_code = ExitCode.INVALID_CA


class OutputError(KcmbundleError):
    """An output cannot be written, or exists and ``--force`` was not given."""

    exit_code = ExitCode.OUTPUT


class BundleError(KcmbundleError):
    """A bundle or certificate file cannot be read safely, or is not a kcmbundle bundle."""

    exit_code = ExitCode.BUNDLE_CHECK


class VerificationError(ProblemsError):
    """A bundle failed one or more checks; each ``Problem`` names the file and the check."""

    exit_code = ExitCode.BUNDLE_CHECK


class UsageError(KcmbundleError):
    """A command-line argument is invalid in a way Click cannot check."""

    exit_code = ExitCode.INVALID_CONFIG
