"""Check built bundles with the tools operators use: openssl, kubectl, curl, systemd-analyze, shellcheck and tar.

Network traffic stays on 127.0.0.1: TLS servers from tls_server.py listen
there on a port the kernel picks, and curl's ``--connect-to`` sends requests
for a master's address to that port.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from kcmbundle.build import BuildResult, build
from kcmbundle.pki import COMPONENT_NAME, Seams
from kcmbundle.starter import STARTER_CONFIG

from support import DELETE, extract, fixed_seams, plain_kubectl, require_tool, starter_config, write_ca, write_config
from tls_server import serve_https, write_test_certificate

TIMEOUT = 20
"""Seconds any one tool may run before the test fails."""

MASTERS = {master["name"]: master["ip"] for master in STARTER_CONFIG["masters"]}
IPV6_MASTERS = {"k8s-master1": "2001:db8::11", "k8s-master2": "2001:db8::12", "k8s-master3": "2001:db8::13"}

CA_FILE = "rootfs/etc/kubernetes/cert/ca.pem"
CERT_FILE = "rootfs/etc/kubernetes/cert/kube-controller-manager.pem"
KEY_FILE = "rootfs/etc/kubernetes/cert/kube-controller-manager-key.pem"
KUBECONFIG_FILE = "rootfs/etc/kubernetes/kube-controller-manager.kubeconfig"
UNIT_INSTALL_PATH = "etc/systemd/system/kube-controller-manager.service"
SECRET_FILES = (KEY_FILE, KUBECONFIG_FILE)

KCM_SECURE_PORT = 10257
SOURCE_DATE_EPOCH = 1700000000


@pytest.fixture
def seams() -> Seams:
    # NOTE: openssl verify, kubectl and curl check certificates against the
    # real clock, so these bundles are signed "now" with the fixed keys and
    # serials. The test CA from write_ca is valid from 2026-01-15 to 2036-01-13.
    return fixed_seams(datetime.now(timezone.utc).replace(microsecond=0))


def run(argv: list[str], **options) -> subprocess.CompletedProcess[str]:
    """Run a tool with a timeout and without proxy settings, capturing its output as text."""
    environment = {name: value for name, value in os.environ.items() if "proxy" not in name.lower()}
    environment["NO_PROXY"] = environment["no_proxy"] = "*"
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=environment,
                          check=False, **options)


def unpack_all(results: list[BuildResult], destination: Path) -> dict[str, Path]:
    """Unpack every tarball and return each master's top folder by master name."""
    return {result.bundle.master.name: extract(result.path, destination) for result in results}


def build_config(folder: Path, document: dict, seams: Seams) -> dict[str, Path]:
    """Build ``document`` into ``folder``/out and return the unpacked bundles by master name."""
    config_path = write_config(folder / "cluster", document)
    results = build(config_path, folder / "out", seams=seams)
    return unpack_all(results, folder / "unpacked")


@pytest.fixture
def bundles(built: list[BuildResult], tmp_path: Path) -> dict[str, Path]:
    """The starter config's three bundles, unpacked, by master name."""
    return unpack_all(built, tmp_path / "unpacked")


def sha256_of(data: bytes) -> str:
    # Secrets are compared by digest so that a failing assert never prints them.
    return hashlib.sha256(data).hexdigest()


# openssl


def openssl_matches(cert_file: Path, option: str, value: str) -> bool:
    """Return whether ``openssl x509 -checkip/-checkhost`` reports that ``value`` matches the certificate.

    openssl exits 0 whether or not the name matches, so the output decides.
    """
    result = run([require_tool("openssl"), "x509", "-in", str(cert_file), "-noout", option, value])
    assert result.returncode == 0, result.stderr
    if "does match certificate" in result.stdout:
        return True
    assert "does NOT match certificate" in result.stdout, result.stdout
    return False


def openssl_text(cert_file: Path, *arguments: str) -> str:
    result = run([require_tool("openssl"), "x509", "-in", str(cert_file), "-noout", *arguments])
    assert result.returncode == 0, result.stderr
    return result.stdout


def extension_value(cert_file: Path, extension: str) -> str:
    """Return the value lines of one extension as ``openssl x509 -ext`` prints them."""
    lines = openssl_text(cert_file, "-ext", extension).splitlines()
    assert len(lines) >= 2, f"{cert_file.name} has no {extension} extension"
    return "\n".join(line.strip() for line in lines[1:])


