"""The ``kcmbundle`` command line: a thin Typer layer over the pure modules.

Commands import what they need when they run, so that ``--help`` and
``--version`` stay fast. Errors from lower layers arrive as
``KcmbundleError``; ``_reporting_errors`` prints them to stderr and exits
with their code, so no input error ends in a traceback.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from kcmbundle import __version__
from kcmbundle.errors import ExitCode, KcmbundleError

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 internal error (a bug: please report it); "
    "2 invalid command line or config; 3 unusable CA certificate or key; "
    "4 output problem, such as an existing bundle without --force."
)

CONFIG_HELP = "Cluster config file (JSON)."

app = typer.Typer(
    name="kcmbundle",
    help="Build offline kube-controller-manager bundles, one tarball per master, from one JSON config.\n\n"
         + EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
ca_app = typer.Typer(
    help="Manage a cluster CA for labs and tests.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
)
app.add_typer(ca_app, name="ca")

logger = logging.getLogger("kcmbundle")


def _print_version(value: bool) -> None:
    if value:
        print(f"kcmbundle {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details to stderr.")] = False,
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def progress(step: str, message: str) -> None:
    """Print one progress line to stderr with a step prefix such as ``[pki]``."""
    print(f"[{step}] {message}", file=sys.stderr)


@contextmanager
def _reporting_errors() -> Iterator[None]:
    try:
        yield
    except KcmbundleError as error:
        for line in error.lines():
            print(f"error: {line}", file=sys.stderr)
        raise typer.Exit(code=int(error.exit_code)) from None
    except KeyboardInterrupt:
        print("error: interrupted; no bundle was replaced", file=sys.stderr)
        raise typer.Exit(code=130) from None


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the starter config.")] = Path("cluster.json"),
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Write a starter config for a three-master cluster, and its JSON Schema beside it."""
    from kcmbundle.starter import write_starter

    with _reporting_errors():
        written = write_starter(path, force=force)
        for item in written:
            progress("init", f"wrote {item}")
        progress("init", f"next: create or copy the CA into {path.parent / 'pki'}, then run "
                         f"'kcmbundle build {path}'")


@ca_app.command("init")
def ca_init(
    directory: Annotated[Path, typer.Argument(help="Folder for ca.pem and ca-key.pem.")],
    key_algorithm: Annotated[str, typer.Option(
        help="CA key algorithm: rsa-2048, rsa-3072, rsa-4096, ecdsa-p256 or ecdsa-p384.")] = "rsa-2048",
    validity: Annotated[str, typer.Option(help="CA lifetime as a Go duration, such as 87600h.")] = "87600h",
    common_name: Annotated[str, typer.Option(help="Subject CN of the CA.")] = "kubernetes-ca",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing CA.")] = False,
) -> None:
    """Create a self-signed cluster CA (ca.pem, and ca-key.pem with mode 0600)."""
    from kcmbundle.ca import init_ca

    with _reporting_errors():
        cert_path, key_path = init_ca(directory, key_algorithm=key_algorithm, validity=validity,
                                      common_name=common_name, force=force)
        progress("ca", f"wrote {cert_path} and {key_path} (mode 0600)")


@app.command()
def validate(config: Annotated[Path, typer.Argument(help=CONFIG_HELP)]) -> None:
    """Check a config and its CA, printing every problem found."""
    from kcmbundle.build import load_and_check
    from kcmbundle.pki import Seams

    with _reporting_errors():
        loaded, ca = load_and_check(config, Seams())
        progress("validate", f"{config}: valid; cluster {loaded.cluster.name}, "
                             f"{len(loaded.masters)} master(s), Kubernetes {loaded.cluster.version}")


@app.command()
def build(
    config: Annotated[Path, typer.Argument(help=CONFIG_HELP)],
    out: Annotated[Path, typer.Option("--out", help="Output folder; bundles go to OUT/<cluster>/.")] = Path("out"),
    master: Annotated[Optional[list[str]], typer.Option(
        "--master", help="Build only this master; repeat for several.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing bundles.")] = False,
) -> None:
    """Build one tarball per master, printing each bundle's sha256 and certificate expiry."""
    from kcmbundle.build import build as build_bundles
    from kcmbundle.pki import iso_time

    with _reporting_errors():
        results = build_bundles(config, out, masters=master or (), force=force)
        for result in results:
            certificate = result.bundle.issued.certificate
            progress("bundle", f"{result.bundle.master.name}: wrote {result.path}")
            print(f"{result.sha256}  {result.path}  notAfter={iso_time(certificate.not_valid_after_utc)}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the config file."""
    from kcmbundle.schema import schema_text

    sys.stdout.write(schema_text())


def main() -> None:
    """Run the CLI; the console script and ``python -m kcmbundle`` call this."""
    try:
        app()
    except KcmbundleError as error:  # raised outside a command, such as in a callback
        for line in error.lines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(int(error.exit_code))
    except BrokenPipeError:
        sys.exit(int(ExitCode.INTERNAL))
