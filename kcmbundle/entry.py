"""Console-script entry point with a fast path for ``--version``.

Importing Typer costs more than the whole rest of ``kcmbundle --version``,
so a plain version request is printed before the CLI module is imported.
Every other command line goes to ``kcmbundle.cli.main``.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Run kcmbundle with ``sys.argv``."""
    if sys.argv[1:] == ["--version"]:
        from kcmbundle import __version__

        print(f"kcmbundle {__version__}")
        return

    from kcmbundle.cli import main as cli_main

    cli_main()
