"""Faults while writing: unwritable or full output folders, interrupted and concurrent builds.

Every fault must end in a clear error (exit 4, or 130/143 for signals), leave
no partial tarball and no temporary file, and keep the bundles that were
already there. The tests run as root in CI, where file modes do not stop
writes. So a read-only folder and a full disk are real mounts, made in a
private mount namespace (``unshare -m``) that vanishes with the test's
process. Those tests are skipped where namespaces are not allowed, and
patched variants of the same faults always run.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kcmbundle import build as build_module
from kcmbundle import interrupts
from kcmbundle.build import build
from kcmbundle.cli import app
from kcmbundle.lock import LOCK_FILE_NAME
from kcmbundle.pki import Seams

from support import fixed_seams, starter_config, write_config

REPOSITORY = Path(__file__).parent.parent
MASTERS = ("k8s-master1", "k8s-master2", "k8s-master3")


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Return each file under ``folder`` (hidden ones too) with its sha256 and mtime in ns."""
    return {
        str(path.relative_to(folder)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


def tarballs(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.tar.gz"))


def temporaries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob("*.tmp"))


def assert_complete_tarball(path: Path) -> None:
    with tarfile.open(path) as archive:
        names = archive.getnames()
        for member in archive.getmembers():
            if member.isfile():
                archive.extractfile(member).read()
    assert any(name.endswith("/MANIFEST.json") for name in names)


def fast_config(folder: Path) -> Path:
    """The starter config with ECDSA keys, which a build without fixed keys generates quickly."""
    return write_config(folder, starter_config(certificate={"keyAlgorithm": "ecdsa-p256"}))


def run_kcmbundle(*arguments: str, **options) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    return subprocess.run([sys.executable, "-m", "kcmbundle", *arguments], capture_output=True, text=True,
                          env=env, timeout=120, **options)


def namespace_shell(script: str, *arguments: str) -> subprocess.CompletedProcess:
    """Run ``script`` with ``sh`` in a private mount namespace, so mounts vanish when it exits."""
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "PYTHON": sys.executable}
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *arguments],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def mount_namespaces() -> None:
    """Skip unless this process may create mount namespaces and mount tmpfs in them."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = namespace_shell('mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt')
    if probe.returncode != 0:
        pytest.skip(f"mount namespaces are not available here: {probe.stderr.strip()}")


# --- Output folder not writable, or a file in its place ----------------------------------------


def test_read_only_output_keeps_old_bundles(tmp_path: Path, mount_namespaces: None) -> None:
    config = fast_config(tmp_path / "cluster")
    out = tmp_path / "out"
    assert run_kcmbundle("build", str(config), "--out", str(out)).returncode == 0
    before = snapshot(out)

    # Bind-mount the output folder onto itself read-only, then rebuild over it.
    result = namespace_shell(
        'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && '
        '"$PYTHON" -m kcmbundle build "$2" --out "$1" --force', str(out), str(config))

    assert result.returncode == 4, result.stderr
    assert "Read-only file system" in result.stderr
    assert "choose another folder with --out" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(out) == before


def test_read_only_output_first_build(tmp_path: Path, mount_namespaces: None) -> None:
    config = fast_config(tmp_path / "cluster")
    out = tmp_path / "out"
    out.mkdir()

    result = namespace_shell('mount -t tmpfs -o ro,size=64k tmpfs "$1" && '
                             '"$PYTHON" -m kcmbundle build "$2" --out "$1"; echo "exit=$?"; ls -A "$1"',
                             str(out), str(config))

    assert "exit=4" in result.stdout, result.stderr
    assert "could not create the output folder: Read-only file system" in result.stderr
    assert result.stdout.strip().endswith("exit=4")  # and ls printed nothing


def test_unwritable_output_patched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tempfile.mkstemp raising EACCES simulates a folder that the user may not write."""
    config = fast_config(tmp_path / "cluster")
    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["build", str(config), "--out", str(out)]).exit_code == 0
    before = snapshot(out)

    def mkstemp(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", mkstemp)
    result = CliRunner().invoke(app, ["build", str(config), "--out", str(out), "--force"])

    assert result.exit_code == 4, result.stderr
    assert isinstance(result.exception, SystemExit)
    assert "could not create a file: Permission denied" in result.stderr
    assert snapshot(out) == before


def test_out_is_a_file(tmp_path: Path) -> None:
    config = fast_config(tmp_path / "cluster")
    out = tmp_path / "out"
    out.write_text("not a folder\n")

    result = CliRunner().invoke(app, ["build", str(config), "--out", str(out)])

    assert result.exit_code == 4, result.stderr
    assert f"error: {out}: is a file, not a folder" in result.stderr
    assert "choose another folder with --out" in result.stderr
    assert out.read_text() == "not a folder\n"


def test_cluster_folder_is_a_file(tmp_path: Path) -> None:
    config = fast_config(tmp_path / "cluster")
    blocker = tmp_path / "out" / "kubernetes"
    blocker.parent.mkdir()
    blocker.write_text("in the way\n")

    result = CliRunner().invoke(app, ["build", str(config), "--out", str(tmp_path / "out")])

    assert result.exit_code == 4, result.stderr
    assert f"error: {blocker}: is a file, not a folder" in result.stderr
    assert blocker.read_text() == "in the way\n"
    assert sorted(path.name for path in blocker.parent.iterdir()) == ["kubernetes"]


# --- Disk full -----------------------------------------------------------------------------------


def test_disk_full_tmpfs_keeps_old_bundles(tmp_path: Path, mount_namespaces: None) -> None:
    config = fast_config(tmp_path / "cluster")
    old = tmp_path / "old"
    assert run_kcmbundle("build", str(config), "--out", str(old)).returncode == 0
    old_files = sorted((old / "kubernetes").glob("*.tar.gz"))
    pages = sum(-(-path.stat().st_size // 4096) for path in old_files)
    # Room for the old bundles and half of one more: staging the first new tarball fills the disk.
    size_kib = (pages + 1) * 4 + (old_files[0].stat().st_size // 2048)
    out = tmp_path / "out"
    out.mkdir()

    result = namespace_shell(
        'mount -t tmpfs -o size="$3"k tmpfs "$1" && cp -a "$4" "$1/kubernetes" && '
        '"$PYTHON" -m kcmbundle build "$2" --out "$1" --force; echo "exit=$?"; '
        'cd "$1/kubernetes" && ls -A && sha256sum *.tar.gz',
        str(out), str(config), str(size_kib), str(old / "kubernetes"))

    assert "exit=4" in result.stdout, result.stdout + result.stderr
    assert "No space left on device" in result.stderr
    assert "check free space" in result.stderr
    assert "Traceback" not in result.stderr
    listed = result.stdout.split("exit=4", 1)[1]
    assert ".tmp" not in listed
    for path in old_files:
        assert f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}" in listed


def test_disk_full_patched_keeps_old_bundles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.fsync failing with ENOSPC on the second tarball simulates a full disk."""
    config = fast_config(tmp_path / "cluster")
    out = tmp_path / "out"
    build(config, out, seams=fixed_seams())
    before = snapshot(out)
    real_fsync = os.fsync
    calls = []

    def fsync(descriptor: int) -> None:
        calls.append(descriptor)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    result = CliRunner().invoke(app, ["build", str(config), "--out", str(out), "--force"])

    assert result.exit_code == 4, result.stderr
    assert isinstance(result.exception, SystemExit)
    assert "could not write: No space left on device" in result.stderr
    assert snapshot(out) == before
    assert temporaries(out) == []


def test_failed_rename_removes_temporaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = fast_config(tmp_path / "cluster")
    out = tmp_path / "out"

    def link(source, target):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "link", link)
    result = CliRunner().invoke(app, ["build", str(config), "--out", str(out)])

    assert result.exit_code == 4, result.stderr
    assert "could not write: Input/output error" in result.stderr
    assert tarballs(out / "kubernetes") == []
    assert temporaries(out) == []


# --- Interrupted builds ----------------------------------------------------------------------------


def slow_config(folder: Path) -> Path:
    """A config whose build takes seconds for real: six masters with RSA-4096 keys."""
    masters = [{"name": f"k8s-master{index}", "ip": f"192.0.2.{10 + index}"} for index in range(1, 7)]
    return write_config(folder, starter_config(certificate={"keyAlgorithm": "rsa-4096"}, masters=masters))


def start_build(config: Path, out: Path) -> tuple[subprocess.Popen, threading.Thread, list[str]]:
    """Start a build and return it while it makes keys.

    That is once it has started key worker processes, or one second after
    start where it makes keys in-process; either way the signal must leave
    the same state, since the handlers cover every phase.
    """
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    process = subprocess.Popen([sys.executable, "-m", "kcmbundle", "--verbose", "build", str(config), "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()

    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        if children.exists() and children.read_text().strip():
            break
        time.sleep(0.01)
    assert process.poll() is None, "the build finished before it could be interrupted:\n" + "".join(lines)
    return process, reader, lines


def assert_no_process_mentions(text: str, timeout: float = 10.0) -> None:
    """Wait until no process has ``text`` in its command line, such as a build's key workers."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if text in cmdline.read_bytes().decode(errors="replace"):
                    left.append(cmdline.parent.name)
            except OSError:
                continue  # the process ended meanwhile
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == [], f"processes still running: {left}"


@pytest.mark.parametrize(("signal_number", "exit_code", "name"), [
    (signal.SIGINT, 130, "SIGINT"),
    (signal.SIGTERM, 143, "SIGTERM"),
    (signal.SIGHUP, 129, "SIGHUP"),
    (signal.SIGKILL, -signal.SIGKILL, None),
])
def test_interrupted_build(tmp_path: Path, signal_number: int, exit_code: int, name: str | None) -> None:
    config = slow_config(tmp_path / "cluster")
    out = tmp_path / "out"

    process, reader, lines = start_build(config, out)
    process.send_signal(signal_number)
    assert process.wait(timeout=60) == exit_code
    reader.join(timeout=10)
    process.stdout.close()

    assert_no_process_mentions(str(config))
    errors = [line for line in lines if line.startswith("error:")]
    if name is not None:
        assert errors == [f"error: interrupted by {name}; temporary files were removed, and "
                          "the bundles of each cluster were either all written or all left as they were\n"]
    assert not any("Traceback" in line for line in lines)
    assert tarballs(out / "kubernetes") == []
    assert temporaries(out) == []

    # The next build into the same folder succeeds; cheap keys keep it fast.
    config.write_text(json.dumps(starter_config()))
    results = build(config, out, seams=fixed_seams())
    assert tarballs(out / "kubernetes") == [f"{master}.tar.gz" for master in MASTERS]
    assert temporaries(out) == []
    for result in results:
        assert_complete_tarball(result.path)


def test_interrupt_while_publishing_waits_for_every_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path / "cluster")
    published = []

    def publish_then_interrupt(item, *, force: bool) -> None:
        real_publish(item, force=force)
        published.append(item.target.name)
        if len(published) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    real_publish = build_module.publish
    monkeypatch.setattr(build_module, "publish", publish_then_interrupt)
    # Another thread that accepts SIGINT, as a progress bar's would: the
    # kernel delivers the signal there while the main thread blocks it.
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
    previous = {number: signal.getsignal(number) for number in interrupts.SIGNALS}
    interrupts.install_handlers()
    try:
        with pytest.raises(interrupts.Interrupted):
            build(config, tmp_path / "out", seams=fixed_seams())
    finally:
        stop.set()
        for number, handler in previous.items():
            signal.signal(number, handler)

    assert published == [f"{master}.tar.gz" for master in MASTERS]
    assert tarballs(tmp_path / "out" / "kubernetes") == [f"{master}.tar.gz" for master in MASTERS]
    assert temporaries(tmp_path / "out") == []


def test_stale_temporary_removed(tmp_path: Path, seams: Seams) -> None:
    """A build killed between staging and renaming leaves a .tmp file; the next build removes it."""
    config = write_config(tmp_path / "cluster")
    folder = tmp_path / "out" / "kubernetes"
    folder.mkdir(parents=True)
    stale = folder / ".k8s-master1.tar.gz.x1y2z3w4.tmp"
    stale.write_bytes(b"\x1f\x8b partial")
    unrelated = folder / "notes.txt"
    unrelated.write_text("kept\n")

    build(config, tmp_path / "out", seams=seams)

    assert not stale.exists()
    assert unrelated.read_text() == "kept\n"
    assert tarballs(folder) == [f"{master}.tar.gz" for master in MASTERS]


def test_interrupt_while_staging_removes_temporaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     seams: Seams) -> None:
    """Ctrl-C after two tarballs are staged: the CLI exits 130 and the staged files are gone."""
    import kcmbundle.build

    config = write_config(tmp_path / "cluster")
    out = tmp_path / "out"
    real_stage = kcmbundle.build.stage_file
    staged = []

    def stage_then_interrupt(path, data, **options):
        if len(staged) == 2:
            assert len(temporaries(out)) == 2
            raise KeyboardInterrupt
        staged.append(path)
        return real_stage(path, data, **options)

    monkeypatch.setattr(kcmbundle.build, "stage_file", stage_then_interrupt)
    result = CliRunner().invoke(app, ["build", str(config), "--out", str(out)])

    assert result.exit_code == 130, result.stderr
    assert "error: interrupted by SIGINT" in result.stderr
    assert temporaries(out) == []
    assert tarballs(out / "kubernetes") == []


# --- Concurrent builds -------------------------------------------------------------------------------


def test_locked_folder_fails_fast(tmp_path: Path) -> None:
    config = fast_config(tmp_path / "cluster")
    folder = tmp_path / "out" / "kubernetes"
    folder.mkdir(parents=True)
    lock = folder / LOCK_FILE_NAME

    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        started = time.monotonic()
        result = CliRunner().invoke(app, ["build", str(config), "--out", str(tmp_path / "out")])
        elapsed = time.monotonic() - started

    assert result.exit_code == 4, result.stderr
    assert f"error: {folder}: another kcmbundle build is writing to this folder" in result.stderr
    assert "kcmbundle does not wait, so run the build again" in result.stderr
    assert elapsed < 10
    assert tarballs(folder) == []


def test_lock_file_mode_with_umask_000(tmp_path: Path, seams: Seams) -> None:
    config = write_config(tmp_path / "cluster")
    previous = os.umask(0)
    try:
        build(config, tmp_path / "out", seams=seams)
    finally:
        os.umask(previous)

    lock = tmp_path / "out" / "kubernetes" / LOCK_FILE_NAME
    assert lock.stat().st_mode & 0o777 == 0o600


def test_two_builds_at_once(tmp_path: Path) -> None:
    """Two real builds with --force into one folder: each either completes or fails on the lock.

    Whatever the timing, the tarballs on disk must all come from one build,
    so the two never interleave. When the builds overlap (the usual case,
    since each makes two RSA-3072 keys), one of them fails on the lock.
    """
    config = write_config(tmp_path / "cluster", starter_config(
        certificate={"keyAlgorithm": "rsa-3072"},
        masters=[{"name": "k8s-master1", "ip": "192.0.2.11"}, {"name": "k8s-master2", "ip": "192.0.2.12"}]))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    command = [sys.executable, "-m", "kcmbundle", "build", str(config), "--out", str(out), "--force"]

    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
    runs = [(process.wait(timeout=120), *process.communicate()) for process in processes]

    for code, _, stderr in runs:
        assert code in (0, 4), stderr
        if code == 4:
            assert "another kcmbundle build is writing to this folder" in stderr
    assert any(code == 0 for code, _, _ in runs)
    on_disk = {f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path}"
               for path in sorted((out / "kubernetes").glob("*.tar.gz"))}
    written_by_run = [{line.rsplit("  ", 1)[0] for line in stdout.splitlines()} for code, stdout, _ in runs if code == 0]
    assert on_disk in written_by_run
    assert len(on_disk) == 2
    for path in (out / "kubernetes").glob("*.tar.gz"):
        assert_complete_tarball(path)
    assert temporaries(out) == []


