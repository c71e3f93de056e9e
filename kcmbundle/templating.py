"""The one Jinja2 environment that renders every text template.

Templates stay dumb: values are computed and escaped in Python, and a
missing variable is an error instead of an empty string.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from kcmbundle.resources import templates_dir


@cache
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # the outputs are shell, systemd and plain text, not HTML
    )


def render(name: str, **values: Any) -> str:
    """Render the template ``name`` from the templates folder."""
    return _environment().get_template(name).render(**values)


def compile_all() -> None:
    """Import Jinja2 and compile every template now, instead of at its first ``render``.

    A build calls this before it waits for its first key, so that this work
    overlaps key generation in the worker processes.
    """
    environment = _environment()
    for name in environment.list_templates(extensions=["j2"]):
        environment.get_template(name)
