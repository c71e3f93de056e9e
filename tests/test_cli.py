"""The command line: each command, each documented exit code, and the installed entry points."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kcmbundle import __version__
from kcmbundle.cli import app
from kcmbundle.entry import HELP_WIDTH
from kcmbundle.resources import schema_path

from support import starter_config, write_config

REPOSITORY = Path(__file__).resolve().parent.parent

runner = CliRunner()


def invoke(*args: str, cwd: Path | None = None):
    """Run the CLI in-process; ``cwd`` makes relative default paths land in a temp folder."""
    if cwd is None:
        return runner.invoke(app, list(args))
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(app, list(args))
    finally:
        os.chdir(previous)


def test_version_prints_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"kcmbundle {__version__}\n"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_commands_and_exit_codes(flag: str) -> None:
    result = invoke(flag)
    assert result.exit_code == 0, result.output
    for command in ("init", "validate", "build", "schema", "ca"):
        assert command in result.stdout
    assert "3 unusable CA certificate or key" in " ".join(result.stdout.split())


def run_entry(target: str, *arguments: str, columns: str) -> subprocess.CompletedProcess:
    """Run ``target``'s ``main`` as the console script would; stderr reports whether Typer was imported."""
    probe = (f"import sys\nsys.argv[0] = 'kcmbundle'\nfrom {target} import main\n"
             "try:\n    main()\nfinally:\n    sys.stderr.write(str('typer' in sys.modules))\n")
    return subprocess.run([sys.executable, "-c", probe, *arguments], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "COLUMNS": columns})


def test_stored_help_is_what_typer_prints(snapshot) -> None:
    # The fast path of kcmbundle.entry prints data/help.txt instead of
    # importing Typer; after changing a command or its help, refresh the file
    # with: pytest tests/test_cli.py --snapshot-update
    completed = run_entry("kcmbundle.cli", "--help", columns=str(HELP_WIDTH))
    assert completed.returncode == 0, completed.stderr
    snapshot.snapshot_dir = REPOSITORY / "kcmbundle" / "data"
    snapshot.assert_match(completed.stdout, "help.txt")


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("columns", [str(HELP_WIDTH), "200"])
def test_entry_prints_help_without_importing_typer(flag: str, columns: str) -> None:
    fast = run_entry("kcmbundle.entry", flag, columns=columns)
    typer_help = run_entry("kcmbundle.cli", flag, columns=columns)

    assert fast.returncode == 0, fast.stderr
    assert fast.stderr == "False"
    assert fast.stdout == typer_help.stdout


def test_entry_leaves_narrow_terminals_to_typer() -> None:
    narrow = run_entry("kcmbundle.entry", "--help", columns="60")

    assert narrow.returncode == 0, narrow.stderr
    assert narrow.stderr == "True"
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 60


def test_entry_help_with_closed_stdout() -> None:
    probe = "import sys; sys.argv = ['kcmbundle', '--help']; from kcmbundle.entry import main; main()"
    completed = subprocess.run(["bash", "-c", '"$0" -c "$1" >&-', sys.executable, probe],
                               capture_output=True, text=True, timeout=60, check=False)

    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr


def test_schema_prints_shipped_schema() -> None:
    result = invoke("schema")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["title"] == "kcmbundle cluster config"
    assert result.stdout == schema_path().read_text()


def test_repository_schema_is_the_one_used() -> None:
    # The package reads the schema it ships; the repository's copy must be the same file.
    shipped = schema_path().read_bytes()
    assert shipped == (REPOSITORY / "schemas" / "kcmbundle.schema.json").read_bytes()


