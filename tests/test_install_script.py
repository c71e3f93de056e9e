"""install.sh run for real against a fake master under --root.

Each test builds a real bundle, unpacks it and runs its install.sh with
``--root`` pointing at a temporary folder that plays the master's file
system. Stand-ins for systemctl, journalctl, curl and ip from tests/stubs/
come first on PATH: they record every call in a log file and fail when an
environment variable requests it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import stat
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest

from kcmbundle.build import build
from kcmbundle.errors import ConfigError
from kcmbundle.pki import Seams

from support import DELETE, FIXED_NOW, FixtureKeys, extract, fixed_seams, require_tool, starter_config, write_config

STUBS = Path(__file__).parent / "stubs"
MASTER = "k8s-master1"
MASTER_IP = "192.0.2.11"
UNIT = "kube-controller-manager.service"
CA_KEY = "etc/kubernetes/cert/ca-key.pem"
HOST_BINARY = "opt/k8s/bin/kube-controller-manager"
BACKUPS = "var/lib/kcmbundle/backups"
LOG = "var/log/kcmbundle-install.log"


def later_seams() -> Seams:
    """Seams for a second build: a day later, other serials and other keys than ``fixed_seams``."""
    keys = FixtureKeys()
    for _ in range(3):
        keys("rsa-2048")  # skip the keys the first build used
    serials = itertools.count(0x2000)
    return Seams(clock=lambda: FIXED_NOW + timedelta(days=1), serial=lambda: next(serials), key_factory=keys)


def build_bundle(config_path: Path, destination: Path, seams: Seams, *, force: bool = False) -> Path:
    """Build the first master's tarball into ``destination``/out and return its unpacked folder."""
    results = build(config_path, destination / "out", masters=[MASTER], force=force, seams=seams)
    return extract(results[0].path, destination / "unpacked")


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "MANIFEST.json").read_text())


def tree(root: Path) -> dict[str, tuple]:
    """Return every entry under ``root`` with its type, mode, owner and content hash."""
    entries = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            detail = os.readlink(path)
        elif stat.S_ISREG(info.st_mode):
            detail = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            detail = ""
        entries[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode),
                                                info.st_uid, info.st_gid, detail)
    return entries