def test_openssl_verifies_each_certificate(bundles: dict[str, Path]) -> None:
    openssl = require_tool("openssl")
    for name, top in bundles.items():
        for purpose in ("sslclient", "sslserver"):
            result = run([openssl, "verify", "-purpose", purpose, "-CAfile", str(top / CA_FILE), str(top / CERT_FILE)])
            assert result.returncode == 0, f"{name} ({purpose}): {result.stdout}{result.stderr}"
            assert result.stdout.strip().endswith(": OK"), f"{name} ({purpose}): {result.stdout}"


def test_openssl_rejects_certificate_from_other_ca(bundles: dict[str, Path], tmp_path: Path) -> None:
    other_ca, _ = write_ca(tmp_path / "other-ca", key_name="ca-ecdsa-p256", common_name="other-ca")
    top = bundles["k8s-master1"]

    result = run([require_tool("openssl"), "verify", "-CAfile", str(other_ca), str(top / CERT_FILE)])

    assert result.returncode != 0, result.stdout


def test_certificate_names_its_own_master(bundles: dict[str, Path]) -> None:
    for name, top in bundles.items():
        cert_file = top / CERT_FILE
        assert openssl_matches(cert_file, "-checkip", MASTERS[name]), name
        assert openssl_matches(cert_file, "-checkip", "127.0.0.1"), name
        assert openssl_matches(cert_file, "-checkhost", name), name
        assert openssl_matches(cert_file, "-checkhost", "localhost"), name


def test_certificate_omits_other_masters(bundles: dict[str, Path]) -> None:
    for name, top in bundles.items():
        cert_file = top / CERT_FILE
        for other, other_ip in MASTERS.items():
            if other == name:
                continue
            assert not openssl_matches(cert_file, "-checkip", other_ip), f"{name} names {other_ip}"
            assert not openssl_matches(cert_file, "-checkhost", other), f"{name} names {other}"


def test_shared_certificate_names_every_master(tmp_path: Path, seams: Seams) -> None:
    document = starter_config(certificate={"perMaster": False})
    bundles = build_config(tmp_path, document, seams)

    certificates = {top.joinpath(CERT_FILE).read_bytes() for top in bundles.values()}
    assert len(certificates) == 1, "perMaster false must give every master the same certificate"
    for top in bundles.values():
        cert_file = top / CERT_FILE
        for name, ip in MASTERS.items():
            assert openssl_matches(cert_file, "-checkip", ip), ip
            assert openssl_matches(cert_file, "-checkhost", name), name


def test_certificate_fields(bundles: dict[str, Path]) -> None:
    top = bundles["k8s-master1"]
    cert_file = top / CERT_FILE

    subject = openssl_text(cert_file, "-subject", "-nameopt", "RFC2253").strip()
    assert subject.startswith(f"subject=CN={COMPONENT_NAME},"), subject
    assert f",O={COMPONENT_NAME}," in subject, subject

    text = openssl_text(cert_file, "-text")
    assert "CA:FALSE" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert extension_value(cert_file, "keyUsage") == "Digital Signature, Key Encipherment"
    assert "X509v3 Key Usage: critical" in text

    subject_key_id = extension_value(cert_file, "subjectKeyIdentifier")
    authority_key_id = extension_value(cert_file, "authorityKeyIdentifier")
    ca_key_id = extension_value(top / CA_FILE, "subjectKeyIdentifier")
    assert subject_key_id
    assert authority_key_id.removeprefix("keyid:") == ca_key_id
    assert subject_key_id != ca_key_id


def test_key_matches_certificate(bundles: dict[str, Path]) -> None:
    openssl = require_tool("openssl")
    for name, top in bundles.items():
        from_key = run([openssl, "pkey", "-in", str(top / KEY_FILE), "-pubout"])
        from_cert = run([openssl, "x509", "-in", str(top / CERT_FILE), "-noout", "-pubkey"])
        assert from_key.returncode == 0, from_key.stderr
        assert from_cert.returncode == 0, from_cert.stderr
        assert "BEGIN PUBLIC KEY" in from_key.stdout
        assert from_key.stdout == from_cert.stdout, f"{name}: key file does not belong to the certificate"


# tar


def test_secret_modes_in_tarball(built: list[BuildResult]) -> None:
    for result in built:
        with tarfile.open(result.path) as archive:
            modes = {member.name.split("/", 1)[1]: stat.S_IMODE(member.mode)
                     for member in archive.getmembers() if "/" in member.name}
        for path in SECRET_FILES:
            assert modes[path] == 0o600, f"{result.path.name}: {path} has mode {modes[path]:04o}"


