"""Bad input: every case ends in a clear error, the right exit code and no output.

The corpus lives in tests/cases/invalid/<case>/ (see its README.md). Cases
that cannot be a folder of files (a 50 MB config, file permissions, a CA file
holding a chain) are written out below.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import unicodedata
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from kcmbundle.cli import app
from kcmbundle.pki import Seams, create_ca

from support import load_key, starter_config, write_ca, write_config

CASES = Path(__file__).parent / "cases" / "invalid"
CASE_NAMES = sorted(path.name for path in CASES.iterdir() if (path / "expected.txt").is_file())

# Names the cases use for passphrase variables; a value in the caller's environment must not leak in.
CASE_VARIABLES = ("KCMBUNDLE_TEST_PASSPHRASE", "KCMBUNDLE_TEST_UNSET_PASSPHRASE")


def parse_expected(path: Path) -> tuple[int, dict[str, str], list[str]]:
    """Read an expected.txt: the exit code, environment variables and stderr substrings."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    header, rest = lines[0], lines[1:]
    assert header.startswith("exit: "), f"{path}: the first line must be 'exit: N', got {header!r}"
    environment = {}
    substrings = []
    for line in rest:
        if line.startswith("env: "):
            name, _, value = line.removeprefix("env: ").partition("=")
            environment[name] = value
        else:
            substrings.append(line)
    return int(header.removeprefix("exit: ")), environment, substrings


def prepare_case(name: str, destination: Path) -> Path:
    """Copy case ``name`` over a fresh valid test CA in ``destination``; return the config path."""
    write_ca(destination / "pki", now=datetime.now(timezone.utc))
    shutil.copytree(CASES / name, destination, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("expected.txt"))
    return destination / "cluster.json"


