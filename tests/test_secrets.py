"""Secrets: private keys are 0600 from creation, never shown, and the tool opens no network connection."""

from __future__ import annotations

import base64
import logging
import os
import re
import socket
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Iterator

import pytest
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from kcmbundle.build import build
from kcmbundle.cli import app
from kcmbundle.pki import Seams

from support import KEYS, extract, starter_config, write_config

REPOSITORY = Path(__file__).parent.parent
SNAPSHOTS = Path(__file__).parent / "snapshots"
KEY_FILE = "kube-controller-manager-key.pem"
KUBECONFIG_FILE = "kube-controller-manager.kubeconfig"


def key_needles(pem: bytes) -> list[str]:
    """Return base64 strings that would reveal the private key in ``pem`` wherever it is encoded.

    The secret numbers (the EC private value; RSA's d, p and q) are encoded
    in base64 at each of the three byte alignments they can have inside a
    longer base64 text, such as a PEM body. Public parts are left out, since
    certificates carry them legitimately.
    """
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        secrets = [key.private_numbers().private_value]
    else:
        numbers = key.private_numbers()
        secrets = [numbers.d, numbers.p, numbers.q]
    needles = []
    for number in secrets:
        data = number.to_bytes((number.bit_length() + 7) // 8, "big")
        for shift in range(3):
            needles.append(base64.b64encode(data[shift:]).decode()[:32])
    return needles


_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=\s]{60,}")


def assert_no_needles(text: str, needles: list[str], where: str) -> None:
    """Check ``text``, and every base64 block in it decoded once (as a kubeconfig embeds PEM), for ``needles``."""
    candidates = [re.sub(r"\s", "", text)]
    for run in _BASE64_RUN.findall(text):
        compact = re.sub(r"\s", "", run)
        try:
            decoded = base64.b64decode(compact[: len(compact) // 4 * 4]).decode("ascii", errors="ignore")
        except ValueError:
            continue
        candidates.append(re.sub(r"\s", "", decoded))
    for candidate in candidates:
        for needle in needles:
            assert needle not in candidate, f"key material {needle!r} found in {where}"


def text_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path


# --- File modes ------------------------------------------------------------------------------------


@pytest.fixture
def umask_000() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.fixture
def creations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record (path, mode) of every file that os.open creates while the test runs."""
    recorded: list[tuple[str, int]] = []
    real_open = os.open

    def recording_open(path, flags, mode=0o777, *args, **kwargs):
        if flags & os.O_CREAT:
            recorded.append((os.fspath(path), mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    return recorded


@pytest.fixture
def mode_changes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record (path, mode) of every os.fchmod while the test runs."""
    recorded: list[tuple[str, int]] = []
    real_fchmod = os.fchmod

    def recording_fchmod(descriptor: int, mode: int) -> None:
        recorded.append((os.readlink(f"/proc/self/fd/{descriptor}"), mode))
        real_fchmod(descriptor, mode)

    monkeypatch.setattr(os, "fchmod", recording_fchmod)
    return recorded


def test_ca_init_key_private_from_creation(tmp_path: Path, umask_000: None, creations: list,
                                          mode_changes: list) -> None:
    result = CliRunner().invoke(app, ["ca", "init", str(tmp_path / "pki"), "--key-algorithm", "ecdsa-p256"])

    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "pki" / "ca-key.pem").stat().st_mode) == 0o600
    assert creations, "the test saw no file creation; the recording hook is broken"
    for path, mode in creations:
        assert mode & 0o077 == 0, f"{path} created with mode {mode:o}"
    for path, mode in mode_changes:
        if "ca-key.pem" in path:
            assert mode == 0o600, f"{path} changed to mode {mode:o}"


def test_bundles_private_from_creation(tmp_path: Path, seams: Seams, umask_000: None, creations: list,
                                       mode_changes: list) -> None:
    config = write_config(tmp_path / "cluster")
    out = tmp_path / "out"
    creations.clear()

    results = build(config, out, seams=seams)

    created_in_out = [(path, mode) for path, mode in creations if path.startswith(str(out))]
    assert created_in_out
    for path, mode in created_in_out:
        assert mode & 0o077 == 0, f"{path} created with mode {mode:o}"
    for path, mode in mode_changes:
        assert mode == 0o600, f"{path} changed to mode {mode:o}"
    for result in results:
        assert stat.S_IMODE(result.path.stat().st_mode) == 0o600
        with tarfile.open(result.path) as archive:
            modes = {member.name.rsplit("/", 1)[-1]: member.mode for member in archive.getmembers()}
        assert modes[KEY_FILE] == 0o600
        assert modes[KUBECONFIG_FILE] == 0o600
    assert stat.S_IMODE((out / "kubernetes" / ".kcmbundle.lock").stat().st_mode) == 0o600


