"""The ``kcmbundle`` command line: a thin Typer layer over the pure modules.

Commands import what they need when they run, so that ``--help`` and
``--version`` stay fast. Errors from lower layers arrive as
``KcmbundleError``; ``_reporting_errors`` prints them to stderr and exits
with their code, so no input error ends in a traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from kcmbundle import __version__
from kcmbundle import interrupts
from kcmbundle.errors import ExitCode, KcmbundleError
from kcmbundle.interrupts import Interrupted

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 internal error (a bug: please report it); "
    "2 invalid command line or config; 3 unusable CA certificate or key; "
    "4 output problem, such as an existing bundle without --force; "
    "5 bundle check failed: verify found a problem, check-expiration found a certificate "
    "expired or expiring within --warn-days, or a bundle is unsafe or unreadable. "
    "diff exits 0 when the bundles are the same and 1 when they differ, as diff(1) does."
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
    print(terminal_safe(f"[{step}] {message}"), file=sys.stderr)


def terminal_safe(text: str) -> str:
    """Escape control, format and surrogate characters, such as ESC, CSI or a right-to-left override.

    Messages quote config values and file names, which could otherwise move
    the cursor, recolour the terminal or reorder the line on screen.
    """
    return "".join(_escape(character) if unicodedata.category(character) in ("Cc", "Cf", "Cs") else character
                   for character in text)


def _escape(character: str) -> str:
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


@contextmanager
def _reporting_errors() -> Iterator[None]:
    try:
        yield
    except KcmbundleError as error:
        for line in error.lines():
            print(terminal_safe(f"error: {line}"), file=sys.stderr)
        raise typer.Exit(code=int(error.exit_code)) from None
    except (KeyboardInterrupt, Interrupted) as interrupt:
        # The finally blocks inside the command have run by now and removed their temporary files.
        _report_interrupt(interrupt)
        raise typer.Exit(code=_interrupt_exit_code(interrupt)) from None


def _interrupt_exit_code(interrupt: BaseException) -> int:
    # 128 + the signal number, as shells report a process that a signal ended.
    return 128 + (interrupt.signal_number if isinstance(interrupt, Interrupted) else signal.SIGINT)


def _report_interrupt(interrupt: BaseException) -> None:
    name = signal.Signals(interrupt.signal_number).name if isinstance(interrupt, Interrupted) else "SIGINT"
    print(f"error: interrupted by {name}; temporary files were removed, and the bundles of each cluster "
          "were either all written or all left as they were", file=sys.stderr)


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


STRICT_HELP = "Treat warnings about the config as errors (exit 2)."


def _print_cluster_report(report, prefix: str = "", *, notes: bool = True) -> None:
    """Print the warnings and, unless ``notes`` is false, the notes of ``cluster_checks.check_cluster`` to stderr."""
    for problem in report.warnings:
        print(terminal_safe(f"warning: {prefix}{problem}"), file=sys.stderr)
    if not notes:
        return
    for problem in report.notes:
        print(terminal_safe(f"note: {prefix}{problem}"), file=sys.stderr)


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help=CONFIG_HELP)],
    strict: Annotated[bool, typer.Option("--strict", help=STRICT_HELP)] = False,
) -> None:
    """Check a config and its CA, printing every problem found, then warnings and notes."""
    from kcmbundle.validation import load_and_check
    from kcmbundle.pki import Seams

    with _reporting_errors():
        loaded, ca = load_and_check(config, Seams(), strict=strict, on_report=_print_cluster_report)
        progress("validate", f"{config}: valid; cluster {loaded.cluster.name}, "
                             f"{len(loaded.masters)} master(s), Kubernetes {loaded.cluster.version}")


@app.command()
def build(
    configs: Annotated[Optional[list[Path]], typer.Argument(
        help="Cluster config files (JSON); several build several clusters.", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder; bundles go to OUT/<cluster>/.")] = Path("out"),
    all_folder: Annotated[Optional[Path], typer.Option(
        "--all", help="Also build every *.json config in this folder and in its subfolders one level down.")] = None,
    master: Annotated[Optional[list[str]], typer.Option(
        "--master", help="Build only this master; repeat for several. Needs exactly one config.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing bundles.")] = False,
    sign_key: Annotated[Optional[Path], typer.Option(
        "--sign-key", help="Ed25519 private key (PEM) to sign SHA256SUMS with; adds SHA256SUMS.sig.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help=STRICT_HELP)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print no progress or notes to stderr, only warnings and errors.")] = False,
) -> None:
    """Build one tarball per master, printing each bundle's sha256 and certificate expiry.

    With several configs (or --all) every cluster is built even when one
    fails; a summary lists each cluster, and the exit code is that of the
    first cluster that failed.
    """
    from kcmbundle.build import build_clusters, find_configs
    from kcmbundle.errors import UsageError
    from kcmbundle.pki import iso_time
    from kcmbundle.progress_bar import BuildProgress

    with _reporting_errors():
        paths = list(configs or [])
        if all_folder is not None:
            paths += [path for path in find_configs(all_folder) if path not in paths]
        if not paths:
            raise UsageError("missing config: pass a config file, such as cluster.json, or --all FOLDER")
        several = len(paths) > 1

        def report(path: Path, cluster_report) -> None:
            _print_cluster_report(cluster_report, prefix=f"{path}: " if several else "", notes=not quiet)

        with BuildProgress(enabled=not quiet) as bar:
            outcomes = build_clusters(paths, out, masters=master or (), force=force, sign_key=sign_key,
                                      strict=strict, on_report=report, on_progress=bar)

        for outcome in outcomes:
            for result in outcome.results:
                certificate = result.bundle.issued.certificate
                if not quiet:
                    progress("bundle", f"{result.bundle.master.name}: wrote {result.path}")
                print(f"{result.sha256}  {result.path}  notAfter={iso_time(certificate.not_valid_after_utc)}")

        failed = [outcome for outcome in outcomes if outcome.error is not None]
        if not several:
            if failed:
                raise failed[0].error
            return
        _print_build_summary(outcomes)
        if failed:
            raise typer.Exit(code=int(failed[0].error.exit_code))


def _print_build_summary(outcomes) -> None:
    """Print one line per cluster of a multi-cluster build, then every failure in full."""
    print(f"{'cluster':<24} {'bundles':>7}  {'result':<6}  config", file=sys.stderr)
    for outcome in outcomes:
        result = "failed" if outcome.error is not None else "ok"
        print(terminal_safe(f"{outcome.cluster or '-':<24} {len(outcome.results):>7}  {result:<6}  {outcome.config_path}"),
              file=sys.stderr)
    for outcome in outcomes:
        if outcome.error is not None:
            prefix = f"{outcome.config_path}: "
            for line in outcome.error.lines():
                # Errors about the file itself already start with its path.
                text = line if line.startswith(prefix) else prefix + line
                print(terminal_safe(f"error: {text}"), file=sys.stderr)


def _now():
    # Looked up at call time so that tests can fix the clock by patching pki.utc_now.
    from kcmbundle import pki

    return pki.utc_now()


BUNDLE_HELP = "Bundle tarball (.tar.gz), or the folder unpacked from one."
WARN_DAYS_HELP = "Fail when a certificate expires within this many days."


@app.command()
def inspect(
    bundle: Annotated[Path, typer.Argument(help=BUNDLE_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Show a bundle's manifest, certificates, unit flags and files, without unpacking it."""
    import json

    from kcmbundle.inspection import format_inspection, inspect_bundle
    from kcmbundle.reader import read_bundle

    with _reporting_errors():
        report = inspect_bundle(read_bundle(bundle), _now())
        sys.stdout.write(json.dumps(report, indent=2) + "\n" if as_json else format_inspection(report))


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help=BUNDLE_HELP)],
    ca: Annotated[Optional[Path], typer.Option(
        "--ca", help="Trusted CA certificate (PEM); default: the bundle's own ca.pem.")] = None,
    warn_days: Annotated[int, typer.Option("--warn-days", min=0, help=WARN_DAYS_HELP)] = 30,
    key: Annotated[Optional[Path], typer.Option(
        "--key", help="Ed25519 public key (PEM); require SHA256SUMS.sig to be its valid signature.")] = None,
) -> None:
    """Check a bundle before installing it; list every failure and exit 5 if there is one.

    Checks: checksums, the signature (with --key), the certificate's chain to
    the CA and its key, the kubeconfig's embedded CA, certificate and key, the
    master's IP in the SANs, and expiry.
    """
    from kcmbundle.reader import read_bundle
    from kcmbundle.signing import read_public_key
    from kcmbundle.verification import verify_bundle

    with _reporting_errors():
        ca_pem = _read_ca_option(ca) if ca is not None else None
        public_key = read_public_key(key) if key is not None else None
        passed = verify_bundle(read_bundle(bundle), now=_now(), warn_days=warn_days, ca_pem=ca_pem,
                               ca_source=str(ca), signing_key_pem=public_key)
        for line in passed:
            print(f"ok: {line}")
        progress("verify", f"{bundle}: all checks passed")


