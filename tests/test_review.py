"""Commands that review and operate bundles: inspect, verify, check-expiration, render, diff, keygen, renew."""

from __future__ import annotations

import base64
import dataclasses
import io
import itertools
import json
import re
import stat
import subprocess
import tarfile
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kcmbundle.build import build
from kcmbundle.cli import app
from kcmbundle.errors import BundleError, VerificationError
from kcmbundle.reader import read_bundle
from kcmbundle.render import rendered_tree, render_config
from kcmbundle.renew import renew_bundles
from kcmbundle.review_diff import diff_paths
from kcmbundle.signing import generate_key_pair
from kcmbundle.verification import verify_bundle

from support import FIXED_NOW, extract, fixed_seams, require_tool, starter_config, write_ca, write_config

SNAPSHOTS = Path(__file__).parent / "snapshots" / "test_review"
CERT_PATH = "rootfs/etc/kubernetes/cert/kube-controller-manager.pem"
KUBECONFIG_PATH = "rootfs/etc/kubernetes/kube-controller-manager.kubeconfig"

runner = CliRunner()


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # The commands read the time through pki.utc_now; the test bundles are built at FIXED_NOW.
    monkeypatch.setattr("kcmbundle.pki.utc_now", lambda: FIXED_NOW)


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args])


def rewrite_tarball(source: Path, target: Path, change) -> Path:
    """Copy a bundle tarball, passing each (TarInfo, content) through ``change``, which returns a list of them."""
    output = io.BytesIO()
    with tarfile.open(source) as archive, tarfile.open(fileobj=output, mode="w:gz") as rewritten:
        for member in archive.getmembers():
            content = archive.extractfile(member).read() if member.isreg() else None
            for info, data in change(member, content):
                rewritten.addfile(info, io.BytesIO(data) if data is not None else None)
    target.write_bytes(output.getvalue())
    return target


def replace_member(source: Path, target: Path, suffix: str, new_content: bytes) -> Path:
    def change(member, content):
        if member.name.endswith(suffix):
            member.size = len(new_content)
            return [(member, new_content)]
        return [(member, content)]

    return rewrite_tarball(source, target, change)


def add_member(source: Path, target: Path, info: tarfile.TarInfo, data: bytes | None = None) -> Path:
    added = False

    def change(member, content):
        nonlocal added
        if added:
            return [(member, content)]
        added = True
        return [(member, content), (info, data)]

    return rewrite_tarball(source, target, change)


# --- reader safety ----------------------------------------------------------