def test_init_with_umask_000(tmp_path: Path, umask_000: None, creations: list) -> None:
    result = CliRunner().invoke(app, ["init", str(tmp_path / "cluster.json")])

    assert result.exit_code == 0, result.stderr
    for path, mode in creations:
        assert mode & 0o077 == 0, f"{path} created with mode {mode:o}"
    # The config contains no secret, so it ends up readable like any config file, but never writable by others.
    assert stat.S_IMODE((tmp_path / "cluster.json").stat().st_mode) & 0o022 == 0


# --- No key material in output ------------------------------------------------------------------------


def test_verbose_build_shows_no_key_material(tmp_path: Path) -> None:
    config = write_config(tmp_path / "cluster", starter_config(certificate={"keyAlgorithm": "ecdsa-p256"}))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    runs = [subprocess.run([sys.executable, "-m", "kcmbundle", "--verbose", *arguments], capture_output=True,
                           text=True, env=env, timeout=120)
            for arguments in (["validate", str(config)], ["build", str(config), "--out", str(out)])]
    assert [run.returncode for run in runs] == [0, 0], runs[-1].stderr
    assert any(line.startswith("DEBUG") for line in runs[-1].stderr.splitlines()), "--verbose logged nothing"

    ca_needles = key_needles((tmp_path / "cluster" / "pki" / "ca-key.pem").read_bytes())
    tarballs = sorted((out / "kubernetes").glob("*.tar.gz"))
    assert len(tarballs) == 3
    for tarball in tarballs:
        top = extract(tarball, tmp_path / "extracted")
        bundle_needles = key_needles(next(top.rglob(KEY_FILE)).read_bytes())
        for run in runs:
            assert_no_needles(run.stdout + run.stderr, bundle_needles + ca_needles, "stdout or stderr")
            assert "PRIVATE KEY" not in run.stdout + run.stderr
        for path in text_files(top):
            text = path.read_bytes().decode("utf-8", errors="replace")
            assert_no_needles(text, ca_needles, str(path))
            if path.name in (KEY_FILE, KUBECONFIG_FILE):
                continue  # these two carry the bundle's own key by design
            assert "PRIVATE KEY" not in text, path
            assert_no_needles(text, bundle_needles, str(path))
    for path in (out / "kubernetes").iterdir():
        if not path.name.endswith(".tar.gz"):
            assert "PRIVATE KEY" not in path.read_bytes().decode("utf-8", errors="replace"), path


