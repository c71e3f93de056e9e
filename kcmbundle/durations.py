"""Go-style durations (``8760h``, ``1h30m``, ``2.5s``), as Kubernetes flags take them.

The grammar follows Go's ``time.ParseDuration``: an optional sign, then one
or more decimal numbers each followed by a unit (ns, us, µs, ms, s, m, h).
Days and years are not units there, so ``1y`` or ``30d`` are invalid.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}

_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")

MAX_SECONDS = (2**63 - 1) // 10**9
"""Go stores a duration as int64 nanoseconds, so kube-controller-manager rejects longer ones (about 2562047h)."""

DURATION_HINT = "Write a number with a unit: ns, us, ms, s, m or h, for example 8760h or 1h30m"


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration string.

    Raises:
        ValueError: ``text`` is not a Go duration; the message gives the reason.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("empty duration")

    body = text
    sign = 1
    if body[0] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return timedelta(0)

    seconds = 0.0
    position = 0
    while position < len(body):
        match = _TERM.match(body, position)
        if match is None:
            raise ValueError(_describe_error(body, position))
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()

    if position == 0:
        raise ValueError("empty duration")
    if seconds > MAX_SECONDS:
        raise ValueError(f"longer than Go's maximum duration of {MAX_SECONDS // 3600}h")
    return timedelta(seconds=sign * seconds)


def _describe_error(body: str, position: int) -> str:
    rest = body[position:]
    number = re.match(r"\d+(?:\.\d*)?", rest)
    if number and number.end() == len(rest):
        return f"missing unit after {rest!r}"
    if number:
        return f"unknown unit {rest[number.end():]!r}"
    return f"unexpected {rest!r}"


def format_duration(value: timedelta) -> str:
    """Format a whole number of seconds the way Go prints it (``8760h0m0s``)."""
    total = int(value.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"