def test_init_ca_init_build_from_scratch(tmp_path: Path) -> None:
    result = invoke("init", "cluster.json", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "kcmbundle.schema.json").exists()
    assert json.loads((tmp_path / "cluster.json").read_text())["$schema"] == "./kcmbundle.schema.json"

    result = invoke("ca", "init", "pki", "--key-algorithm", "ecdsa-p256", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "pki" / "ca-key.pem").stat().st_mode) == 0o600

    result = invoke("validate", "cluster.json", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "valid" in result.stderr

    result = invoke("build", "cluster.json", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for line, name in zip(lines, ("k8s-master1", "k8s-master2", "k8s-master3")):
        digest, path, expiry = line.split("  ")
        assert len(digest) == 64
        assert path == f"out/kubernetes/{name}.tar.gz"
        assert expiry.startswith("notAfter=")
        assert (tmp_path / path).exists()


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "cluster.json").write_text("{}")
    result = invoke("init", str(tmp_path / "cluster.json"))
    assert result.exit_code == 4, result.output
    assert "already exists; pass --force" in result.stderr
    assert (tmp_path / "cluster.json").read_text() == "{}"


def test_build_single_master(config_path: Path, tmp_path: Path) -> None:
    result = invoke("build", str(config_path), "--out", str(tmp_path / "out"), "--master", "k8s-master2")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out" / "kubernetes").glob("*.tar.gz")) == ["k8s-master2.tar.gz"]


def test_build_unknown_master_is_usage_error(config_path: Path, tmp_path: Path) -> None:
    result = invoke("build", str(config_path), "--out", str(tmp_path / "out"), "--master", "k8s-master9")
    assert result.exit_code == 2, result.output
    assert "--master k8s-master9: master not found" in result.stderr
    assert "k8s-master1, k8s-master2, k8s-master3" in result.stderr
    assert not (tmp_path / "out").exists()


def test_exit_code_2_for_invalid_config(tmp_path: Path) -> None:
    document = starter_config(masters=[{"name": "k8s-master1", "ip": "10.0.0"}, {"name": "Bad_Name", "ip": "192.0.2.12"}])
    path = write_config(tmp_path, document)
    result = invoke("validate", str(path))

    assert result.exit_code == 2, result.output
    assert 'masters[0].ip: invalid IP address (got "10.0.0")' in result.stderr
    assert 'masters[1].name: invalid value (got "Bad_Name")' in result.stderr
    assert "Traceback" not in result.output


def test_exit_code_3_for_missing_ca(tmp_path: Path) -> None:
    path = write_config(tmp_path, with_ca=False)
    result = invoke("build", str(path), "--out", str(tmp_path / "out"))

    assert result.exit_code == 3, result.output
    assert "ca.cert: file not found" in result.stderr
    assert not (tmp_path / "out").exists()


def test_exit_code_4_for_existing_bundle(config_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert invoke("build", str(config_path), "--out", str(out)).exit_code == 0

    result = invoke("build", str(config_path), "--out", str(out))
    assert result.exit_code == 4, result.output
    assert "pass --force" in result.stderr

    assert invoke("build", str(config_path), "--out", str(out), "--force").exit_code == 0


def test_exit_code_1_for_internal_error(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args, **_kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("kcmbundle.validation.load_config", broken)
    result = invoke("validate", str(config_path))
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)


def test_missing_config_file_is_clear(tmp_path: Path) -> None:
    result = invoke("validate", str(tmp_path / "nope.json"))
    assert result.exit_code == 2, result.output
    assert "config file not found" in result.stderr
    assert "kcmbundle init" in result.stderr


def test_python_dash_m_runs_the_cli() -> None:
    completed = subprocess.run([sys.executable, "-m", "kcmbundle", "--version"],
                               capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == f"kcmbundle {__version__}\n"


def test_console_script_reports_errors_without_traceback(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "kcmbundle"
    if not script.exists():
        pytest.skip("kcmbundle is not installed as a console script in this environment")
    (tmp_path / "cluster.json").write_text('{"cluster": ')

    completed = subprocess.run([str(script), "validate", str(tmp_path / "cluster.json")],
                               capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 2
    assert "invalid JSON at line 1" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_shared_certificate_needs_every_master(tmp_path: Path) -> None:
    path = write_config(tmp_path, starter_config(certificate={"perMaster": False}))
    result = invoke("build", str(path), "--out", str(tmp_path / "out"), "--master", "k8s-master2")

    assert result.exit_code == 2, result.output
    assert "shares one certificate between all masters" in result.stderr
    assert not list((tmp_path / "out").rglob("*.tar.gz"))


def test_deeply_nested_json_is_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    path.write_text("[" * 100_000)
    result = invoke("validate", str(path))

    assert result.exit_code == 2, result.output
    assert "nested too deeply" in result.stderr


def test_ca_init_rejects_long_common_name(tmp_path: Path) -> None:
    result = invoke("ca", "init", str(tmp_path / "pki"), "--common-name", "c" * 65)

    assert result.exit_code == 2, result.output
    assert "X.509 allows at most 64" in result.stderr
    assert not (tmp_path / "pki").exists()
