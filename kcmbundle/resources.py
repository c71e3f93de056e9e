"""Locate the files kcmbundle ships beside its code: templates and the JSON Schema.

A wheel carries them inside the package (``kcmbundle/templates``,
``kcmbundle/schemas``); a source checkout or an editable install keeps them
at the top of the repository, one level above the package.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent

SCHEMA_FILE_NAME = "kcmbundle.schema.json"


@cache
def shipped_dir(name: str) -> Path:
    """Return the folder ``name`` (``templates`` or ``schemas``) that this install uses.

    Raises:
        FileNotFoundError: neither location exists, so the install is broken.
    """
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"kcmbundle's {name}/ folder not found beside {_PACKAGE_DIR}; reinstall kcmbundle"
    )


def schema_path() -> Path:
    """Return the path of the config JSON Schema."""
    return shipped_dir("schemas") / SCHEMA_FILE_NAME


def templates_dir() -> Path:
    """Return the folder of the Jinja2 templates."""
    return shipped_dir("templates")