def listing(folder: Path) -> dict[str, bytes]:
    """Return every file under ``folder`` with its content, by relative path."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def key_lines(folder: Path) -> list[str]:
    """Return the base64 body lines of the private keys under ``folder``, which no message may show."""
    lines = []
    for path in folder.rglob("*.pem"):
        text = path.read_bytes().decode("ascii", errors="replace")
        if "PRIVATE KEY" in text:
            lines += [line for line in text.splitlines() if len(line) >= 32 and not line.startswith("-----")]
    return lines


def assert_clean_error(result, code: int, substrings: list[str], secrets: list[str]) -> None:
    """Check one rejected run: exit code, no traceback, the expected text and no key material."""
    stderr = result.stderr
    assert result.exit_code == code, stderr
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in stderr
    assert result.stdout == ""
    for line in stderr.splitlines():
        assert line.startswith(("error: ", "note: ")), line
    assert "error: " in stderr
    for substring in substrings:
        assert substring in stderr, f"{substring!r} not in:\n{stderr}"
    assert "PRIVATE KEY" not in stderr
    raw = [character for character in stderr if character != "\n" and unicodedata.category(character) in ("Cc", "Cf")]
    assert raw == [], f"raw control characters reach the terminal: {raw!r}"
    for secret in secrets:
        assert secret not in stderr


@pytest.mark.parametrize("name", CASE_NAMES)
def test_invalid_case(name: str, tmp_path: Path) -> None:
    code, environment, substrings = parse_expected(CASES / name / "expected.txt")
    config = prepare_case(name, tmp_path / "case")
    before = listing(tmp_path / "case")
    secrets = key_lines(tmp_path / "case")
    env: dict[str, str | None] = {variable: None for variable in CASE_VARIABLES}
    env.update(environment)
    runner = CliRunner()

    validated = runner.invoke(app, ["validate", str(config)], env=env)
    assert_clean_error(validated, code, substrings, secrets)

    out = tmp_path / "out"
    built = runner.invoke(app, ["build", str(config), "--out", str(out)], env=env)
    assert_clean_error(built, code, substrings, secrets)
    assert not out.exists() or listing(out) == {}, listing(out)
    assert listing(tmp_path / "case") == before


def test_corpus_has_every_kind() -> None:
    # Guards against a glob or rename silently dropping the corpus.
    assert len(CASE_NAMES) >= 50
    assert all((CASES / name / "cluster.json").is_file() for name in CASE_NAMES)


def test_config_of_50_mb(tmp_path: Path) -> None:
    config = write_config(tmp_path / "cluster")
    document = starter_config()
    document["$schema"] = "x" * (50 * 1024 * 1024)
    config.write_text(json.dumps(document))

    for arguments in (["validate", str(config)], ["build", str(config), "--out", str(tmp_path / "out")]):
        result = CliRunner().invoke(app, arguments)
        assert_clean_error(result, 2, ["cluster.json: the file is larger than 1024 KiB",
                                       "Pass the cluster config"], [])
    assert not (tmp_path / "out").exists()


def test_config_file_missing(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "absent.json")])

    assert_clean_error(result, 2, ["absent.json: config file not found", "kcmbundle init"], [])


def test_config_is_a_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])

    assert_clean_error(result, 2, ["is a directory", "Pass the config file"], [])


def test_key_pasted_into_config_not_shown(tmp_path: Path) -> None:
    config = write_config(tmp_path / "cluster")
    key_pem = (tmp_path / "cluster" / "pki" / "ca-key.pem").read_text()
    document = starter_config(ca={"cert": "pki/ca.pem", "key": key_pem, "passphraseEnv": "my secret words"})
    config.write_text(json.dumps(document))
    secrets = key_lines(tmp_path / "cluster")

    result = CliRunner().invoke(app, ["validate", str(config)])

    assert_clean_error(result, 2, ["ca.key: holds PEM text instead of a file path",
                                   "ca.passphraseEnv: invalid value (value not shown: it may be a secret)"],
                       secrets + ["my secret words"])


def test_ca_chain_first_certificate_signs(tmp_path: Path, seams: Seams) -> None:
    """A CA file holding several certificates is a chain: the first signs, all go into ca.pem."""
    from kcmbundle.build import build

    config = write_config(tmp_path / "cluster")
    cert_path = tmp_path / "cluster" / "pki" / "ca.pem"
    root_pem, _ = create_ca(common_name="kcmbundle-test-root", key_algorithm="ecdsa-p256",
                            validity=timedelta(days=3650),
                            seams=Seams(clock=seams.clock, serial=lambda: 0xB0, key_factory=lambda _: load_key("ecdsa-p256-3")))
    issuer_pem = cert_path.read_bytes()
    cert_path.write_bytes(issuer_pem + root_pem)

    results = build(config, tmp_path / "out", masters=["k8s-master1"], seams=seams)

    bundle = results[0].bundle
    issuer = x509.load_pem_x509_certificate(issuer_pem)
    issued = bundle.issued.certificate
    assert issued.issuer == issuer.subject
    issued.verify_directly_issued_by(issuer)
    installed_ca = bundle.file("rootfs/etc/kubernetes/cert/ca.pem").content
    assert [c.subject for c in x509.load_pem_x509_certificates(installed_ca)] == [
        issuer.subject, x509.load_pem_x509_certificate(root_pem).subject]


def test_ca_key_unreadable_permission_patched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Path.open raising PermissionError simulates an unreadable key, because the tests may run as root."""
    config = write_config(tmp_path / "cluster")
    real_open = Path.open

    def open_file(path: Path, *args, **kwargs):
        if path.name == "ca-key.pem":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_file)
    result = CliRunner().invoke(app, ["build", str(config), "--out", str(tmp_path / "out")])

    assert_clean_error(result, 3, ["ca.key: file not readable (permission denied)", "pki/ca-key.pem",
                                   "fix the file's permissions"], [])
    assert not (tmp_path / "out").exists()


def test_ca_key_unreadable_real_permissions(tmp_path: Path) -> None:
    """A mode 000 key, read by a process without CAP_DAC_OVERRIDE, so that root is refused as well."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is not installed")
    config = write_config(tmp_path / "cluster")
    key = tmp_path / "cluster" / "pki" / "ca-key.pem"
    key.chmod(0)
    command = [setpriv, "--bounding-set=-dac_override,-dac_read_search",
               sys.executable, "-m", "kcmbundle", "validate", str(config)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}

    if os.geteuid() != 0:
        command = command[2:]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    finally:
        key.chmod(0o600)
    if "setpriv:" in completed.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {completed.stderr.strip()}")

    assert completed.returncode == 3, completed.stderr
    assert "ca.key: file not readable (permission denied)" in completed.stderr
    assert "Traceback" not in completed.stderr
