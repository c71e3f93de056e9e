"""Bundle layout and content, guarded by snapshots of every rendered text file."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from kcmbundle.build import build
from kcmbundle.bundle import plan_bundles
from kcmbundle.config import load_config
from kcmbundle.pki import load_ca

from support import DELETE, FIXED_NOW, fixed_seams, starter_config, write_config

TEXT_FILES = ("install.sh", "README.txt", "MANIFEST.json", "SHA256SUMS")

SNAPSHOT_CASES = {
    "starter": {},
    "shared-certificate": {"certificate": {"perMaster": False, "keyAlgorithm": "ecdsa-p256"}},
    "url-mode-ipv6": {
        "cluster": {"serviceCIDR": "fd00:10:96::/112", "clusterCIDR": "fd00:10:244::/56",
                    "apiServer": {"mode": "url", "url": "https://[2001:db8::10]:6443", "port": DELETE}},
        "masters": [{"name": "cp-a", "ip": "2001:db8::11"}, {"name": "cp-b", "ip": "2001:db8::12"}],
    },
}


def _plan(tmp_path: Path, document: dict):
    config = load_config(write_config(tmp_path / "cluster", document))
    seams = fixed_seams()
    ca = load_ca(config.ca, seams.clock())
    return plan_bundles(config, ca, config.masters, seams)


def _redacted_kubeconfig(content: bytes) -> str:
    """Return the kubeconfig text with the embedded private key replaced, for snapshots."""
    data = yaml.safe_load(content)
    for user in data["users"]:
        user["user"]["client-key-data"] = "<private key redacted>"
    return yaml.safe_dump(data, sort_keys=False)


def _snapshot_files(bundle) -> dict[str, str]:
    files = {name: bundle.file(name).content.decode() for name in TEXT_FILES}
    for bundle_file in bundle.files:
        if bundle_file.path.endswith(".service"):
            files["unit.service"] = bundle_file.content.decode()
        elif bundle_file.path.endswith(".kubeconfig"):
            files["kubeconfig.yaml"] = _redacted_kubeconfig(bundle_file.content)
        elif bundle_file.path.endswith("kube-controller-manager.pem"):
            files["kube-controller-manager.pem"] = bundle_file.content.decode()
    return files


@pytest.mark.parametrize("case", sorted(SNAPSHOT_CASES))
def test_bundle_text_files_snapshot(case: str, tmp_path: Path, snapshot) -> None:
    document = starter_config(**SNAPSHOT_CASES[case])
    bundles = _plan(tmp_path, document)

    snapshot.snapshot_dir = Path(__file__).parent / "snapshots" / "bundle" / case
    for bundle in bundles:
        files = _snapshot_files(bundle)
        assert "PRIVATE KEY" not in "".join(files.values())
        snapshot.assert_match_dir(files, bundle.master.name)


def test_bundle_file_layout_and_modes(built) -> None:
    bundle = built[0].bundle
    modes = {bundle_file.path: oct(bundle_file.mode) for bundle_file in bundle.files}

    assert modes == {
        "MANIFEST.json": "0o644",
        "README.txt": "0o644",
        "SHA256SUMS": "0o644",
        "install.sh": "0o755",
        "rootfs/etc/kubernetes/cert/ca.pem": "0o644",
        "rootfs/etc/kubernetes/cert/kube-controller-manager-key.pem": "0o600",
        "rootfs/etc/kubernetes/cert/kube-controller-manager.pem": "0o644",
        "rootfs/etc/kubernetes/kube-controller-manager.kubeconfig": "0o600",
        "rootfs/etc/systemd/system/kube-controller-manager.service": "0o644",
    }


def test_checksums_cover_every_other_file(built) -> None:
    bundle = built[0].bundle
    listed = {}
    for line in bundle.file("SHA256SUMS").content.decode().splitlines():
        digest, path = line.split("  ", 1)
        listed[path] = digest

    expected = {f.path: f.sha256 for f in bundle.files if f.path != "SHA256SUMS"}
    assert listed == expected


def test_manifest_records_files_and_certificate(built) -> None:
    bundle = built[0].bundle
    manifest = json.loads(bundle.file("MANIFEST.json").content)
    certificate = bundle.issued.certificate

    assert manifest["master"] == {"name": "k8s-master1", "ip": "192.0.2.11"}
    assert manifest["kubernetesVersion"] == "1.34.1"
    assert manifest["certificate"]["serial"] == format(certificate.serial_number, "x")
    assert manifest["certificate"]["sans"] == ["localhost", "k8s-master1", "127.0.0.1", "192.0.2.11"]
    assert manifest["certificate"]["notAfter"] == "2027-01-15T12:00:00Z"
    assert manifest["certificate"]["notBefore"] == "2026-01-15T11:55:00Z"
    installed = {entry["installPath"]: entry for entry in manifest["files"]}
    assert installed["/etc/kubernetes/cert/kube-controller-manager-key.pem"]["mode"] == "0600"
    assert installed["/etc/kubernetes/kube-controller-manager.kubeconfig"]["mode"] == "0600"
    for entry in manifest["files"]:
        assert entry["sha256"] == bundle.file(entry["path"]).sha256


def test_manifest_contains_no_key_material(built) -> None:
    for result in built:
        manifest = result.bundle.file("MANIFEST.json").content.decode()
        key_pem = result.bundle.issued.key_pem
        assert "PRIVATE KEY" not in manifest
        assert base64.b64encode(key_pem).decode()[:40] not in manifest


def test_per_master_certificates_differ(built) -> None:
    serials = {result.bundle.issued.certificate.serial_number for result in built}
    keys = {result.bundle.issued.key_pem for result in built}

    assert len(serials) == 3
    assert len(keys) == 3


def test_shared_certificate_names_every_master(tmp_path: Path) -> None:
    bundles = _plan(tmp_path, starter_config(certificate={"perMaster": False}))
    certificates = {bundle.issued.cert_pem for bundle in bundles}
    assert len(certificates) == 1

    certificate = bundles[0].issued.certificate
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    addresses = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert addresses == {"127.0.0.1", "192.0.2.11", "192.0.2.12", "192.0.2.13"}


def test_kubeconfig_points_at_each_master(built) -> None:
    for result, ip in zip(built, ("192.0.2.11", "192.0.2.12", "192.0.2.13")):
        bundle = result.bundle
        kubeconfig = yaml.safe_load(bundle.file("rootfs/etc/kubernetes/kube-controller-manager.kubeconfig").content)
        assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://{ip}:6443"
        assert kubeconfig["clusters"][0]["name"] == "kubernetes"
        assert kubeconfig["users"][0]["name"] == "system:kube-controller-manager"
        assert kubeconfig["current-context"] == kubeconfig["contexts"][0]["name"]
        embedded = base64.b64decode(kubeconfig["users"][0]["user"]["client-certificate-data"])
        assert embedded == bundle.issued.cert_pem


def test_url_mode_uses_the_url_for_every_master(tmp_path: Path) -> None:
    document = starter_config(cluster={"apiServer": {"mode": "url", "url": "https://192.0.2.100:8443", "port": DELETE}})
    for bundle in _plan(tmp_path, document):
        manifest = json.loads(bundle.file("MANIFEST.json").content)
        assert manifest["apiServer"] == "https://192.0.2.100:8443"


def test_extra_args_override_add_and_remove(tmp_path: Path) -> None:
    document = starter_config(controllerManager={"extraArgs": {
        "kube-api-qps": "50", "concurrent-gc-syncs": None, "secure-port": "10300"}})
    bundle = _plan(tmp_path, document)[0]
    unit = next(f for f in bundle.files if f.path.endswith(".service")).content.decode()

    assert "  --kube-api-qps=50 \\\n" in unit
    assert "--concurrent-gc-syncs" not in unit
    assert "  --secure-port=10300 \\\n" in unit
    assert json.loads(bundle.file("MANIFEST.json").content)["service"]["securePort"] == 10300


def test_unit_flags_are_sorted(built) -> None:
    unit = built[0].bundle.file("rootfs/etc/systemd/system/kube-controller-manager.service").content.decode()
    names = re.findall(r"^  --([a-z0-9-]+)=", unit, flags=re.MULTILINE)
    assert names == sorted(names)
    assert len(names) > 20


def test_same_inputs_give_identical_tarballs(config_path: Path, tmp_path: Path) -> None:
    first = build(config_path, tmp_path / "a", seams=fixed_seams())
    second = build(config_path, tmp_path / "b", seams=fixed_seams())

    for one, two in zip(first, second):
        assert one.path.read_bytes() == two.path.read_bytes()
        assert one.sha256 == two.sha256


def test_tarball_and_key_modes_on_disk(built) -> None:
    for result in built:
        assert result.path.stat().st_mode & 0o777 == 0o600


def test_existing_bundle_needs_force(config_path: Path, tmp_path: Path) -> None:
    from kcmbundle.errors import OutputError

    out = tmp_path / "out"
    first = build(config_path, out, seams=fixed_seams())
    before = first[0].path.read_bytes()

    with pytest.raises(OutputError, match="bundle already exists: .*; pass --force"):
        build(config_path, out, seams=fixed_seams(FIXED_NOW.replace(day=16)))
    assert first[0].path.read_bytes() == before

    replaced = build(config_path, out, force=True, seams=fixed_seams(FIXED_NOW.replace(day=16)))
    assert replaced[0].path.read_bytes() != before