def test_secret_modes_after_tar_extract(built: list[BuildResult], tmp_path: Path) -> None:
    tar = require_tool("tar")
    for result in built:
        destination = tmp_path / result.bundle.master.name
        destination.mkdir()
        extracted = run([tar, "-xzf", str(result.path), "-C", str(destination)])
        assert extracted.returncode == 0, extracted.stderr

        top = destination / result.bundle.top
        for path in SECRET_FILES:
            mode = stat.S_IMODE((top / path).stat().st_mode)
            assert mode == 0o600, f"{result.path.name}: {path} extracted with mode {mode:04o}"


# kubectl


def kubectl_view(kubeconfig: Path) -> dict:
    result = run([plain_kubectl(), "config", "view", "--kubeconfig", str(kubeconfig), "--raw", "-o", "json"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_kubectl_reads_kubeconfig(bundles: dict[str, Path]) -> None:
    for name, top in bundles.items():
        view = kubectl_view(top / KUBECONFIG_FILE)

        assert view["current-context"], name
        context = next(item for item in view["contexts"] if item["name"] == view["current-context"])
        assert context["context"] == {"cluster": "kubernetes", "user": COMPONENT_NAME}, name

        (cluster,) = view["clusters"]
        assert cluster["name"] == "kubernetes"
        assert cluster["cluster"]["server"] == f"https://{MASTERS[name]}:6443"
        ca_data = base64.b64decode(cluster["cluster"]["certificate-authority-data"])
        assert ca_data == top.joinpath(CA_FILE).read_bytes(), name

        (user,) = view["users"]
        assert user["name"] == COMPONENT_NAME
        cert_data = base64.b64decode(user["user"]["client-certificate-data"])
        key_data = base64.b64decode(user["user"]["client-key-data"])
        assert cert_data == top.joinpath(CERT_FILE).read_bytes(), name
        assert sha256_of(key_data) == sha256_of(top.joinpath(KEY_FILE).read_bytes()), f"{name}: embedded key differs"


@pytest.fixture
def apiserver(config_path: Path, tmp_path: Path):
    """A stand-in kube-apiserver on 127.0.0.1 that trusts the test CA and expects kube-controller-manager's CN."""
    ca_cert, ca_key = config_path.parent / "pki" / "ca.pem", config_path.parent / "pki" / "ca-key.pem"
    cert_file, key_file = write_test_certificate(tmp_path / "apiserver", "apiserver", ca_cert, ca_key,
                                                 common_name="kube-apiserver", ip_addresses=("127.0.0.1",))
    with serve_https(cert_file, key_file, client_ca_file=ca_cert, required_common_name=COMPONENT_NAME) as server:
        yield server


def kubectl_healthz(kubeconfig: Path, port: int, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    return run([plain_kubectl(), "--kubeconfig", str(kubeconfig), "--server", f"https://127.0.0.1:{port}",
                "--cache-dir", str(cache_dir), "--request-timeout", "10s", "get", "--raw", "/healthz"])


def kubeconfig_with_client(kubeconfig: Path, destination: Path, cert_file: Path, key_file: Path) -> Path:
    """Copy ``kubeconfig`` to ``destination`` with another client certificate and key embedded."""
    document = yaml.safe_load(kubeconfig.read_text())
    user = document["users"][0]["user"]
    user["client-certificate-data"] = base64.b64encode(cert_file.read_bytes()).decode()
    user["client-key-data"] = base64.b64encode(key_file.read_bytes()).decode()
    destination.touch(mode=0o600)
    destination.write_text(yaml.safe_dump(document))
    return destination


def test_kubectl_request_with_bundle_kubeconfig(bundles: dict[str, Path], apiserver, tmp_path: Path) -> None:
    for name, top in bundles.items():
        result = kubectl_healthz(top / KUBECONFIG_FILE, apiserver.port, tmp_path / "cache")

        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert result.stdout.strip() == "ok", name
    assert apiserver.handshake_errors == []
    assert len(apiserver.served) == len(bundles)


def test_kubectl_client_from_other_ca_rejected(bundles: dict[str, Path], apiserver, tmp_path: Path) -> None:
    other_ca, other_key = write_ca(tmp_path / "other-ca", key_name="ca-ecdsa-p256", common_name="other-ca")
    cert_file, key_file = write_test_certificate(tmp_path / "client", "client", other_ca, other_key,
                                                 common_name=COMPONENT_NAME)
    kubeconfig = kubeconfig_with_client(bundles["k8s-master1"] / KUBECONFIG_FILE, tmp_path / "other.kubeconfig",
                                        cert_file, key_file)

    result = kubectl_healthz(kubeconfig, apiserver.port, tmp_path / "cache")

    assert result.returncode != 0, result.stdout
    assert apiserver.served == []
    assert apiserver.handshake_errors, "the server saw no failed handshake"
    assert "certificate verify failed" in str(apiserver.handshake_errors[0])


def test_kubectl_client_with_other_name_forbidden(bundles: dict[str, Path], apiserver, config_path: Path,
                                                  tmp_path: Path) -> None:
    pki = config_path.parent / "pki"
    cert_file, key_file = write_test_certificate(tmp_path / "client", "client", pki / "ca.pem", pki / "ca-key.pem",
                                                 common_name="system:kube-scheduler")
    kubeconfig = kubeconfig_with_client(bundles["k8s-master1"] / KUBECONFIG_FILE, tmp_path / "other.kubeconfig",
                                        cert_file, key_file)

    result = kubectl_healthz(kubeconfig, apiserver.port, tmp_path / "cache")

    assert result.returncode != 0, result.stdout
    assert "Forbidden" in result.stderr, result.stderr
    assert apiserver.served == []


# curl against the bundle's serving certificate


def curl_healthz(ca_file: Path, url: str, *connect_to: str) -> subprocess.CompletedProcess[str]:
    argv = [require_tool("curl"), "--silent", "--show-error", "--fail", "--globoff", "--noproxy", "*",
            "--max-time", "10", "--cacert", str(ca_file)]
    for mapping in connect_to:
        argv += ["--connect-to", mapping]
    return run([*argv, url])


def url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def check_serving_certificate(top: Path, own_ip: str, other_ips: list[str]) -> None:
    """Serve with the bundle's certificate and key, as kube-controller-manager does, and connect with curl."""
    ca_file = top / CA_FILE
    with serve_https(top / CERT_FILE, top / KEY_FILE) as server:
        direct = curl_healthz(ca_file, f"https://127.0.0.1:{server.port}/healthz")
        assert direct.returncode == 0, direct.stderr
        assert direct.stdout == "ok"

        for ip in [own_ip, *other_ips]:
            host = url_host(ip)
            mapping = f"{host}:{KCM_SECURE_PORT}:127.0.0.1:{server.port}"
            result = curl_healthz(ca_file, f"https://{host}:{KCM_SECURE_PORT}/healthz", mapping)
            if ip == own_ip:
                assert result.returncode == 0, f"{ip}: {result.stderr}"
                assert result.stdout == "ok", ip
            else:
                # 60: the peer certificate cannot be authenticated (here, no SAN matches).
                assert result.returncode == 60, f"{ip}: curl exited {result.returncode}: {result.stderr}"


def test_curl_trusts_serving_certificate(bundles: dict[str, Path]) -> None:
    for name, top in bundles.items():
        others = [ip for other, ip in MASTERS.items() if other != name]
        check_serving_certificate(top, MASTERS[name], others)


# IPv6


@pytest.fixture
def ipv6_bundles(tmp_path: Path, seams: Seams) -> dict[str, Path]:
    document = starter_config(
        cluster={"serviceCIDR": "fd00:10:96::/112", "clusterCIDR": DELETE},
        masters=[{"name": name, "ip": ip} for name, ip in IPV6_MASTERS.items()],
    )
    return build_config(tmp_path, document, seams)


def test_ipv6_certificate_and_kubeconfig(ipv6_bundles: dict[str, Path]) -> None:
    for name, top in ipv6_bundles.items():
        cert_file = top / CERT_FILE
        ip = IPV6_MASTERS[name]
        assert openssl_matches(cert_file, "-checkip", ip), name
        for other, other_ip in IPV6_MASTERS.items():
            if other != name:
                assert not openssl_matches(cert_file, "-checkip", other_ip), f"{name} names {other_ip}"

        view = kubectl_view(top / KUBECONFIG_FILE)
        assert view["clusters"][0]["cluster"]["server"] == f"https://[{ip}]:6443"


def test_ipv6_curl_trusts_serving_certificate(ipv6_bundles: dict[str, Path]) -> None:
    top = ipv6_bundles["k8s-master1"]
    check_serving_certificate(top, IPV6_MASTERS["k8s-master1"], [IPV6_MASTERS["k8s-master2"]])


# systemd and shell


def systemd_root(top: Path, root: Path, *, with_binary: bool) -> Path:
    """Lay out ``root`` as a tiny system: systemd's own units, the bundle's unit and a stub binary.

    ``verify`` loads the unit's dependencies (sysinit.target and others), so
    the host's system units are copied in, and it checks that ExecStart's
    binary is executable, so a stub shell script is put at the binary's path.
    """
    candidates = [Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")]
    system_units = next((path for path in candidates if path.is_dir()), None)
    if system_units is None:
        pytest.skip("systemd's unit folder is not installed")
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)

    unit = root / UNIT_INSTALL_PATH
    unit.parent.mkdir(parents=True)
    shutil.copyfile(top / "rootfs" / UNIT_INSTALL_PATH, unit)

    if with_binary:
        binary = root / STARTER_CONFIG["paths"]["binary"].lstrip("/")
        binary.parent.mkdir(parents=True)
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o755)
    return unit


def systemd_verify(root: Path, unit: Path) -> subprocess.CompletedProcess[str]:
    return run([require_tool("systemd-analyze"), f"--root={root}", "verify", str(unit)])


def test_systemd_accepts_unit(bundles: dict[str, Path], tmp_path: Path) -> None:
    for name, top in bundles.items():
        root = tmp_path / name
        unit = systemd_root(top, root, with_binary=True)

        result = systemd_verify(root, unit)

        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{name}: {output}"
        assert [line for line in output.splitlines() if unit.name in line] == [], f"{name}: {output}"


def test_systemd_rejects_unit_without_binary(bundles: dict[str, Path], tmp_path: Path) -> None:
    # Shows that the check above can fail: the same unit with no binary in place.
    root = tmp_path / "root"
    unit = systemd_root(bundles["k8s-master1"], root, with_binary=False)

    result = systemd_verify(root, unit)

    assert result.returncode != 0
    assert "is not executable" in result.stderr, result.stderr


def test_shellcheck_accepts_install_script(bundles: dict[str, Path]) -> None:
    scripts = [str(top / "install.sh") for top in bundles.values()]

    result = run([require_tool("shellcheck"), *scripts])

    assert result.returncode == 0, result.stdout + result.stderr


# reproducibility


def test_builds_are_byte_identical(config_path: Path, tmp_path: Path) -> None:
    first = build(config_path, tmp_path / "first", seams=fixed_seams())
    second = build(config_path, tmp_path / "second", seams=fixed_seams())

    assert [result.path.name for result in first] == [result.path.name for result in second]
    for one, two in zip(first, second):
        assert one.path.read_bytes() == two.path.read_bytes(), one.path.name
        assert one.sha256 == two.sha256


def test_source_date_epoch_sets_entry_mtime(config_path: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(SOURCE_DATE_EPOCH))

    results = build(config_path, tmp_path / "out", seams=fixed_seams())

    for result in results:
        with tarfile.open(result.path) as archive:
            mtimes = {member.name: member.mtime for member in archive.getmembers()}
        assert set(mtimes.values()) == {SOURCE_DATE_EPOCH}, f"{result.path.name}: {mtimes}"


def test_gzip_header_has_no_time_or_name(built: list[BuildResult]) -> None:
    for result in built:
        header = result.path.read_bytes()[:10]
        assert header[:3] == b"\x1f\x8b\x08", f"{result.path.name} is not deflate gzip"
        flags = header[3]
        assert flags & 0x08 == 0, f"{result.path.name}: gzip header contains a file name"
        assert flags & 0x10 == 0, f"{result.path.name}: gzip header contains a comment"
        assert int.from_bytes(header[4:8], "little") == 0, f"{result.path.name}: gzip header mtime is set"
        # The whole stream decompresses, so the header parsed above is the only one.
        gzip.decompress(result.path.read_bytes())


def test_tar_entries_sorted_and_anonymous(built: list[BuildResult]) -> None:
    for result in built:
        with tarfile.open(result.path) as archive:
            members = archive.getmembers()

        folders = [member.name for member in members if member.isdir()]
        files = [member.name for member in members if member.isfile()]
        assert len(folders) + len(files) == len(members), f"{result.path.name} has links or devices"
        assert folders == sorted(folders), result.path.name
        assert files == sorted(files), result.path.name
        seen: set[str] = set()
        for member in members:
            parent = member.name.rsplit("/", 1)[0]
            assert "/" not in member.name or parent in seen, f"{member.name} comes before its folder"
            seen.add(member.name)

        for member in members:
            assert (member.uid, member.gid) == (0, 0), member.name
            assert (member.uname, member.gname) == ("", ""), member.name