# --- Building a subset -------------------------------------------------------------------------------


def test_master_subset_leaves_others_untouched(tmp_path: Path, seams: Seams) -> None:
    config = write_config(tmp_path / "cluster")
    out = tmp_path / "out"
    build(config, out, seams=seams)
    before = snapshot(out)
    time.sleep(0.01)  # so that a rewrite would show in mtime as well

    result = CliRunner().invoke(app, ["build", str(config), "--out", str(out), "--master", "k8s-master2", "--force"])

    assert result.exit_code == 0, result.stderr
    after = snapshot(out)
    for master in ("k8s-master1", "k8s-master3"):
        assert after[f"kubernetes/{master}.tar.gz"] == before[f"kubernetes/{master}.tar.gz"]
    assert after["kubernetes/k8s-master2.tar.gz"] != before["kubernetes/k8s-master2.tar.gz"]


def test_master_subset_without_force_rejects_existing(tmp_path: Path, seams: Seams) -> None:
    config = write_config(tmp_path / "cluster")
    out = tmp_path / "out"
    build(config, out, seams=seams)
    before = snapshot(out)

    result = CliRunner().invoke(app, ["build", str(config), "--out", str(out), "--master", "k8s-master2"])

    assert result.exit_code == 4, result.stderr
    assert "k8s-master2.tar.gz; pass --force to replace it" in result.stderr
    assert snapshot(out) == before
