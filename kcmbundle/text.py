"""Checks on free text that kcmbundle writes into single-line formats.

A unit's ExecStart line, a flag value and an extraArgs entry must each stay
on one line, so every C0 control character (newline and tab included) and
DEL is rejected in them.
"""

from __future__ import annotations

import re

_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def has_control_character(text: str) -> bool:
    """Tell whether ``text`` contains a C0 control character or DEL."""
    return _CONTROL_CHARACTER.search(text) is not None