def _entry(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.linkname = link
    return info


@pytest.mark.parametrize(("name", "kind", "link", "reason"), [
    ("kubernetes-k8s-master1/../../evil", tarfile.REGTYPE, "", "contains '..'"),
    ("/etc/cron.d/evil", tarfile.REGTYPE, "", "absolute"),
    ("kubernetes-k8s-master1/rootfs/link", tarfile.SYMTYPE, "/etc/shadow", "symbolic link"),
    ("kubernetes-k8s-master1/rootfs/hard", tarfile.LNKTYPE, "kubernetes-k8s-master1/install.sh", "hard link"),
    ("kubernetes-k8s-master1/rootfs/dev", tarfile.CHRTYPE, "", "device file"),
    ("kubernetes-k8s-master1/rootfs/fifo", tarfile.FIFOTYPE, "", "FIFO"),
])
def test_reader_rejects_unsafe_member(built, tmp_path: Path, name: str, kind: bytes, link: str, reason: str) -> None:
    data = b"x" if kind == tarfile.REGTYPE else None
    tarball = add_member(built[0].path, tmp_path / "bad.tar.gz", _entry(name, kind, len(data or b""), link), data)

    with pytest.raises(BundleError) as caught:
        read_bundle(tarball)

    assert repr(name) in str(caught.value)
    assert reason in str(caught.value)


def test_reader_rejects_oversized_member(built, tmp_path: Path) -> None:
    size = 16 * 1024 * 1024 + 1
    tarball = add_member(built[0].path, tmp_path / "big.tar.gz",
                         _entry("kubernetes-k8s-master1/README.big", size=size), bytes(size))

    with pytest.raises(BundleError, match=r"'kubernetes-k8s-master1/README.big' is 16777217 bytes"):
        read_bundle(tarball)


def test_reader_rejects_symlink_in_folder(built, tmp_path: Path) -> None:
    top = extract(built[0].path, tmp_path / "unpacked")
    (top / "rootfs" / "escape").symlink_to("/etc/passwd")

    with pytest.raises(BundleError, match="rootfs/escape is a symbolic link"):
        read_bundle(top)


def test_cli_rejects_traversal_with_exit_5(built, tmp_path: Path) -> None:
    tarball = add_member(built[0].path, tmp_path / "bad.tar.gz", _entry("kubernetes-k8s-master1/../x", size=1), b"x")

    result = invoke("inspect", tarball)

    assert result.exit_code == 5, result.output
    assert "contains '..'" in result.stderr
    assert not (tmp_path / "x").exists()


def test_reader_reads_folder_like_tarball(built, tmp_path: Path) -> None:
    top = extract(built[0].path, tmp_path / "unpacked")

    from_tarball, from_folder = read_bundle(built[0].path), read_bundle(top.parent)

    assert from_folder.top == from_tarball.top
    assert {path: member.sha256 for path, member in from_folder.members.items()} == \
        {path: member.sha256 for path, member in from_tarball.members.items()}
    assert from_folder.members["install.sh"].mode == 0o755


# --- inspect ----------------------------------------------------------------

@pytest.mark.parametrize("form", ["tarball", "folder"])
def test_inspect_json_fields(built, tmp_path: Path, form: str) -> None:
    path = built[0].path if form == "tarball" else extract(built[0].path, tmp_path / "unpacked")

    result = invoke("inspect", path, "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["manifest"]["master"] == {"name": "k8s-master1", "ip": "192.0.2.11"}
    leaf = next(entry for entry in report["certificates"] if entry["file"] == CERT_PATH)
    assert leaf["subject"].startswith("CN=system:kube-controller-manager,")
    assert leaf["sans"] == ["localhost", "k8s-master1", "127.0.0.1", "192.0.2.11"]
    assert leaf["serial"] == "1000"
    assert leaf["keyAlgorithm"] == "rsa-2048"
    assert leaf["notBefore"] == "2026-01-15T11:55:00Z"
    assert leaf["notAfter"] == "2027-01-15T12:00:00Z"
    assert leaf["daysLeft"] == 365
    embedded = [entry["location"] for entry in report["certificates"] if entry["file"] == KUBECONFIG_PATH]
    assert embedded == ["clusters[0].cluster.certificate-authority-data", "users[0].user.client-certificate-data"]
    flags = {flag["name"]: flag["value"] for flag in report["unit"]["flags"]}
    assert report["unit"]["binary"] == "/opt/k8s/bin/kube-controller-manager"
    assert flags["cluster-name"] == "kubernetes"
    assert flags["horizontal-pod-autoscaler-sync-period"] == "10s"
    files = {item["path"]: item for item in report["files"]}
    assert files["rootfs/etc/kubernetes/cert/kube-controller-manager-key.pem"]["mode"] == "0600"
    assert files[KUBECONFIG_PATH]["installPath"] == "/etc/kubernetes/kube-controller-manager.kubeconfig"
    assert "PRIVATE KEY" not in result.stdout


def test_inspect_text_shows_days_left(built) -> None:
    result = invoke("inspect", built[0].path)

    assert result.exit_code == 0, result.output
    assert "notAfter   2027-01-15T12:00:00Z (365 days left)" in result.stdout
    assert "--leader-elect=true" in result.stdout


def test_inspect_parses_quoted_exec_start(tmp_path: Path, seams) -> None:
    document = starter_config(controllerManager={"extraArgs": {"requestheader-allowed-names": "aggregator,front proxy%1"}})
    config = write_config(tmp_path / "cluster", document)
    results = build(config, tmp_path / "out", seams=seams, masters=["k8s-master1"])

    result = invoke("inspect", results[0].path, "--json")

    flags = {flag["name"]: flag["value"] for flag in json.loads(result.stdout)["unit"]["flags"]}
    assert flags["requestheader-allowed-names"] == "aggregator,front proxy%1"


# --- verify -----------------------------------------------------------------

def test_verify_passes_built_bundle(built) -> None:
    result = invoke("verify", built[0].path)

    assert result.exit_code == 0, result.output
    assert "ok: checksums: 8 files match SHA256SUMS" in result.stdout
    assert "ok: kubeconfig: embeds the same CA, certificate and key as the bundle's files" in result.stdout


def test_verify_fails_tampered_file(built, tmp_path: Path) -> None:
    tarball = replace_member(built[0].path, tmp_path / "t.tar.gz", ".service", b"[Service]\nExecStart=/bin/sh\n")

    result = invoke("verify", tarball)

    assert result.exit_code == 5, result.output
    assert "rootfs/etc/systemd/system/kube-controller-manager.service: checksum mismatch" in result.stderr


def test_verify_fails_other_ca(built, tmp_path: Path) -> None:
    other_ca, _ = write_ca(tmp_path / "other", key_name="ca-ecdsa-p256", common_name="other-ca")

    with pytest.raises(VerificationError) as caught:
        verify_bundle(read_bundle(built[0].path), now=FIXED_NOW, ca_pem=other_ca.read_bytes(), ca_source="other")

    messages = [str(problem) for problem in caught.value.problems]
    assert any("not signed by the CA in other" in message for message in messages), messages
    assert any("the bundle's CA is not the CA in other" in message for message in messages), messages


def test_verify_fails_expired_certificate(built) -> None:
    later = FIXED_NOW + timedelta(days=400)

    with pytest.raises(VerificationError) as caught:
        verify_bundle(read_bundle(built[0].path), now=later)

    assert [str(problem) for problem in caught.value.problems] == [
        f"{CERT_PATH}: the certificate expired on 2027-01-15T12:00:00Z. Renew it with 'kcmbundle renew'"]


def test_verify_warns_within_window(built) -> None:
    with pytest.raises(VerificationError, match="expires on 2027-01-15T12:00:00Z, within 30 days"):
        verify_bundle(read_bundle(built[0].path), now=FIXED_NOW + timedelta(days=340))


def test_verify_fails_kubeconfig_with_other_certificate(built, tmp_path: Path) -> None:
    other_cert = read_bundle(built[1].path).members[CERT_PATH].content
    kubeconfig = yaml.safe_load(read_bundle(built[0].path).members[KUBECONFIG_PATH].content)
    kubeconfig["users"][0]["user"]["client-certificate-data"] = base64.b64encode(other_cert).decode()
    tarball = replace_member(built[0].path, tmp_path / "k.tar.gz", ".kubeconfig",
                             yaml.safe_dump(kubeconfig).encode())

    with pytest.raises(VerificationError) as caught:
        verify_bundle(read_bundle(tarball), now=FIXED_NOW)

    messages = [str(problem) for problem in caught.value.problems]
    assert f"{KUBECONFIG_PATH}: users[0].user.client-certificate-data differs from {CERT_PATH}. " \
           "Do not install this bundle; build it again with 'kcmbundle build'" in messages


def test_verify_lists_every_failure(built, tmp_path: Path) -> None:
    other_ca, _ = write_ca(tmp_path / "other", key_name="ca-ecdsa-p256", common_name="other-ca")
    tarball = replace_member(built[0].path, tmp_path / "t.tar.gz", "README.txt", b"changed\n")

    result = invoke("verify", tarball, "--ca", other_ca, "--warn-days", "400")

    assert result.exit_code == 5, result.output
    assert "verification failed (4 problem(s))" in result.stderr
    assert "README.txt: checksum mismatch" in result.stderr
    assert "within 400 days" in result.stderr


# --- check-expiration -------------------------------------------------------

def test_check_expiration_sorts_by_expiry(tmp_path: Path) -> None:
    config = write_config(tmp_path / "cluster")
    build(config, tmp_path / "out", seams=fixed_seams(FIXED_NOW + timedelta(days=100)), masters=["k8s-master2"])
    build(config, tmp_path / "out", seams=fixed_seams(FIXED_NOW), masters=["k8s-master3"])
    build(config, tmp_path / "out", seams=fixed_seams(FIXED_NOW + timedelta(days=50)), masters=["k8s-master1"])

    result = invoke("check-expiration", tmp_path / "out", "--json")

    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    leaves = [entry for entry in entries if entry["subject"].startswith("CN=system:kube-controller-manager")]
    assert [re.search(r"k8s-master\d", entry["source"]).group() for entry in leaves] == \
        ["k8s-master3", "k8s-master3", "k8s-master1", "k8s-master1", "k8s-master2", "k8s-master2"]
    assert [entry["daysLeft"] for entry in leaves[::2]] == [365, 415, 465]
    assert [entry["notAfter"] for entry in entries] == sorted(entry["notAfter"] for entry in entries)
    assert len(entries) == 12  # per bundle: ca.pem, the certificate and the two in the kubeconfig


def test_check_expiration_fails_within_window(built, tmp_path: Path) -> None:
    top = extract(built[0].path, tmp_path / "unpacked")

    result = invoke("check-expiration", top / "rootfs/etc/kubernetes/kube-controller-manager.kubeconfig",
                    "--warn-days", "400")

    assert result.exit_code == 5, result.output
    assert result.stdout.splitlines()[1].startswith("2027-01-15T12:00:00Z  365   expiring  CN=system:kube-controller")
    assert "1 certificate(s) expired or expire within 400 days" in result.stderr


def test_check_expiration_reports_missing_path(tmp_path: Path) -> None:
    result = invoke("check-expiration", tmp_path / "nothing")

    assert result.exit_code == 5, result.output
    assert "nothing: not found" in result.stderr


# --- render -----------------------------------------------------------------

def test_render_matches_snapshot(config_path: Path, snapshot) -> None:
    tree = rendered_tree(render_config(config_path))
    for files in tree.values():
        # install.sh has its own snapshots in the bundle tests, and test_render_checksums_match_build
        # checks that render gives it unchanged.
        del files["install.sh"]

    snapshot.snapshot_dir = SNAPSHOTS / "render"
    snapshot.assert_match_dir({top: _nest(files) for top, files in tree.items()}, "starter")


def _nest(files: dict[str, str]) -> dict:
    """Turn ``{"a/b": text}`` into ``{"a": {"b": text}}``, the form assert_match_dir takes."""
    tree: dict = {}
    for path, text in files.items():
        *folders, name = path.split("/")
        node = tree
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = text
    return tree


def test_render_hides_key_material(config_path: Path) -> None:
    result = invoke("render", config_path)

    assert result.exit_code == 0, result.output
    assert "PRIVATE KEY" not in result.stdout
    assert "BEGIN CERTIFICATE" not in result.stdout
    assert "LS0tLS1CRUdJTi" not in result.stdout  # base64 of "-----BEGIN"
    assert not re.search(r"^\s*[A-Za-z0-9+/]{64}$", result.stdout, flags=re.MULTILINE), "PEM body in output"
    assert "==> kubernetes-k8s-master3/rootfs/etc/kubernetes/cert/kube-controller-manager.pem (mode 0644) <==" \
        in result.stdout


def test_render_needs_no_ca_key(config_path: Path, tmp_path: Path) -> None:
    (config_path.parent / "pki" / "ca-key.pem").unlink()

    result = invoke("render", config_path, "--master", "k8s-master2", "--out", tmp_path / "review")

    assert result.exit_code == 0, result.output
    written = sorted(path.relative_to(tmp_path / "review").as_posix()
                     for path in (tmp_path / "review").rglob("*") if path.is_file())
    assert "kubernetes-k8s-master2/install.sh" in written
    assert all(path.startswith("kubernetes-k8s-master2/") for path in written)


def test_render_checksums_match_build(config_path: Path, built) -> None:
    rendered = rendered_tree(render_config(config_path, masters=["k8s-master1"]))["kubernetes-k8s-master1"]
    real = read_bundle(built[0].path).members

    shown = [line.split("  ") for line in rendered["SHA256SUMS"].splitlines()]
    exact = [(digest, path) for digest, path in shown if digest != "(set at build time)"]
    assert {path for _, path in exact} >= {"install.sh", "rootfs/etc/kubernetes/cert/ca.pem"}
    for digest, path in exact:
        assert real[path].sha256 == digest, path
    assert rendered["install.sh"] == real["install.sh"].content.decode()


# --- diff -------------------------------------------------------------------

def _renew_later(config: Path, old_dir: Path, out: Path, *, keep_keys: bool):
    counter = itertools.count(0x2000)
    seams = dataclasses.replace(fixed_seams(FIXED_NOW + timedelta(days=300)), serial=lambda: next(counter))
    return renew_bundles(config, old_dir, out, keep_keys=keep_keys, seams=seams)


def test_diff_identical_exits_0(built, tmp_path: Path) -> None:
    top = extract(built[0].path, tmp_path / "unpacked")

    result = invoke("diff", built[0].path, top)

    assert result.exit_code == 0, result.output
    assert result.stdout == ""


def test_diff_renewed_shows_only_validity_and_serial(built, config_path: Path, tmp_path: Path) -> None:
    _renew_later(config_path, tmp_path / "out" / "kubernetes", tmp_path / "new", keep_keys=True)

    result = invoke("diff", tmp_path / "out" / "kubernetes", tmp_path / "new" / "kubernetes")

    assert result.exit_code == 1, result.output
    changed_fields = set(re.findall(r"^    (\w+): ", result.stdout, flags=re.MULTILINE))
    assert changed_fields == {"serial", "notBefore", "notAfter"}
    text_changes = [line for line in result.stdout.splitlines()
                    if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert text_changes and all(re.search(r"serial|notBefore|notAfter", line) for line in text_changes), text_changes
    assert "changed: " not in result.stdout
    assert "added: " not in result.stdout
    assert "removed: " not in result.stdout
    assert result.stdout.count("kube-controller-manager.pem: certificate changed") == 3


def test_diff_bundle_against_config(built, config_path: Path) -> None:
    text, same = diff_paths(built[1].path, config_path, now=FIXED_NOW)

    assert not same
    assert "=== k8s-master2:" in text
    assert "k8s-master1" not in text
    assert "    serial: 1001 -> (set at build time)" in text
    assert "+++ b/rootfs/etc/systemd/system" not in text  # the unit renders the same as it was built


def test_diff_reports_added_and_removed_files(built, tmp_path: Path) -> None:
    top = extract(built[0].path, tmp_path / "unpacked")
    (top / "README.txt").unlink()
    (top / "notes.txt").write_text("extra\n")

    text, same = diff_paths(built[0].path, top, now=FIXED_NOW)

    assert not same
    assert "removed: README.txt" in text
    assert "added: notes.txt" in text


# --- keygen and signing -----------------------------------------------------

def _signed_bundle(config_path: Path, tmp_path: Path, seams) -> tuple[Path, Path, Path]:
    result = invoke("keygen", tmp_path / "keys")
    assert result.exit_code == 0, result.output
    private, public = tmp_path / "keys" / "signing-key.pem", tmp_path / "keys" / "signing-key.pub.pem"
    results = build(config_path, tmp_path / "out", seams=seams, sign_key=private, masters=["k8s-master1"])
    return results[0].path, private, public


def test_keygen_writes_key_pair(tmp_path: Path) -> None:
    result = invoke("keygen", tmp_path / "keys")

    assert result.exit_code == 0, result.output
    private, public = tmp_path / "keys" / "signing-key.pem", tmp_path / "keys" / "signing-key.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert "BEGIN" not in result.output
    again = invoke("keygen", tmp_path / "keys")
    assert again.exit_code == 4, again.output


def test_signed_bundle_verifies(config_path: Path, tmp_path: Path, seams) -> None:
    tarball, _, public = _signed_bundle(config_path, tmp_path, seams)

    result = invoke("verify", tarball, "--key", public)

    assert result.exit_code == 0, result.output
    assert "ok: signature: SHA256SUMS.sig is a valid signature by --key" in result.stdout


def test_modified_signed_bundle_fails(config_path: Path, tmp_path: Path, seams) -> None:
    tarball, _, public = _signed_bundle(config_path, tmp_path, seams)
    sums = read_bundle(tarball).members["SHA256SUMS"].content
    modified = replace_member(tarball, tmp_path / "m.tar.gz", "/SHA256SUMS", sums.replace(b"README", b"READMX"))

    result = invoke("verify", modified, "--key", public)

    assert result.exit_code == 5, result.output
    assert "SHA256SUMS.sig: invalid signature" in result.stderr


def test_unsigned_bundle_fails_with_key(built, tmp_path: Path) -> None:
    _, public = generate_key_pair(tmp_path / "keys")

    result = invoke("verify", built[0].path, "--key", public)

    assert result.exit_code == 5, result.output
    assert "SHA256SUMS.sig: missing: the bundle is not signed" in result.stderr


def test_openssl_checks_signature(config_path: Path, tmp_path: Path, seams) -> None:
    openssl = require_tool("openssl")
    tarball, _, public = _signed_bundle(config_path, tmp_path, seams)
    top = extract(tarball, tmp_path / "unpacked")
    command = [openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(public), "-rawin",
               "-in", str(top / "SHA256SUMS"), "-sigfile", str(top / "SHA256SUMS.sig")]

    good = subprocess.run(command, capture_output=True, text=True, check=False)
    (top / "SHA256SUMS").write_text((top / "SHA256SUMS").read_text() + "\n")
    bad = subprocess.run(command, capture_output=True, text=True, check=False)

    assert good.returncode == 0, good.stdout + good.stderr
    assert "Signature Verified Successfully" in good.stdout
    assert bad.returncode != 0


def _signature_block(install_script: Path) -> str:
    """Return the --verify-key block of install.sh, which runs before anything else and changes nothing."""
    text = install_script.read_text()
    start = text.index("# --- Signature check")
    end = text.index("# --- End of signature check")
    return "set -euo pipefail\n" + text[start:end] + 'printf "args:%s\\n" "$*"\n'


@pytest.mark.parametrize("tamper", [False, True])
def test_install_sh_verify_key(config_path: Path, tmp_path: Path, seams, tamper: bool) -> None:
    require_tool("openssl")
    tarball, _, public = _signed_bundle(config_path, tmp_path, seams)
    top = extract(tarball, tmp_path / "unpacked")
    if tamper:
        (top / "SHA256SUMS").write_text((top / "SHA256SUMS").read_text().replace("README", "READMX"))
    # Only the verification block runs: the full script would install onto this machine when run as root.
    checker = top / "verify-only.sh"
    checker.write_text(_signature_block(top / "install.sh"))

    result = subprocess.run(["bash", str(checker), "--verify-key", str(public), "--dry-run"],
                            capture_output=True, text=True, check=False)

    if tamper:
        assert result.returncode == 1, result.stdout + result.stderr
        assert "SHA256SUMS.sig is not a valid signature of SHA256SUMS" in result.stderr
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "[signature] SHA256SUMS is signed by" in result.stdout
        assert "args:--dry-run" in result.stdout  # the other options reach the option parsing


def test_install_sh_shellcheck(built, tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck")
    top = extract(built[0].path, tmp_path / "unpacked")
    block = tmp_path / "block.sh"
    block.write_text("#!/usr/bin/env bash\n" + _signature_block(top / "install.sh"))

    result = subprocess.run([shellcheck, str(block)], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stdout


# --- renew ------------------------------------------------------------------

def test_renew_keeps_keys(built, config_path: Path, tmp_path: Path) -> None:
    results = _renew_later(config_path, tmp_path / "out" / "kubernetes", tmp_path / "new", keep_keys=True)

    assert [result.bundle.master.name for result in results] == ["k8s-master1", "k8s-master2", "k8s-master3"]
    for old, new in zip(built, results):
        old_members, new_members = read_bundle(old.path).members, read_bundle(new.path).members
        key = "rootfs/etc/kubernetes/cert/kube-controller-manager-key.pem"
        assert new_members[key].content == old_members[key].content
        assert new_members[CERT_PATH].content != old_members[CERT_PATH].content
        verify_bundle(read_bundle(new.path), now=FIXED_NOW + timedelta(days=300))


def test_renew_cli_writes_bundles(built, config_path: Path, tmp_path: Path) -> None:
    result = invoke("renew", config_path, "--from", tmp_path / "out" / "kubernetes", "--out", tmp_path / "new")

    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (tmp_path / "new" / "kubernetes").glob("*.tar.gz")) == \
        ["k8s-master1.tar.gz", "k8s-master2.tar.gz", "k8s-master3.tar.gz"]


def test_renew_rejects_changed_sans(built, tmp_path: Path) -> None:
    document = starter_config(certificate={"extraSANs": ["kcm.example.test"]})
    changed = write_config(tmp_path / "changed", document)

    result = invoke("renew", changed, "--from", tmp_path / "out" / "kubernetes", "--out", tmp_path / "new")

    assert result.exit_code == 2, result.output
    assert "k8s-master1: the config gives SANs localhost, k8s-master1, kcm.example.test" in result.stderr
    assert not (tmp_path / "new").exists()


def test_renew_refuses_existing_without_force(built, config_path: Path, tmp_path: Path) -> None:
    old_dir = tmp_path / "out" / "kubernetes"
    before = {path.name: path.read_bytes() for path in old_dir.iterdir()}

    result = invoke("renew", config_path, "--from", old_dir, "--out", tmp_path / "out")

    assert result.exit_code == 4, result.output
    assert {path.name: path.read_bytes() for path in old_dir.iterdir() if path.name in before} == before