def _read_ca_option(path: Path) -> bytes:
    from kcmbundle.errors import UsageError

    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"--ca {path}: could not be read: {error.strerror}; pass the cluster CA's PEM file") from None


@app.command("check-expiration")
def check_expiration(
    paths: Annotated[list[Path], typer.Argument(
        help="Bundle tarballs, unpacked bundles, kubeconfigs, PEM files, or folders to search for them.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
    warn_days: Annotated[int, typer.Option("--warn-days", min=0, help=WARN_DAYS_HELP)] = 30,
) -> None:
    """List every certificate's notAfter and days left, soonest first; exit 5 if one expires within --warn-days."""
    import json

    from kcmbundle.expiry import STATUS_OK, collect_expirations, format_expirations

    with _reporting_errors():
        entries = collect_expirations(paths, now=_now(), warn_days=warn_days)
        sys.stdout.write(json.dumps(entries, indent=2) + "\n" if as_json else format_expirations(entries))
        due = [entry for entry in entries if entry["status"] != STATUS_OK]
        if due:
            print(f"error: {len(due)} certificate(s) expired or expire within {warn_days} days; "
                  "renew them with 'kcmbundle renew'", file=sys.stderr)
            raise typer.Exit(code=int(ExitCode.BUNDLE_CHECK))


@app.command()
def render(
    config: Annotated[Path, typer.Argument(help=CONFIG_HELP)],
    master: Annotated[Optional[list[str]], typer.Option(
        "--master", help="Render only this master; repeat for several.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Write the files under OUT/<cluster>-<master>/ instead of printing them.")] = None,
) -> None:
    """Print the text of every bundle file, with keys and certificates replaced by readable summaries.

    No key is generated and the CA key is not read, so the output can be
    committed and reviewed as a diff.
    """
    from kcmbundle.render import format_rendered, render_config, write_rendered

    with _reporting_errors():
        rendered = render_config(config, masters=master or ())
        if out is None:
            sys.stdout.write(format_rendered(rendered))
        else:
            for path in write_rendered(rendered, out):
                progress("render", f"wrote {path}")


@app.command()
def diff(
    old: Annotated[Path, typer.Argument(help="Old bundle, unpacked bundle, folder of bundles, or config.")],
    new: Annotated[Path, typer.Argument(help="New bundle, unpacked bundle, folder of bundles, or config.")],
) -> None:
    """Compare two bundles as a reviewer would: text diffs, certificate field changes, files added and removed.

    Exits 0 when they are the same and 1 when they differ, as diff(1) does.
    """
    from kcmbundle.review_diff import diff_paths

    with _reporting_errors():
        text, same = diff_paths(old, new, now=_now())
        sys.stdout.write(text)
        if not same:
            raise typer.Exit(code=1)


@app.command()
def keygen(
    directory: Annotated[Path, typer.Argument(help="Folder for signing-key.pem and signing-key.pub.pem.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
) -> None:
    """Create an Ed25519 key pair for signing bundles (private key mode 0600)."""
    from kcmbundle.signing import generate_key_pair

    with _reporting_errors():
        private_path, public_path = generate_key_pair(directory, force=force)
        progress("keygen", f"wrote {private_path} (mode 0600) and {public_path}")
        progress("keygen", f"sign with 'kcmbundle build --sign-key {private_path}'; give {public_path} "
                           "to whoever installs the bundles")


@app.command()
def renew(
    config: Annotated[Path, typer.Argument(help=CONFIG_HELP)],
    old: Annotated[Path, typer.Option(
        "--from", help="Folder of the bundles to renew, such as out/<cluster>/.")],
    keep_keys: Annotated[bool, typer.Option(
        "--keep-keys", help="Reuse the old private keys instead of generating new ones.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Output folder; bundles go to OUT/<cluster>/.")] = Path("out"),
    force: Annotated[bool, typer.Option("--force", help="Replace existing bundles.")] = False,
    sign_key: Annotated[Optional[Path], typer.Option(
        "--sign-key", help="Ed25519 private key (PEM) to sign SHA256SUMS with.")] = None,
) -> None:
    """Issue new certificates with the same subject and SANs for the bundles in --from; all else stays the same."""
    from kcmbundle.pki import iso_time
    from kcmbundle.renew import renew_bundles

    with _reporting_errors():
        results = renew_bundles(config, old, out, keep_keys=keep_keys, force=force, sign_key=sign_key)
        for result in results:
            certificate = result.bundle.issued.certificate
            progress("renew", f"{result.bundle.master.name}: wrote {result.path}")
            print(f"{result.sha256}  {result.path}  notAfter={iso_time(certificate.not_valid_after_utc)}")


@app.command()
def flags(
    version: Annotated[Optional[str], typer.Option(
        "--version", help="Kubernetes version to list, such as 1.30; default: the newest that kcmbundle supports.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """List the kube-controller-manager flags of one Kubernetes minor: type, default, status, replacement."""
    from kcmbundle.errors import UsageError
    from kcmbundle.flags import render_table
    from kcmbundle.versions import LAST_MINOR, parse_kubernetes_version, supported_range

    with _reporting_errors():
        minor = LAST_MINOR
        if version is not None:
            try:
                minor = parse_kubernetes_version(version).minor
            except ValueError as error:
                message = str(error)
                if supported_range() not in message:
                    message += f". kcmbundle supports {supported_range()}"
                raise UsageError(f"--version: {message}") from None
        sys.stdout.write(render_table(minor, as_json))


@app.command()
def schema() -> None:
    """Print the JSON Schema of the config file."""
    from kcmbundle.schema import schema_text

    sys.stdout.write(schema_text())


def main() -> None:
    """Run the CLI; the console script and ``python -m kcmbundle`` call this."""
    interrupts.install_handlers()
    try:
        app()
    except Interrupted as interrupt:  # struck outside a command, such as while Click parsed the arguments
        _report_interrupt(interrupt)
        sys.exit(_interrupt_exit_code(interrupt))
    except KcmbundleError as error:  # raised outside a command, such as in a callback
        for line in error.lines():
            print(terminal_safe(f"error: {line}"), file=sys.stderr)
        sys.exit(int(error.exit_code))
    except BrokenPipeError:
        sys.exit(int(ExitCode.INTERNAL))