def test_verbose_logs_show_no_key_material(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(tmp_path / "cluster", starter_config(certificate={"keyAlgorithm": "ecdsa-p256"}))
    out = tmp_path / "out"
    caplog.set_level(logging.DEBUG)

    result = CliRunner().invoke(app, ["--verbose", "build", str(config), "--out", str(out)])

    assert result.exit_code == 0, result.stderr
    assert caplog.records, "no log records captured"
    ca_needles = key_needles((tmp_path / "cluster" / "pki" / "ca-key.pem").read_bytes())
    logged = caplog.text + result.output
    assert "PRIVATE KEY" not in logged
    assert_no_needles(logged, ca_needles, "logs")
    for tarball in sorted((out / "kubernetes").glob("*.tar.gz")):
        top = extract(tarball, tmp_path / "extracted")
        assert_no_needles(logged, key_needles(next(top.rglob(KEY_FILE)).read_bytes()), "logs")


def test_snapshots_hold_no_private_key() -> None:
    if not SNAPSHOTS.is_dir():
        pytest.skip("tests/snapshots does not exist yet")
    needles = [needle for path in sorted(KEYS.glob("*.pem")) for needle in key_needles(path.read_bytes())]
    files = list(text_files(SNAPSHOTS))
    assert files
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        assert "PRIVATE KEY" not in text, path
        assert_no_needles(text, needles, str(path))


# --- The CA key in error messages -----------------------------------------------------------------------


def test_damaged_ca_key_not_echoed(tmp_path: Path) -> None:
    config = write_config(tmp_path / "cluster")
    key_path = tmp_path / "cluster" / "pki" / "ca-key.pem"
    lines = key_path.read_text().splitlines()
    # Drop one line from the middle: the PEM framing stays but the DER inside is broken.
    key_path.write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    needles = [line for line in lines if not line.startswith("-----")]

    result = CliRunner().invoke(app, ["validate", str(config)])

    assert result.exit_code == 3, result.stderr
    assert "ca.key:" in result.stderr
    assert "could not be loaded" in result.stderr
    assert_no_needles(result.output, needles, "the error message")


@pytest.mark.parametrize("misuse", ["config", "ca.cert"])
def test_ca_key_in_wrong_place_not_echoed(tmp_path: Path, misuse: str) -> None:
    config = write_config(tmp_path / "cluster")
    key_path = tmp_path / "cluster" / "pki" / "ca-key.pem"
    needles = key_needles(key_path.read_bytes())
    if misuse == "config":
        arguments = ["validate", str(key_path)]
    else:
        config.write_text(config.read_text().replace('"pki/ca.pem"', '"pki/ca-key.pem"'))
        arguments = ["validate", str(config)]

    result = CliRunner().invoke(app, arguments)

    assert result.exit_code in (2, 3), result.stderr
    assert "PRIVATE KEY" not in result.output
    assert_no_needles(result.output, needles, "the error message")


# --- No network ------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every socket creation and name lookup fail; return the list of attempts."""
    attempts: list[str] = []

    def failing(name: str):
        def fail(*args, **kwargs):
            attempts.append(f"{name}{args!r}")
            raise OSError(f"network access is disabled in this test ({name})")
        return fail

    class FailingSocket(socket.socket):
        # A subclass, not a function, so that modules which subclass socket.socket on import (ssl) still load.
        def __init__(self, *args, **kwargs) -> None:
            attempts.append(f"socket{args!r}")
            raise OSError("network access is disabled in this test (socket)")

    monkeypatch.setattr(socket, "socket", FailingSocket)
    for name in ("create_connection", "create_server", "getaddrinfo", "gethostbyname", "socketpair", "fromfd"):
        monkeypatch.setattr(socket, name, failing(name))
    return attempts


def command_paths() -> list[tuple[str, ...]]:
    """Return the path of every leaf command registered on the app, such as ("ca", "init")."""
    paths = []

    def walk(command, path: tuple[str, ...]) -> None:
        children = getattr(command, "commands", None)
        if children:
            for name, child in children.items():
                walk(child, path + (name,))
        else:
            paths.append(path)

    walk(typer.main.get_command(app), ())
    return sorted(paths)


def leaf_command(path: tuple[str, ...]):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def synthesized_arguments(path: tuple[str, ...], config: Path, bundle: Path, scratch: Path) -> list[str]:
    """Invent a plausible command line for a command from its parameters' names.

    Commands added later are covered without editing this test; each parameter
    gets the config, a built bundle or a new path, depending on its name.
    """
    def value_for(name: str) -> str:
        if "config" in name:
            return str(config)
        if name in ("bundle", "old", "new", "paths", "tarball", "bundles"):
            return str(bundle)
        return str(scratch / f"{'-'.join(path)}-{name}")

    arguments = list(path)
    for parameter in leaf_command(path).params:
        if parameter.param_type_name == "argument" and parameter.required:
            arguments.append(value_for(parameter.name))
        elif parameter.param_type_name == "option" and parameter.required:
            arguments += [parameter.opts[0], value_for(parameter.name)]
    return arguments


def test_commands_open_no_network(tmp_path: Path, no_network: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # invented command lines may write to default paths such as ./out
    config = write_config(tmp_path / "cluster", starter_config(certificate={"keyAlgorithm": "ecdsa-p256"}))
    out = tmp_path / "out"
    runner = CliRunner()
    built = runner.invoke(app, ["build", str(config), "--out", str(out)])
    assert built.exit_code == 0, built.stderr
    bundle = out / "kubernetes" / "k8s-master1.tar.gz"

    known = {
        ("init",): ["init", str(tmp_path / "init" / "cluster.json")],
        ("ca", "init"): ["ca", "init", str(tmp_path / "ca"), "--key-algorithm", "ecdsa-p256"],
        ("validate",): ["validate", str(config)],
        ("build",): ["build", str(config), "--out", str(tmp_path / "out2")],
        ("schema",): ["schema"],
    }
    # (arguments, exit codes allowed): help and the known command lines must succeed; command
    # lines invented for other commands may also end in a clean error.
    invocations: list[tuple[list[str], tuple[int, ...]]] = [(["--help"], (0,)), (["--version"], (0,)), ([], (0, 2))]
    for path in command_paths():
        invocations.append(([*path, "--help"], (0,)))
        if path in known:
            invocations.append((known[path], (0,)))
        else:
            invocations.append((synthesized_arguments(path, config, bundle, tmp_path / "scratch"), (0, 2, 3, 4)))

    assert set(known) <= set(command_paths())
    for arguments, allowed in invocations:
        result = runner.invoke(app, arguments)
        assert result.exception is None or isinstance(result.exception, SystemExit), (arguments, result.exception)
        assert result.exit_code in allowed, (arguments, result.exit_code, result.output)
    assert no_network == []


def test_no_network_fixture_blocks_sockets(no_network: list[str]) -> None:
    # Proves the fixture bites, so an empty attempt list above means something.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 9))
    with pytest.raises(OSError):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    assert no_network[0] == "create_connection(('127.0.0.1', 9),)"
    assert no_network[1].startswith("socket(")