class FakeMaster:
    """A master's file system under a folder, and the stand-in commands' call log."""

    def __init__(self, folder: Path) -> None:
        self.root = folder / "root"
        self.calls = folder / "calls.log"
        self.root.mkdir(parents=True)
        ca_key = self.root / CA_KEY
        ca_key.parent.mkdir(parents=True)
        ca_key.write_text("stand-in CA key\n")
        ca_key.chmod(0o600)
        binary = self.root / HOST_BINARY
        binary.parent.mkdir(parents=True)
        binary.write_text("#!/bin/sh\necho 'Kubernetes v1.34.1'\n")
        binary.chmod(0o755)

    def run(self, bundle: Path, *args: str, root: bool = True, **stub_settings: str) -> subprocess.CompletedProcess:
        """Run ``bundle``/install.sh with --root and ``args``; ``stub_settings`` go to the environment."""
        env = {
            **os.environ,
            "PATH": f"{STUBS}:{os.environ['PATH']}",
            "STUB_LOG": str(self.calls),
            "STUB_IP_ADDRS": f"{MASTER_IP}/24",
            **stub_settings,
        }
        command = [str(bundle / "install.sh"), *(["--root", str(self.root)] if root else []), *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

    def recorded(self, tool: str) -> list[str]:
        """Return the recorded calls of ``tool``, arguments only, oldest first."""
        if not self.calls.exists():
            return []
        prefix = f"{tool} "
        return [line[len(prefix):] for line in self.calls.read_text().splitlines() if line.startswith(prefix)]

    def forget_calls(self) -> None:
        self.calls.unlink(missing_ok=True)

    def installed(self, install_path: str) -> Path:
        return self.root / install_path.lstrip("/")

    def backups(self) -> list[Path]:
        folder = self.root / BACKUPS
        return sorted(folder.iterdir()) if folder.exists() else []


@pytest.fixture
def master(tmp_path: Path) -> FakeMaster:
    return FakeMaster(tmp_path / "master")


@pytest.fixture
def first(config_path: Path, tmp_path: Path, seams: Seams) -> Path:
    """The unpacked bundle of k8s-master1 from the starter config."""
    return build_bundle(config_path, tmp_path / "first", seams)


@pytest.fixture
def second(first: Path, config_path: Path, tmp_path: Path) -> Path:
    """A newer bundle for the same master: new certificate, key and kubeconfig."""
    return build_bundle(config_path, tmp_path / "second", later_seams(), force=True)


def assert_matches_bundle(master: FakeMaster, bundle: Path) -> None:
    for entry in manifest_of(bundle)["files"]:
        target = master.installed(entry["installPath"])
        assert target.read_bytes() == (bundle / entry["path"]).read_bytes(), entry["installPath"]
        assert stat.S_IMODE(target.stat().st_mode) == int(entry["mode"], 8), entry["installPath"]


def assert_no_key_material(*texts: str) -> None:
    for text in texts:
        assert "PRIVATE KEY" not in text
        assert "client-key-data" not in text


def test_fresh_install_places_files(master: FakeMaster, first: Path) -> None:
    result = master.run(first, "--timeout", "5")

    assert result.returncode == 0, result.stderr
    manifest = manifest_of(first)
    assert_matches_bundle(master, first)
    for entry in manifest["files"]:
        target = master.installed(entry["installPath"]).stat()
        expected_owner = (0, 0) if os.geteuid() == 0 else (os.getuid(), os.getgid())
        assert (target.st_uid, target.st_gid) == expected_owner, entry["installPath"]
    assert master.installed(manifest["service"]["workingDir"]).is_dir()
    assert master.recorded("systemctl") == [
        f"is-enabled {UNIT}", "daemon-reload", f"enable {UNIT}", f"restart {UNIT}", f"is-active {UNIT}",
    ]
    ca_file = master.installed(manifest["service"]["caFile"])
    assert master.recorded("curl") == [
        f"--cacert {ca_file} --silent --show-error --noproxy * --max-time 5 https://127.0.0.1:10257/healthz"
    ]
    assert "[install] done" in result.stdout
    log = (master.root / LOG).read_text()
    assert "[preflight] bundle files match SHA256SUMS" in log
    assert "[probe] kube-controller-manager.service is active" in log
    assert_no_key_material(result.stdout, result.stderr, log)


def test_fresh_install_backup_lists_absent_files(master: FakeMaster, first: Path) -> None:
    result = master.run(first)

    assert result.returncode == 0, result.stderr
    [backup] = master.backups()
    lines = (backup / "manifest").read_text().splitlines()
    assert f"bundle kubernetes-{MASTER}" in lines
    for entry in manifest_of(first)["files"]:
        assert f"absent {entry['installPath']}" in lines
    assert not (backup / "files").exists()
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700


def test_second_run_changes_nothing(master: FakeMaster, first: Path) -> None:
    assert master.run(first).returncode == 0
    before = tree(master.root)
    master.forget_calls()

    result = master.run(first)

    assert result.returncode == 0, result.stderr
    assert "nothing to change" in result.stdout
    assert tree(master.root) == before
    assert master.recorded("systemctl") == []
    assert len(master.backups()) == 1


def test_restart_option_restarts_unchanged(master: FakeMaster, first: Path) -> None:
    assert master.run(first).returncode == 0
    master.forget_calls()

    result = master.run(first, "--restart")

    assert result.returncode == 0, result.stderr
    assert master.recorded("systemctl") == [f"restart {UNIT}", f"is-active {UNIT}"]
    assert len(master.backups()) == 1


def test_changed_mode_is_reinstalled(master: FakeMaster, first: Path) -> None:
    assert master.run(first).returncode == 0
    key = master.installed("/etc/kubernetes/cert/kube-controller-manager-key.pem")
    key.chmod(0o644)

    result = master.run(first)

    assert result.returncode == 0, result.stderr
    assert "mode 644 differs from 0600" in result.stdout
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(master.backups()) == 2


def test_upgrade_backs_up_previous_files(master: FakeMaster, first: Path, second: Path) -> None:
    assert master.run(first).returncode == 0

    result = master.run(second)

    assert result.returncode == 0, result.stderr
    assert_matches_bundle(master, second)
    backup = master.backups()[-1]
    lines = (backup / "manifest").read_text().splitlines()
    changed = [entry for entry in manifest_of(first)["files"]
               if (first / entry["path"]).read_bytes() != (second / entry["path"]).read_bytes()]
    assert {entry["installPath"] for entry in changed} >= {
        "/etc/kubernetes/cert/kube-controller-manager.pem",
        "/etc/kubernetes/cert/kube-controller-manager-key.pem",
        "/etc/kubernetes/kube-controller-manager.kubeconfig",
    }
    for entry in changed:
        saved = backup / "files" / entry["installPath"].lstrip("/")
        assert saved.read_bytes() == (first / entry["path"]).read_bytes(), entry["installPath"]
        assert stat.S_IMODE(saved.stat().st_mode) == int(entry["mode"], 8), entry["installPath"]
        assert f"existed {entry['installPath']}" in lines
    assert not (backup / "files/etc/systemd/system" / UNIT).exists(), "the unchanged unit needs no backup"


def test_failed_health_check_restores_previous(master: FakeMaster, first: Path, second: Path) -> None:
    assert master.run(first).returncode == 0
    master.forget_calls()

    result = master.run(second, "--timeout", "1", STUB_CURL_FAIL="1")

    assert result.returncode == 3, result.stderr
    assert_matches_bundle(master, first)
    assert "stub journal line 3" in result.stdout
    assert master.recorded("journalctl") == [f"-u {UNIT} -n 50 --no-pager"]
    calls = master.calls.read_text().splitlines()
    after_journal = calls[calls.index(f"journalctl -u {UNIT} -n 50 --no-pager") + 1:]
    assert after_journal[:2] == ["systemctl daemon-reload", f"systemctl restart {UNIT}"]
    assert "the previous files are back in place" in result.stderr

    # The rejected files are kept beside the backup, not deleted.
    backup = master.backups()[-1]
    [aside] = backup.glob("rolled-back-*")
    key = "etc/kubernetes/cert/kube-controller-manager-key.pem"
    assert (aside / key).read_bytes() == (second / "rootfs" / key).read_bytes()


def test_failed_start_restores_previous(master: FakeMaster, first: Path, second: Path) -> None:
    assert master.run(first).returncode == 0

    result = master.run(second, "--timeout", "1", STUB_SYSTEMCTL_FAIL="enable")

    assert result.returncode == 3, result.stderr
    assert f"starting {UNIT} failed" in result.stderr
    assert_matches_bundle(master, first)


def test_failed_rename_restores_previous(master: FakeMaster, first: Path, second: Path, tmp_path: Path) -> None:
    # The real mv, except that its first rename of the kubeconfig fails, after
    # the files sorted before it are already swapped: the install stops half way.
    wrappers = tmp_path / "wrappers"
    wrappers.mkdir()
    marker = tmp_path / "mv-failed-once"
    mv = wrappers / "mv"
    mv.write_text(f'#!/bin/sh\ncase "$*" in *kubeconfig.kcmbundle*) if [ ! -e {marker} ]; then\n'
                  f'  touch {marker}; echo "mv: No space left on device" >&2; exit 1\nfi;; esac\n'
                  f'exec {shutil.which("mv")} "$@"\n')
    mv.chmod(0o755)
    assert master.run(first).returncode == 0

    result = master.run(second, PATH=f"{wrappers}:{STUBS}:{os.environ['PATH']}")

    assert result.returncode == 3, result.stderr
    assert "stopped with status 1 while installing" in result.stderr
    assert_matches_bundle(master, first)
    leftovers = list(master.root.rglob("*.kcmbundle.*"))
    assert leftovers == []


def test_first_install_failure_stops_unit(master: FakeMaster, first: Path) -> None:
    result = master.run(first, "--timeout", "1", STUB_SYSTEMCTL_IS_ACTIVE="failed")

    assert result.returncode == 3, result.stderr
    assert f"{UNIT} is failed" in result.stderr
    calls = master.recorded("systemctl")
    after_restart = calls[calls.index(f"restart {UNIT}") + 1:]
    assert f"stop {UNIT}" in after_restart
    assert f"disable {UNIT}" in after_restart
    assert f"restart {UNIT}" not in after_restart
    assert after_restart[-1] == "daemon-reload"

    [backup] = master.backups()
    [aside] = backup.glob("rolled-back-*")
    for entry in manifest_of(first)["files"]:
        assert not master.installed(entry["installPath"]).exists(), entry["installPath"]
        moved = aside / entry["installPath"].lstrip("/")
        assert moved.read_bytes() == (first / entry["path"]).read_bytes(), entry["installPath"]


def test_tampered_bundle_rejected(master: FakeMaster, first: Path) -> None:
    unit = first / "rootfs/etc/systemd/system" / UNIT
    unit.write_text(unit.read_text().replace("--v=2", "--v=9"))
    before = tree(master.root)

    result = master.run(first)

    assert result.returncode == 1
    assert "do not match" in result.stderr
    assert "SHA256SUMS" in result.stderr
    assert f"rootfs/etc/systemd/system/{UNIT}: FAILED" in result.stdout + result.stderr
    assert tree(master.root) == before
    assert master.recorded("systemctl") == []


def test_missing_ca_key_rejected(master: FakeMaster, first: Path) -> None:
    (master.root / CA_KEY).unlink()
    before = tree(master.root)

    result = master.run(first)

    assert result.returncode == 1
    assert f"{master.root}/{CA_KEY} not found" in result.stderr
    assert "cluster signing CA key" in result.stderr
    assert tree(master.root) == before
    assert master.recorded("systemctl") == []


def test_root_link_leading_outside_rejected(master: FakeMaster, first: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (master.root / "etc" / "systemd").symlink_to(outside)
    before = tree(master.root)

    result = master.run(first)

    assert result.returncode == 1, result.stderr
    assert f"leads to {outside}/system/kube-controller-manager.service, outside {master.root}" in result.stderr
    assert list(outside.iterdir()) == []
    assert tree(master.root) == before
    assert master.recorded("systemctl") == []


@pytest.mark.parametrize("link", ["var/lib/kcmbundle/backups", "var/lib/kcmbundle/install.lock"])
def test_root_state_link_leading_outside_rejected(master: FakeMaster, first: Path, tmp_path: Path,
                                                   link: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (master.root / link).parent.mkdir(parents=True)
    (master.root / link).symlink_to(outside / "target")
    before = tree(master.root)

    result = master.run(first)

    assert result.returncode == 1, result.stderr
    assert f"{master.root}/{link} leads to {outside}/target, outside" in result.stderr
    assert list(outside.iterdir()) == []
    assert tree(master.root) == before


def test_root_link_inside_root_followed(master: FakeMaster, first: Path) -> None:
    (master.root / "lib" / "systemd-etc").mkdir(parents=True)
    (master.root / "etc" / "systemd").symlink_to("../lib/systemd-etc")

    result = master.run(first)

    assert result.returncode == 0, result.stderr
    assert (master.root / "lib" / "systemd-etc" / "system" / "kube-controller-manager.service").is_file()


def test_non_executable_binary_rejected(master: FakeMaster, first: Path) -> None:
    (master.root / HOST_BINARY).chmod(0o644)
    before = tree(master.root)

    result = master.run(first)

    assert result.returncode == 1
    assert f"{master.root}/{HOST_BINARY} is not executable" in result.stderr
    assert tree(master.root) == before


def test_wrong_host_rejected_unless_force(master: FakeMaster, first: Path) -> None:
    before = tree(master.root)

    refused = master.run(first, STUB_IP_ADDRS="192.0.2.99/24")

    assert refused.returncode == 1
    assert f"does not hold {MASTER_IP}" in refused.stderr
    assert "192.0.2.99" in refused.stderr
    assert "--force" in refused.stderr
    assert tree(master.root) == before

    master.forget_calls()
    forced = master.run(first, "--force", STUB_IP_ADDRS="192.0.2.99/24")

    assert forced.returncode == 0, forced.stderr
    assert master.recorded("ip") == []
    assert_matches_bundle(master, first)


def test_dry_run_changes_nothing(master: FakeMaster, first: Path, second: Path) -> None:
    before = tree(master.root)

    fresh = master.run(first, "--dry-run")

    assert fresh.returncode == 0, fresh.stderr
    assert "would install rootfs/etc/kubernetes/cert/ca.pem" in fresh.stdout
    assert f"would run: systemctl restart {UNIT}" in fresh.stdout
    assert tree(master.root) == before
    assert master.recorded("systemctl") == []

    assert master.run(first).returncode == 0
    before = tree(master.root)
    master.forget_calls()

    upgrade = master.run(second, "--dry-run")

    assert upgrade.returncode == 0, upgrade.stderr
    assert "would copy /etc/kubernetes/kube-controller-manager.kubeconfig" in upgrade.stdout
    assert tree(master.root) == before
    assert master.recorded("systemctl") == []


def test_no_restart_calls_no_systemctl(master: FakeMaster, first: Path) -> None:
    result = master.run(first, "--no-restart", "--force")

    assert result.returncode == 0, result.stderr
    assert_matches_bundle(master, first)
    assert not master.calls.exists(), master.calls.read_text()


def test_rollback_restores_last_backup(master: FakeMaster, first: Path, second: Path) -> None:
    assert master.run(first).returncode == 0
    assert master.run(second).returncode == 0
    master.forget_calls()

    result = master.run(second, "--rollback")

    assert result.returncode == 0, result.stderr
    assert_matches_bundle(master, first)
    assert master.recorded("systemctl")[:2] == ["daemon-reload", f"restart {UNIT}"]
    backup = master.backups()[-1]
    [aside] = backup.glob("rolled-back-*")
    kubeconfig = "etc/kubernetes/kube-controller-manager.kubeconfig"
    assert (aside / kubeconfig).read_bytes() == (second / "rootfs" / kubeconfig).read_bytes()


def test_rollback_without_backup_rejected(master: FakeMaster, first: Path) -> None:
    result = master.run(first, "--rollback")

    assert result.returncode == 1
    assert "no backup found" in result.stderr


def test_help_and_usage_errors(master: FakeMaster, first: Path) -> None:
    help_result = master.run(first, "--help", root=False)

    assert help_result.returncode == 0
    for option in ("--dry-run", "--root DIR", "--no-restart", "--restart", "--force", "--rollback",
                   "--timeout SECONDS"):
        assert option in help_result.stdout

    unknown = master.run(first, "--frobnicate")
    assert unknown.returncode == 2
    assert "unknown option: --frobnicate" in unknown.stderr

    bad_timeout = master.run(first, "--timeout", "soon")
    assert bad_timeout.returncode == 2
    assert "--timeout soon is invalid" in bad_timeout.stderr


def test_non_root_user_rejected(first: Path, tmp_path: Path) -> None:
    # The unprivileged user must be able to read the script, so the bundle
    # goes to a world-readable folder outside pytest's private tmp_path.
    shared = Path(tempfile.mkdtemp(prefix="kcmbundle-install-"))
    try:
        shared.chmod(0o755)
        bundle = shared / "bundle"
        shutil.copytree(first, bundle)
        command = [str(bundle / "install.sh"), "--dry-run"]
        if os.geteuid() == 0:
            setpriv = require_tool("setpriv")
            command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    finally:
        shutil.rmtree(shared)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "must run as root" in result.stderr
    assert "sudo ./install.sh" in result.stderr


def write_binary(folder: Path, version_line: str) -> tuple[Path, str]:
    """Write a stand-in kube-controller-manager that prints ``version_line``; return it and its SHA-256."""
    folder.mkdir(parents=True, exist_ok=True)
    binary = folder / "kube-controller-manager"
    binary.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    binary.chmod(0o755)
    return binary, hashlib.sha256(binary.read_bytes()).hexdigest()


def binary_config(folder: Path, version_line: str, *, sha256: str | None = None) -> Path:
    binary, digest = write_binary(folder / "bin", version_line)
    document = starter_config(binary={"path": "bin/kube-controller-manager", "sha256": sha256 or digest,
                                      "version": "v1.34.1"})
    return write_config(folder, document)


def test_binary_checksum_mismatch_is_config_error(tmp_path: Path, seams: Seams) -> None:
    config_path = binary_config(tmp_path / "cluster", "Kubernetes v1.34.1", sha256="0" * 64)

    with pytest.raises(ConfigError) as raised:
        build(config_path, tmp_path / "out", seams=seams)

    assert "binary.sha256" in str(raised.value)
    assert not (tmp_path / "out").exists()


def test_binary_version_mismatch_is_config_error(tmp_path: Path, seams: Seams) -> None:
    binary, digest = write_binary(tmp_path / "cluster/bin", "Kubernetes v1.33.2")
    document = starter_config(binary={"path": "bin/kube-controller-manager", "sha256": digest, "version": "v1.33.2"})
    config_path = write_config(tmp_path / "cluster", document)

    with pytest.raises(ConfigError) as raised:
        build(config_path, tmp_path / "out", seams=seams)

    assert "binary.version" in str(raised.value)
    assert "cluster.kubernetesVersion 1.34.1" in str(raised.value)


def test_bundled_binary_installed(master: FakeMaster, tmp_path: Path, seams: Seams) -> None:
    bundle = build_bundle(binary_config(tmp_path / "cluster", "Kubernetes v1.34.1"), tmp_path / "build", seams)
    (master.root / HOST_BINARY).unlink()

    result = master.run(bundle)

    assert result.returncode == 0, result.stderr
    assert "bundled binary reports Kubernetes v1.34.1" in result.stdout
    installed = master.root / HOST_BINARY
    assert installed.read_bytes() == (bundle / "rootfs" / HOST_BINARY).read_bytes()
    assert stat.S_IMODE(installed.stat().st_mode) == 0o755
    manifest = manifest_of(bundle)
    assert manifest["binary"]["version"] == "v1.34.1"
    assert f"/{HOST_BINARY}" not in [host_file["path"] for host_file in manifest["hostFiles"]]
    shellcheck = subprocess.run([require_tool("shellcheck"), "--severity=style", str(bundle / "install.sh")],
                                capture_output=True, text=True, timeout=60, check=False)
    assert shellcheck.returncode == 0, shellcheck.stdout


def test_bundled_binary_wrong_version_rejected(master: FakeMaster, tmp_path: Path, seams: Seams) -> None:
    # The checksum matches, but the binary is another release than the config states.
    bundle = build_bundle(binary_config(tmp_path / "cluster", "Kubernetes v1.33.2"), tmp_path / "build", seams)
    before = tree(master.root)

    result = master.run(bundle)

    assert result.returncode == 1
    assert "printed 'Kubernetes v1.33.2', expected 'Kubernetes v1.34.1'" in result.stderr
    assert tree(master.root) == before
    assert master.recorded("systemctl") == []


SHELLCHECK_CASES = {
    "default": {},
    "ipv6-master": {
        "cluster": {"serviceCIDR": "fd00:10:96::/112", "clusterCIDR": "fd00:10:244::/56"},
        "masters": [{"name": MASTER, "ip": "2001:db8::11"}],
        "controllerManager": {"extraArgs": {"bind-address": "2001:db8::11"}},
    },
    "url-mode": {"cluster": {"apiServer": {"mode": "url", "url": "https://192.0.2.100:8443", "port": DELETE}}},
    "custom-paths": {
        "paths": {"binary": "/usr/local/bin/kcm", "certDir": "/srv/pki/kcm", "kubeconfig": "/srv/kcm/kubeconfig",
                  "unit": "/usr/lib/systemd/system/kcm@prod.service", "workingDir": "/var/lib/kcm",
                  "clusterSigningKey": "/srv/pki/ca-key.pem", "serviceAccountKey": "/srv/pki/sa.key"},
        "controllerManager": {"extraArgs": {"secure-port": "10357", "bind-address": "192.0.2.11"}},
    },
}


@pytest.mark.parametrize("case", sorted(SHELLCHECK_CASES))
def test_rendered_script_passes_shellcheck(case: str, tmp_path: Path, seams: Seams) -> None:
    shellcheck = require_tool("shellcheck")
    document = starter_config(**SHELLCHECK_CASES[case])
    bundle = build_bundle(write_config(tmp_path / "cluster", document), tmp_path / "build", seams)

    result = subprocess.run([shellcheck, "--severity=style", str(bundle / "install.sh")],
                            capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stdout
    assert subprocess.run(["bash", "-n", str(bundle / "install.sh")], check=False).returncode == 0


def test_probe_url_follows_bind_address(tmp_path: Path, seams: Seams) -> None:
    document = starter_config(**SHELLCHECK_CASES["ipv6-master"])
    bundle = build_bundle(write_config(tmp_path / "cluster", document), tmp_path / "build", seams)

    script = (bundle / "install.sh").read_text()

    assert "readonly HEALTHZ_URL='https://[2001:db8::11]:10257/healthz'" in script
    assert "readonly MASTER_IP=2001:db8::11" in script


def test_ipv6_master_installs(master: FakeMaster, tmp_path: Path, seams: Seams) -> None:
    document = starter_config(**SHELLCHECK_CASES["ipv6-master"])
    bundle = build_bundle(write_config(tmp_path / "cluster", document), tmp_path / "build", seams)

    refused = master.run(bundle)
    result = master.run(bundle, STUB_IP_ADDRS="192.0.2.11/24 2001:db8::11/64")

    assert refused.returncode == 1
    assert "does not hold 2001:db8::11" in refused.stderr
    assert result.returncode == 0, result.stderr
    assert master.recorded("curl")[-1].endswith(" https://[2001:db8::11]:10257/healthz")


def test_probe_uses_custom_port_and_address(master: FakeMaster, tmp_path: Path, seams: Seams) -> None:
    document = starter_config(controllerManager={"extraArgs": {"secure-port": "10357", "bind-address": MASTER_IP}})
    bundle = build_bundle(write_config(tmp_path / "cluster", document), tmp_path / "build", seams)

    result = master.run(bundle)

    assert result.returncode == 0, result.stderr
    assert master.recorded("curl")[0].endswith(f" https://{MASTER_IP}:10357/healthz")


@pytest.mark.parametrize("tamper", [False, True])
def test_verify_key_checks_signature_first(master: FakeMaster, config_path: Path, tmp_path: Path,
                                           seams: Seams, tamper: bool) -> None:
    require_tool("openssl")
    from kcmbundle.signing import generate_key_pair

    private, public = generate_key_pair(tmp_path / "signing")
    results = build(config_path, tmp_path / "signed", seams=seams, sign_key=private)
    bundle = extract(results[0].path, tmp_path / "signed-unpacked")
    if tamper:
        sums = bundle / "SHA256SUMS"
        sums.write_text(sums.read_text().replace("install.sh", "install.sh ", 1))
    before = tree(master.root)

    result = master.run(bundle, "--verify-key", str(public), "--no-restart", "--force")

    if tamper:
        assert result.returncode == 1, result.stdout + result.stderr
        assert "signature" in (result.stdout + result.stderr).lower()
        assert tree(master.root) == before
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert_matches_bundle(master, bundle)
