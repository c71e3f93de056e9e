"""Console-script entry point with fast paths for ``--version`` and ``--help``.

Importing Typer costs several times more than starting Python, so the two
requests an operator types most are printed before the CLI module is
imported: the version, and the top-level help. The help is Typer's own text,
stored in ``data/help.txt``; a test keeps it equal to what Typer prints.
Every other command line goes to ``kcmbundle.cli.main``.
"""

from __future__ import annotations

import os
import sys

HELP_WIDTH = 80
"""The stored help is wrapped as Click wraps for a terminal at least this wide."""


def main() -> None:
    """Run kcmbundle with ``sys.argv``."""
    arguments = sys.argv[1:]
    if arguments == ["--version"]:
        from kcmbundle import __version__

        print(f"kcmbundle {__version__}")
        return

    # sys.stdout is None when the shell closed it (kcmbundle --help >&-).
    if arguments in (["--help"], ["-h"]) and sys.stdout is not None and _terminal_columns() >= HELP_WIDTH:
        with open(os.path.join(os.path.dirname(__file__), "data", "help.txt"), encoding="utf-8") as stream:
            sys.stdout.write(stream.read())
        return

    from kcmbundle.cli import main as cli_main

    cli_main()


def _terminal_columns() -> int:
    # The width Click wraps to, found the way shutil.get_terminal_size finds
    # it, without importing shutil: COLUMNS, then the terminal, then 80.
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:
        columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    return columns or HELP_WIDTH
