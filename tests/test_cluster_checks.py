"""Whole-cluster checks: signers, node CIDRs, delegated auth, leader election, one flag set per cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kcmbundle.build import build
from kcmbundle.cli import app
from kcmbundle.cluster_checks import assert_same_units, check_cluster, controller_enabled
from kcmbundle.config import load_config
from kcmbundle.errors import ConfigError

from support import DELETE, fixed_seams, starter_config, write_config

runner = CliRunner()

EXTRA = "controllerManager.extraArgs."


def load(tmp_path: Path, extra_args: dict | None = None, *, minor: int = 30, cluster: dict | None = None,
         **changes):
    document = starter_config(cluster={"kubernetesVersion": f"1.{minor}", **(cluster or {})}, **changes)
    if extra_args is not None:
        document["controllerManager"]["extraArgs"] = extra_args
    return load_config(write_config(tmp_path / "cluster", document, with_ca=False))


def errors_of(config) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        check_cluster(config)
    return [str(problem) for problem in caught.value.problems]


def flag_names(report) -> set[str]:
    return {flag.name for flag in report.flags}


# ---------------------------------------------------------------------------
# --controllers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("controllers", "minor", "expected"), [
    ("*", 30, True),
    ("*,bootstrapsigner,tokencleaner", 30, True),
    ("*,-csrsigning", 30, False),
    ("-csrsigning,*", 30, False),
    ("*,-certificatesigningrequest-signing-controller", 28, False),
    ("csrsigning,-csrsigning", 30, True),
    ("csrsigning", 24, True),
    ("certificatesigningrequest-signing-controller", 28, True),
    ("deployment,replicaset", 30, False),
])
def test_controller_enabled_csr_signer(controllers: str, minor: int, expected: bool) -> None:
    name = "certificatesigningrequest-signing-controller"
    assert controller_enabled(controllers, name, minor) is expected


def test_star_skips_disabled_by_default() -> None:
    assert controller_enabled("*", "bootstrap-signer-controller", 30) is False
    assert controller_enabled("*,bootstrapsigner", "bootstrap-signer-controller", 30) is True


# ---------------------------------------------------------------------------
# CSR signer and service-account key
# ---------------------------------------------------------------------------


def test_signing_key_null_with_signer_enabled_is_error(tmp_path: Path) -> None:
    errors = errors_of(load(tmp_path, {"cluster-signing-key-file": None}))

    assert len(errors) == 1
    assert errors[0].startswith(EXTRA + "cluster-signing-key-file: removed while the CSR signing controller is enabled")
    assert "-csrsigning" in errors[0]


def test_signing_cert_null_with_signer_enabled_is_error(tmp_path: Path) -> None:
    errors = errors_of(load(tmp_path, {"cluster-signing-cert-file": None}))

    assert [error.split(":")[0] for error in errors] == [EXTRA + "cluster-signing-cert-file"]


@pytest.mark.parametrize("disable", ["-csrsigning", "-certificatesigningrequest-signing-controller"])
def test_signer_disabled_allows_key_removal(disable: str, tmp_path: Path) -> None:
    extra_args = {"cluster-signing-key-file": None, "controllers": f"*,{disable},bootstrapsigner,tokencleaner"}
    report = check_cluster(load(tmp_path, extra_args, minor=30))

    assert "cluster-signing-key-file" not in flag_names(report)
    warnings = [str(problem) for problem in report.warnings]
    assert len(warnings) == 1
    assert warnings[0].startswith(EXTRA + "controllers: the CSR signing controller is disabled")
    assert "kubelet TLS bootstrap" in warnings[0]


def test_signer_disabled_drops_host_key_from_manifest(tmp_path: Path) -> None:
    document = starter_config()
    document["controllerManager"]["extraArgs"] = {"cluster-signing-key-file": None,
                                                  "controllers": "*,-csrsigning,bootstrapsigner,tokencleaner"}
    path = write_config(tmp_path / "cluster", document)

    results = build(path, tmp_path / "out", masters=["k8s-master1"], seams=fixed_seams())

    manifest = json.loads(results[0].bundle.file("MANIFEST.json").content)
    purposes = [entry["purpose"] for entry in manifest["hostFiles"]]
    assert not any("cluster-signing-key-file" in purpose for purpose in purposes)
    assert any("service-account-private-key-file" in purpose for purpose in purposes)


def test_signing_key_string_still_owned_by_paths(tmp_path: Path) -> None:
    document = starter_config()
    document["controllerManager"]["extraArgs"] = {"cluster-signing-key-file": "/etc/other/ca-key.pem"}

    with pytest.raises(ConfigError, match=r"is set by a config field \(got .*\)\. Remove it and set paths\.clusterSigningKey"):
        load_config(write_config(tmp_path / "cluster", document, with_ca=False))


def test_other_owned_flag_null_rejected(tmp_path: Path) -> None:
    document = starter_config()
    document["controllerManager"]["extraArgs"] = {"kubeconfig": None}

    with pytest.raises(ConfigError, match="controllerManager.extraArgs.kubeconfig: is set by a config field"):
        load_config(write_config(tmp_path / "cluster", document, with_ca=False))


def test_per_signer_files_replace_default_pair(tmp_path: Path) -> None:
    extra_args = {"cluster-signing-cert-file": None, "cluster-signing-key-file": None,
                  "cluster-signing-kubelet-client-cert-file": "/etc/kubernetes/cert/kubelet-ca.pem",
                  "cluster-signing-kubelet-client-key-file": "/etc/kubernetes/cert/kubelet-ca-key.pem"}
    report = check_cluster(load(tmp_path, extra_args))

    assert report.warnings == ()


def test_per_signer_files_with_default_pair_is_error(tmp_path: Path) -> None:
    extra_args = {"cluster-signing-kubelet-client-cert-file": "/etc/kubernetes/cert/kubelet-ca.pem"}
    errors = errors_of(load(tmp_path, extra_args))

    assert len(errors) == 2
    assert all("cannot be combined with per-signer files" in error for error in errors)


def test_service_account_key_null_is_error(tmp_path: Path) -> None:
    errors = errors_of(load(tmp_path, {"service-account-private-key-file": None}))

    assert len(errors) == 1
    assert errors[0].startswith(EXTRA + "service-account-private-key-file: removed while the service-account "
                                        "token controller is enabled")


def test_service_account_key_null_with_controller_off(tmp_path: Path) -> None:
    extra_args = {"service-account-private-key-file": None,
                  "controllers": "*,-serviceaccount-token,bootstrapsigner,tokencleaner"}
    report = check_cluster(load(tmp_path, extra_args))

    assert "service-account-private-key-file" not in flag_names(report)
    assert report.warnings == ()


# ---------------------------------------------------------------------------
# Delegated authentication and authorization
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["authentication-kubeconfig", "authorization-kubeconfig"])
def test_removed_auth_kubeconfig_warns_403(name: str, tmp_path: Path) -> None:
    report = check_cluster(load(tmp_path, {name: None}))

    warnings = [str(problem) for problem in report.warnings]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{EXTRA}{name}: without --{name}")
    assert "/metrics returns 403" in warnings[0]
    assert name not in flag_names(report)


def test_removed_auth_kubeconfig_strict_fails(tmp_path: Path) -> None:
    config = load(tmp_path, {"authorization-kubeconfig": None})

    with pytest.raises(ConfigError, match="--strict turns warnings into errors"):
        check_cluster(config, strict=True)


# ---------------------------------------------------------------------------
# Node CIDRs
# ---------------------------------------------------------------------------


def test_mask_not_longer_than_cluster_prefix(tmp_path: Path) -> None:
    config = load(tmp_path, {"allocate-node-cidrs": "true", "node-cidr-mask-size": "24"},
                  cluster={"clusterCIDR": "172.30.0.0/25"})
    errors = errors_of(config)

    assert len(errors) == 1
    assert errors[0].startswith(EXTRA + "node-cidr-mask-size: node subnet prefix /24 must be longer than "
                                        "the cluster CIDR prefix /25")


@pytest.mark.parametrize("cluster_cidr", ["172.30.0.0/25", "172.30.0.0/24"])
def test_config_mask_not_longer_than_cluster_prefix(cluster_cidr: str, tmp_path: Path) -> None:
    errors = errors_of(load(tmp_path, {}, cluster={"clusterCIDR": cluster_cidr, "nodeCIDRMaskSize": 24}))

    assert len(errors) == 1
    assert errors[0].startswith("cluster.nodeCIDRMaskSize: node subnet prefix /24 must be longer than the cluster "
                                f"CIDR prefix /{cluster_cidr.split('/')[1]}")


def test_mask_of_other_family_is_error(tmp_path: Path) -> None:
    errors = errors_of(load(tmp_path, {"node-cidr-mask-size": "64"}))

    assert len(errors) == 1
    assert "longer than an IPv4 address" in errors[0]


def test_ipv6_subnet_count_limit(tmp_path: Path) -> None:
    cluster = {"serviceCIDR": "fd00:10:96::/112", "clusterCIDR": "fd00:10:244::/48"}
    masters = [{"name": "cp-a", "ip": "2001:db8::11"}]
    errors = errors_of(load(tmp_path, {"node-cidr-mask-size": "80"}, cluster=cluster, masters=masters))

    assert len(errors) == 1
    assert "at most 2^16 for IPv6" in errors[0]


def test_capacity_below_masters_is_error(tmp_path: Path) -> None:
    errors = errors_of(load(tmp_path, {}, cluster={"clusterCIDR": "172.30.0.0/23"}))

    assert len(errors) == 1
    assert errors[0].startswith("cluster.clusterCIDR: 172.30.0.0/23 holds 2 node subnets of /24, fewer than the 3 "
                                "nodes expected (the number of masters)")


def test_capacity_below_expected_nodes_is_error(tmp_path: Path) -> None:
    errors = errors_of(load(tmp_path, {}, cluster={"clusterCIDR": "172.30.0.0/20", "expectedNodes": 100}))

    assert len(errors) == 1
    assert "holds 16 node subnets of /24, fewer than the 100 nodes expected (cluster.expectedNodes)" in errors[0]
    assert "Widen cluster.clusterCIDR to /17 or shorter" in errors[0]


def test_capacity_exactly_enough(tmp_path: Path) -> None:
    report = check_cluster(load(tmp_path, {}, cluster={"clusterCIDR": "172.30.0.0/16", "expectedNodes": 256}))

    assert report.warnings == ()


def test_mask_without_allocation_warns_and_is_dropped(tmp_path: Path) -> None:
    config = load(tmp_path, {"allocate-node-cidrs": "false"}, cluster={"nodeCIDRMaskSize": 26})
    report = check_cluster(config)

    assert "node-cidr-mask-size" not in flag_names(report)
    assert [problem.path for problem in report.warnings] == ["cluster.nodeCIDRMaskSize"]
    assert "does nothing without --allocate-node-cidrs=true" in report.warnings[0].message


def test_default_mask_without_allocation_dropped_silently(tmp_path: Path) -> None:
    report = check_cluster(load(tmp_path, {"allocate-node-cidrs": "false"}))

    assert "node-cidr-mask-size" not in flag_names(report)
    assert report.warnings == ()


def test_allocation_without_cluster_cidr_is_error(tmp_path: Path) -> None:
    errors = errors_of(load(tmp_path, {"allocate-node-cidrs": "true"}, cluster={"clusterCIDR": DELETE}))

    assert len(errors) == 1
    assert errors[0].startswith(EXTRA + "allocate-node-cidrs: --allocate-node-cidrs=true needs a pod range")


def test_dual_stack_single_mask_is_error(tmp_path: Path) -> None:
    cluster = {"serviceCIDR": "10.254.0.0/16,fd00:10:96::/112", "clusterCIDR": "172.30.0.0/16,fd00:10:244::/56"}
    errors = errors_of(load(tmp_path, {"node-cidr-mask-size": "24"}, cluster=cluster))

    assert len(errors) == 1
    assert "rejects --node-cidr-mask-size with a dual-stack cluster CIDR" in errors[0]


def test_dual_stack_family_masks_checked(tmp_path: Path) -> None:
    cluster = {"serviceCIDR": "10.254.0.0/16,fd00:10:96::/112", "clusterCIDR": "172.30.0.0/16,fd00:10:244::/56"}
    errors = errors_of(load(tmp_path, {"node-cidr-mask-size-ipv6": "48"}, cluster=cluster))

    assert len(errors) == 1
    assert errors[0].startswith(EXTRA + "node-cidr-mask-size-ipv6: node subnet prefix /48 must be longer")


def test_family_mask_without_family_warns(tmp_path: Path) -> None:
    report = check_cluster(load(tmp_path, {"node-cidr-mask-size-ipv6": "64"}))

    assert "node-cidr-mask-size-ipv6" not in flag_names(report)
    assert "has no IPv6 range" in report.warnings[0].message


# ---------------------------------------------------------------------------
# Leader election
# ---------------------------------------------------------------------------


def test_lease_durations_ordered(tmp_path: Path) -> None:
    errors = errors_of(load(tmp_path, {"leader-elect-lease-duration": "10s", "leader-elect-renew-deadline": "15s"}))

    assert len(errors) == 1
    assert "--leader-elect-renew-deadline must be shorter than --leader-elect-lease-duration" in errors[0]


@pytest.mark.parametrize(("minor", "fails"), [(26, False), (27, True), (36, True)])
def test_lock_must_be_leases_from_1_27(minor: int, fails: bool, tmp_path: Path) -> None:
    config = load(tmp_path, {"leader-elect-resource-lock": "endpointsleases"}, minor=minor)

    if fails:
        assert [error.split(":")[0] for error in errors_of(config)] == [EXTRA + "leader-elect-resource-lock"]
    else:
        assert check_cluster(config).warnings == ()


# ---------------------------------------------------------------------------
# Through the command line
# ---------------------------------------------------------------------------


def cli(tmp_path: Path, *args: str, document: dict | None = None):
    path = write_config(tmp_path / "cli", document or starter_config())
    return runner.invoke(app, [args[0], *args[1:], str(path)]), path


def test_cli_three_masters_without_leader_election(tmp_path: Path) -> None:
    document = starter_config(controllerManager={"leaderElect": False})
    result, _ = cli(tmp_path, "validate", document=document)

    assert result.exit_code == 2, result.output
    assert "error: controllerManager.leaderElect: must be true with 3 masters" in result.stderr


def test_cli_mask_longer_than_cluster_cidr(tmp_path: Path) -> None:
    document = starter_config(cluster={"clusterCIDR": "172.30.0.0/25"})
    document["controllerManager"]["extraArgs"] = {"allocate-node-cidrs": "true", "node-cidr-mask-size": "24"}
    result, _ = cli(tmp_path, "validate", document=document)

    assert result.exit_code == 2, result.output
    assert "error: controllerManager.extraArgs.node-cidr-mask-size: node subnet prefix /24" in result.stderr


def test_cli_build_notes_once_per_build(tmp_path: Path) -> None:
    document = starter_config(cluster={"kubernetesVersion": "1.31"})
    path = write_config(tmp_path / "cli", document)

    result = runner.invoke(app, ["build", "--out", str(tmp_path / "out"), str(path)])

    assert result.exit_code == 0, result.output
    assert result.stderr.count("--concurrent-service-syncs=2") == 1
    assert result.stderr.count("--pod-eviction-timeout=6m") == 1
    assert "warning:" not in result.stderr


def test_cli_build_strict_writes_nothing(tmp_path: Path) -> None:
    document = starter_config()
    document["controllerManager"]["extraArgs"] = {"authentication-kubeconfig": None}
    path = write_config(tmp_path / "cli", document)
    out = tmp_path / "out"

    result = runner.invoke(app, ["build", "--strict", "--out", str(out), str(path)])

    assert result.exit_code == 2, result.output
    assert "error: controllerManager.extraArgs.authentication-kubeconfig: " in result.stderr
    assert not list(out.rglob("*.tar.gz"))


def test_cli_build_warning_printed_once(tmp_path: Path) -> None:
    document = starter_config()
    document["controllerManager"]["extraArgs"] = {"authorization-kubeconfig": None}
    path = write_config(tmp_path / "cli", document)

    result = runner.invoke(app, ["build", "--out", str(tmp_path / "out"), str(path)])

    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: controllerManager.extraArgs.authorization-kubeconfig: ") == 1


@pytest.mark.parametrize("value", ["0", "00", "+0", "-0"])
def test_secure_port_zero_rejected(tmp_path: Path, value: str) -> None:
    document = starter_config()
    document["controllerManager"]["extraArgs"] = {"secure-port": value}
    path = write_config(tmp_path / "cluster", document)

    with pytest.raises(ConfigError, match="0 turns off kube-controller-manager's HTTPS endpoint"):
        check_cluster(load_config(path))


def test_cli_validate_lists_flag_and_ca_problems(tmp_path: Path) -> None:
    document = starter_config()
    document["controllerManager"]["extraArgs"] = {"no-such-flag": "1"}
    path = write_config(tmp_path / "cli", document)
    (tmp_path / "cli" / "pki" / "ca-key.pem").unlink()

    result = runner.invoke(app, ["validate", str(path)])

    assert result.exit_code == 2, result.output
    assert "error: controllerManager.extraArgs.no-such-flag: " in result.stderr
    assert "error: ca.key: file not found" in result.stderr


def test_cli_build_quiet_keeps_only_warnings(tmp_path: Path) -> None:
    document = starter_config()
    document["controllerManager"]["extraArgs"] = {"authorization-kubeconfig": None}
    path = write_config(tmp_path / "cli", document)

    loud = runner.invoke(app, ["build", "--out", str(tmp_path / "loud"), str(path)])
    quiet = runner.invoke(app, ["build", "--quiet", "--out", str(tmp_path / "quiet"), str(path)])

    assert "note: " in loud.stderr
    assert "[bundle] " in loud.stderr
    assert quiet.exit_code == 0, quiet.output
    assert "warning: controllerManager.extraArgs.authorization-kubeconfig: " in quiet.stderr
    assert "note: " not in quiet.stderr
    assert "[bundle] " not in quiet.stderr
    assert quiet.stdout.count(".tar.gz") == 3


@pytest.mark.parametrize("version", ["1.23", "1.37", "2.0", "banana"])
def test_cli_flags_invalid_version(version: str) -> None:
    result = runner.invoke(app, ["flags", "--version", version])

    assert result.exit_code == 2, result.output
    assert "1.24 to 1.36" in result.stderr


def test_cli_flags_defaults_to_newest() -> None:
    newest = runner.invoke(app, ["flags"])
    explicit = runner.invoke(app, ["flags", "--version", "1.36"])

    assert newest.exit_code == 0, newest.output
    assert newest.stdout == explicit.stdout
    assert "--pod-eviction-timeout" not in newest.stdout


def test_cli_flags_json_for_1_30() -> None:
    result = runner.invoke(app, ["flags", "--version", "1.30", "--json"])

    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["concurrent-service-syncs"]["status"] == "present"
    assert "port" not in rows


# ---------------------------------------------------------------------------
# One flag set per cluster
# ---------------------------------------------------------------------------


def test_every_master_gets_same_unit(built) -> None:
    units = {}
    for result in built:
        bundle = result.bundle
        units[bundle.master.name] = bundle.file("rootfs/etc/systemd/system/kube-controller-manager.service") \
            .content.decode()

    assert len(units) == 3
    assert_same_units(units)
    bodies = {"\n".join(line for line in text.splitlines() if not line.startswith("#")) for text in units.values()}
    assert len(bodies) == 1


def test_assert_same_units_catches_drift() -> None:
    units = {"a": "# a\nExecStart=/bin/true --x=1\n", "b": "# b\nExecStart=/bin/true --x=2\n"}

    with pytest.raises(AssertionError, match="differ between masters"):
        assert_same_units(units)
