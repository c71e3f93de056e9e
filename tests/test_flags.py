import json
import re
import tomllib
from pathlib import Path

import pytest

from kcmbundle import flags
from kcmbundle.flags import FlagStatus, check_controllers, check_flags, check_value, load_table, render_table
from kcmbundle.versions import SUPPORTED_MINORS

# The kube-controller-manager unit of the classic binary install guides.
CLASSIC_UNIT_FLAGS = {
    "profiling": "true",
    "cluster-name": "kubernetes",
    "controllers": "*,bootstrapsigner,tokencleaner",
    "kube-api-qps": "1000",
    "kube-api-burst": "2000",
    "leader-elect": "true",
    "use-service-account-credentials": "true",
    "concurrent-service-syncs": "2",
    "tls-cert-file": "/etc/kubernetes/cert/kube-controller-manager.pem",
    "tls-private-key-file": "/etc/kubernetes/cert/kube-controller-manager-key.pem",
    "authentication-kubeconfig": "/etc/kubernetes/kube-controller-manager.kubeconfig",
    "client-ca-file": "/etc/kubernetes/cert/ca.pem",
    "requestheader-allowed-names": "aggregator",
    "requestheader-client-ca-file": "/etc/kubernetes/cert/ca.pem",
    "requestheader-extra-headers-prefix": "X-Remote-Extra-",
    "requestheader-group-headers": "X-Remote-Group",
    "requestheader-username-headers": "X-Remote-User",
    "authorization-kubeconfig": "/etc/kubernetes/kube-controller-manager.kubeconfig",
    "cluster-signing-cert-file": "/etc/kubernetes/cert/ca.pem",
    "cluster-signing-key-file": "/etc/kubernetes/cert/ca-key.pem",
    "cluster-signing-duration": "876000h",
    "horizontal-pod-autoscaler-sync-period": "10s",
    "concurrent-deployment-syncs": "10",
    "concurrent-gc-syncs": "30",
    "node-cidr-mask-size": "24",
    "service-cluster-ip-range": "10.254.0.0/16",
    "pod-eviction-timeout": "6m",
    "terminated-pod-gc-threshold": "10000",
    "root-ca-file": "/etc/kubernetes/cert/ca.pem",
    "service-account-private-key-file": "/etc/kubernetes/cert/ca-key.pem",
    "kubeconfig": "/etc/kubernetes/kube-controller-manager.kubeconfig",
    "v": "4",
}

ALL_MINORS = list(SUPPORTED_MINORS)


def origins_for(values):
    return {name: f"controllerManager.extraArgs.{name}" for name in values}


def run(values, minor):
    return check_flags(values, minor, origins_for(values))


def messages(problems):
    return [str(problem) for problem in problems]


# ---------------------------------------------------------------------------
# Status per minor
# ---------------------------------------------------------------------------


P = FlagStatus.PRESENT
D = FlagStatus.DEPRECATED
N = FlagStatus.NOOP
R = FlagStatus.REMOVED
Y = FlagStatus.NOT_YET_INTRODUCED

# For each flag: (first minor after the range, status in the range), oldest range first.
EXPECTED_STATUS = {
    "port": [(37, R)],
    "address": [(37, R)],
    "horizontal-pod-autoscaler-use-rest-clients": [(37, R)],
    "experimental-cluster-signing-duration": [(25, D), (37, R)],
    "deleting-pods-qps": [(25, N), (37, R)],
    "deployment-controller-sync-period": [(25, P), (37, R)],
    "enable-taint-manager": [(25, P), (27, D), (37, R)],
    "pod-eviction-timeout": [(27, N), (37, R)],
    "logtostderr": [(26, D), (37, R)],
    "horizontal-pod-autoscaler-upscale-delay": [(31, N), (37, R)],
    "volume-host-allow-local-loopback": [(31, P), (37, R)],
    "concurrent-service-syncs": [(31, P), (37, N)],
    "concurrent-daemonset-syncs": [(32, Y), (37, P)],
    "concurrent-job-syncs": [(28, Y), (37, P)],
    "cluster-signing-duration": [(37, P)],
    "secure-port": [(37, P)],
    "bind-address": [(37, P)],
    "v": [(37, P)],
    "no-such-flag": [(37, FlagStatus.UNKNOWN)],
}


def expected_status(name, minor):
    for end, expected in EXPECTED_STATUS[name]:
        if minor < end:
            return expected
    raise AssertionError(f"no expected status for {name} in 1.{minor}")


@pytest.mark.parametrize("minor", ALL_MINORS)
@pytest.mark.parametrize("name", sorted(EXPECTED_STATUS))
def test_status_per_minor(name, minor):
    assert flags.status(name, minor) is expected_status(name, minor)


def test_status_rejects_unsupported_minor():
    with pytest.raises(ValueError, match="kcmbundle supports 1.24 to 1.36"):
        flags.status("v", 23)


@pytest.mark.parametrize("minor", ALL_MINORS)
def test_node_monitor_grace_period_default(minor):
    spec = load_table().spec("node-monitor-grace-period").at(minor)

    assert spec.default == ("40s" if minor < 32 else "50s")


# ---------------------------------------------------------------------------
# Required scenarios
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("minor", [27, 28, 31, 36])
def test_pod_eviction_timeout_removed_from_1_27(minor):
    report = run({"pod-eviction-timeout": "6m"}, minor)

    assert report.flags == {}
    assert report.warnings == []
    assert len(report.errors) == 1
    text = str(report.errors[0])
    assert text.startswith("controllerManager.extraArgs.pod-eviction-timeout: ")
    assert "was removed in Kubernetes 1.27" in text
    assert "--default-not-ready-toleration-seconds" in text
    assert "--default-unreachable-toleration-seconds" in text


@pytest.mark.parametrize("minor", [24, 25, 26])
def test_pod_eviction_timeout_dropped_before_1_27(minor):
    # Deprecated in 1.26 and ignored while taint-based eviction is on, so it is not emitted.
    report = run({"pod-eviction-timeout": "6m"}, minor)

    assert report.flags == {}
    assert report.errors == []
    assert len(report.warnings) == 1
    text = str(report.warnings[0])
    assert f"has no effect in Kubernetes 1.{minor}, so kcmbundle does not emit it" in text
    assert "--default-not-ready-toleration-seconds" in text


def test_pod_eviction_timeout_kept_without_taint_manager():
    report = run({"pod-eviction-timeout": "6m", "enable-taint-manager": "false"}, 26)

    assert report.errors == []
    assert report.flags == {"pod-eviction-timeout": "6m", "enable-taint-manager": "false"}
    warnings = messages(report.warnings)
    assert any("--pod-eviction-timeout is deprecated since Kubernetes 1.26 and removed in 1.27" in w for w in warnings)
    assert any("--enable-taint-manager is deprecated since Kubernetes 1.25 and removed in 1.27" in w for w in warnings)


def test_experimental_cluster_signing_duration_removed_in_1_25():
    report = run({"experimental-cluster-signing-duration": "876000h"}, 25)

    assert report.flags == {}
    assert len(report.errors) == 1
    text = str(report.errors[0])
    assert "was removed in Kubernetes 1.25" in text
    assert "Use --cluster-signing-duration instead" in text


def test_experimental_cluster_signing_duration_deprecated_in_1_24():
    report = run({"experimental-cluster-signing-duration": "876000h"}, 24)

    assert report.errors == []
    assert report.flags == {"experimental-cluster-signing-duration": "876000h"}
    assert "Use --cluster-signing-duration instead" in str(report.warnings[0])


@pytest.mark.parametrize("minor", ALL_MINORS)
def test_port_zero_rejected(minor):
    report = run({"port": "0"}, minor)

    assert report.flags == {}
    assert len(report.errors) == 1
    text = str(report.errors[0])
    assert "flag --port was removed in Kubernetes 1.24" in text
    assert "insecure" in text
    assert "--secure-port" in text


@pytest.mark.parametrize("minor", ALL_MINORS)
def test_concurrent_service_syncs(minor):
    report = run({"concurrent-service-syncs": "2"}, minor)

    assert report.errors == []
    if minor < 31:
        assert report.flags == {"concurrent-service-syncs": "2"}
        assert report.warnings == []
    else:
        assert report.flags == {}
        assert len(report.warnings) == 1
        assert f"--concurrent-service-syncs has no effect in Kubernetes 1.{minor}" in str(report.warnings[0])


@pytest.mark.parametrize("minor", ALL_MINORS)
def test_kube_api_qps_must_be_a_number(minor):
    report = run({"kube-api-qps": "fast"}, minor)

    assert report.flags == {}
    assert len(report.errors) == 1
    text = str(report.errors[0])
    assert "invalid value for flag --kube-api-qps" in text
    assert '(got "fast")' in text
    assert "decimal number" in text


@pytest.mark.parametrize("minor", ALL_MINORS)
def test_leader_elect_resource_lock_endpointsleases(minor):
    report = run({"leader-elect-resource-lock": "endpointsleases"}, minor)

    if minor < 27:
        assert report.errors == []
        assert report.flags == {"leader-elect-resource-lock": "endpointsleases"}
    else:
        assert report.flags == {}
        assert len(report.errors) == 1
        assert "invalid value for flag --leader-elect-resource-lock" in str(report.errors[0])
        assert "Write one of: leases" in str(report.errors[0])


@pytest.mark.parametrize("minor", ALL_MINORS)
def test_leases_lock_valid_on_every_minor(minor):
    assert run({"leader-elect-resource-lock": "leases"}, minor).errors == []


@pytest.mark.parametrize("minor", ALL_MINORS)
def test_classic_controllers_valid_on_every_minor(minor):
    value = "*,bootstrapsigner,tokencleaner"

    assert check_controllers(value, minor) == []
    report = run({"controllers": value}, minor)
    assert report.errors == []
    assert report.flags == {"controllers": value}


@pytest.mark.parametrize("minor", ALL_MINORS)
def test_unknown_controller_rejected(minor):
    errors = check_controllers("*,foo", minor)

    assert len(errors) == 1
    assert errors[0].startswith(f"controller 'foo' is not known to Kubernetes 1.{minor}; known controllers are ")
    assert "bootstrapsigner" in errors[0]
    report = run({"controllers": "*,foo"}, minor)
    assert report.flags == {}
    assert "controller 'foo' is not known" in str(report.errors[0])


@pytest.mark.parametrize("minor", ALL_MINORS)
def test_misspelled_controller_gets_suggestion(minor):
    errors = check_controllers("*,bootstrapsigne", minor)

    suggestion = "'bootstrapsigner'" if minor < 28 else "'bootstrapsigner' or 'bootstrap-signer-controller'"
    assert errors == [f"controller 'bootstrapsigne' is not known to Kubernetes 1.{minor}; did you mean {suggestion}?"]


@pytest.mark.parametrize("minor", ALL_MINORS)
def test_disable_service_controller_valid(minor):
    assert check_controllers("*,-service", minor) == []
    assert check_controllers("*,-route,-cloud-node-lifecycle", minor) == []


@pytest.mark.parametrize("minor", ALL_MINORS)
def test_canonical_controller_names_from_1_28(minor):
    errors = check_controllers("*,-node-ipam-controller,token-cleaner-controller", minor)

    if minor >= 28:
        assert errors == []
    else:
        assert errors == [
            f"controller 'node-ipam-controller' is not known to Kubernetes 1.{minor}; before 1.28 it is named 'nodeipam'",
            f"controller 'token-cleaner-controller' is not known to Kubernetes 1.{minor}; before 1.28 it is named 'tokencleaner'",
        ]


@pytest.mark.parametrize("minor", ALL_MINORS)
def test_selinux_warning_controller_from_1_32(minor):
    errors = check_controllers("*,selinux-warning-controller", minor)

    if minor >= 32:
        assert errors == []
    else:
        assert errors == [
            f"controller 'selinux-warning-controller' is not in Kubernetes 1.{minor}; it was introduced in 1.32"
        ]


def test_selinux_warning_controller_disabled_by_default():
    controller = load_table().controllers["selinux-warning-controller"]

    assert controller.is_disabled_by_default(32)
    assert not controller.is_disabled_by_default(31)
    assert load_table().controllers["bootstrap-signer-controller"].is_disabled_by_default(24)
    assert not load_table().controllers["deployment-controller"].is_disabled_by_default(30)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("*,,tokencleaner", ["item 2 is empty; remove the extra comma"]),
        ("", ["item 1 is empty; remove the extra comma"]),
        ("*,tokencleaner,", ["item 3 is empty; remove the extra comma"]),
    ],
)
def test_empty_controller_tokens(value, expected):
    assert check_controllers(value, 30) == expected


# ---------------------------------------------------------------------------
# The classic unit on every minor
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("minor", ALL_MINORS)
def test_classic_unit_flags(minor):
    report = run(CLASSIC_UNIT_FLAGS, minor)

    dropped = {"pod-eviction-timeout"}
    if minor >= 31:
        dropped.add("concurrent-service-syncs")
    expected_flags = {name: value for name, value in CLASSIC_UNIT_FLAGS.items() if name not in dropped}
    assert report.flags == expected_flags

    if minor < 27:
        assert report.errors == []
    else:
        assert [problem.path for problem in report.errors] == ["controllerManager.extraArgs.pod-eviction-timeout"]

    warned = sorted(problem.path.rsplit(".", 1)[1] for problem in report.warnings)
    expected_warned = sorted(dropped - {"pod-eviction-timeout"} | ({"pod-eviction-timeout"} if minor < 27 else set()))
    assert warned == expected_warned


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------


def test_unknown_flag_suggests_close_names():
    report = run({"kube-api-qp": "20"}, 30)

    assert report.flags == {}
    assert len(report.errors) == 1
    text = str(report.errors[0])
    assert "unknown kube-controller-manager flag --kube-api-qp for Kubernetes 1.30" in text
    assert "Did you mean --kube-api-qps" in text


def test_unknown_flag_without_match_names_listing_command():
    report = run({"zzzz-qqqq": "1"}, 30)

    assert "kcmbundle flags --version 1.30" in str(report.errors[0])


def test_flag_not_yet_introduced():
    report = run({"concurrent-daemonset-syncs": "4"}, 31)

    assert report.flags == {}
    text = str(report.errors[0])
    assert "flag --concurrent-daemonset-syncs is not in Kubernetes 1.31; it was introduced in 1.32" in text
    assert "set the Kubernetes version to 1.32 or later" in text


@pytest.mark.parametrize(
    ("key", "fragment", "fix"),
    [
        ("--kube-api-qps", "flag name '--kube-api-qps' starts with a dash", "as 'kube-api-qps'"),
        ("-v", "flag name '-v' starts with a dash", "as 'v'"),
        ("kube-api-qps=20", "flag name 'kube-api-qps=20' contains '='", "Use 'kube-api-qps' as the key and put '20' in the value"),
        ("Kube API QPS", "flag name 'Kube API QPS' is invalid", "lower case"),
        ("", "flag name is empty", "Remove the entry"),
    ],
)
def test_malformed_keys_rejected(key, fragment, fix):
    report = check_flags({key: "20"}, 30, {key: "controllerManager.extraArgs"})

    assert report.flags == {}
    assert len(report.errors) == 1
    assert report.errors[0].path == "controllerManager.extraArgs"
    assert fragment in report.errors[0].message
    assert fix in report.errors[0].fix


def test_underscore_names_are_normalised():
    report = run({"concurrent_rc_syncs": "10"}, 30)

    assert report.errors == []
    assert report.flags == {"concurrent-rc-syncs": "10"}
    assert "KCM reads it as --concurrent-rc-syncs" in str(report.warnings[0])


def test_same_flag_twice_is_an_error():
    report = run({"concurrent_rc_syncs": "10", "concurrent-rc-syncs": "5"}, 30)

    assert report.flags == {"concurrent-rc-syncs": "10"}
    assert "flag --concurrent-rc-syncs is set twice" in str(report.errors[0])


def test_non_string_value_rejected():
    report = run({"leader-elect": True}, 30)

    assert report.flags == {}
    assert "value of flag --leader-elect is not a string (got true)" in str(report.errors[0])


def test_origin_defaults_to_extra_args_path():
    report = check_flags({"port": "0"}, 30, {})

    assert report.errors[0].path == "controllerManager.extraArgs.port"


def test_origin_of_kcmbundle_default_is_kept():
    report = check_flags({"concurrent-service-syncs": "2"}, 31, {"concurrent-service-syncs": "controllerManager"})

    assert report.warnings[0].path == "controllerManager"


def test_unsupported_flag_rejected():
    report = run({"version": "true"}, 30)

    assert report.flags == {}
    assert "flag --version is not supported in a kcmbundle unit" in str(report.errors[0])


@pytest.mark.parametrize("minor", [26, 30, 36])
def test_klog_file_flags_removed_in_1_26(minor):
    report = run({"logtostderr": "false", "log-dir": "/var/log/kubernetes"}, minor)

    assert report.flags == {}
    assert [problem.message for problem in report.errors] == [
        f"flag --logtostderr was removed in Kubernetes 1.26 and KCM 1.{minor} exits on it",
        f"flag --log-dir was removed in Kubernetes 1.26 and KCM 1.{minor} exits on it",
    ]
    assert "journalctl -u kube-controller-manager" in report.errors[0].fix


# ---------------------------------------------------------------------------
# Leader election
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "error_paths"),
    [
        ({"leader-elect-lease-duration": "15s", "leader-elect-renew-deadline": "10s", "leader-elect-retry-period": "2s"}, []),
        ({"leader-elect-lease-duration": "10s", "leader-elect-renew-deadline": "10s"}, ["leader-elect-renew-deadline"]),
        ({"leader-elect-renew-deadline": "20s"}, ["leader-elect-renew-deadline"]),
        ({"leader-elect-retry-period": "9s"}, ["leader-elect-retry-period"]),
        ({"leader-elect": "false", "leader-elect-renew-deadline": "20s"}, []),
        ({"leader-elect-retry-period": "0s"}, ["leader-elect-retry-period"]),
    ],
)
def test_leader_election_durations(values, error_paths):
    report = run(values, 30)

    assert [problem.path.rsplit(".", 1)[1] for problem in report.errors] == error_paths


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


def spec_of(name, minor=30):
    return load_table().spec(name).at(minor)


@pytest.mark.parametrize("value", ["1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"])
def test_go_bool_words_accepted(value):
    assert check_value(spec_of("leader-elect"), value) is None


@pytest.mark.parametrize("value", ["yes", "no", "on", "tRUE", "", " true", "2"])
def test_other_bool_words_rejected(value):
    assert check_value(spec_of("leader-elect"), value) is not None


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("kube-api-burst", "2000", None),
        ("kube-api-burst", "2147483647", None),
        ("kube-api-burst", "2147483648", "2147483648 is greater than the maximum 2147483647"),
        ("kube-api-burst", "-1", "-1 is less than the minimum 0"),
        ("kube-api-burst", "20.5", "not a whole number"),
        ("kube-api-burst", "0x10", "not a whole number"),
        ("concurrent-gc-syncs", "0", "0 is less than the minimum 1"),
        ("terminated-pod-gc-threshold", "-5", None),
        ("secure-port", "10257", None),
        ("secure-port", "65536", "65536 is greater than the maximum 65535"),
        ("v", "4", None),
        ("v", "-1", "-1 is less than the minimum 0"),
        ("node-cidr-mask-size-ipv4", "33", "33 is greater than the maximum 32"),
        ("kube-api-qps", "1000", None),
        ("kube-api-qps", "0.5", None),
        ("kube-api-qps", "1e3", None),
        ("kube-api-qps", "-1", "-1 is less than the minimum 0"),
        ("kube-api-qps", "NaN", "not a decimal number"),
        ("kube-api-qps", "fast", "not a decimal number"),
        ("cluster-signing-duration", "876000h", None),
        ("cluster-signing-duration", "1h30m", None),
        ("cluster-signing-duration", "-1h", "a negative duration has no meaning here"),
        ("cluster-signing-duration", "10", "not a duration (missing unit after '10')"),
        ("cluster-signing-duration", "365d", "not a duration (unknown unit 'd')"),
        ("attach-detach-reconcile-sync-period", "500ms", "shorter than the minimum 1s"),
        ("bind-address", "0.0.0.0", None),
        ("bind-address", "::", None),
        ("bind-address", "", None),
        ("bind-address", "192.168.1.300", "not an IP address"),
        ("bind-address", "localhost", "not an IP address"),
        ("service-cluster-ip-range", "10.254.0.0/16", None),
        ("service-cluster-ip-range", "10.254.0.0/16,fd00::/108", None),
        ("service-cluster-ip-range", "10.254.0.1/16", "'10.254.0.1/16' has host bits set; the network is 10.254.0.0/16"),
        ("service-cluster-ip-range", "10.254.0.0", "'10.254.0.0' is not a CIDR: the /prefix length is missing"),
        ("service-cluster-ip-range", "10.0.0.0/16,10.1.0.0/16", "two CIDRs must be one IPv4 and one IPv6 (dual-stack)"),
        ("service-cluster-ip-range", "10.0.0.0/16,fd00::/108,10.1.0.0/16", "has 3 CIDRs; at most 2 are allowed"),
        ("requestheader-allowed-names", "aggregator", None),
        ("requestheader-allowed-names", "aggregator,,front-proxy", "has an empty item; remove the extra comma"),
        ("tls-cipher-suites", "TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384", None),
        ("tls-cipher-suites", "TLS_FAST", "TLS_FAST not allowed"),
        ("tls-min-version", "VersionTLS12", None),
        ("tls-min-version", "TLS1.2", "'TLS1.2' is not an allowed value"),
        ("root-ca-file", "/etc/kubernetes/cert/ca.pem", None),
        ("root-ca-file", "cert/ca.pem", "not an absolute path; systemd would resolve it against the working directory of the unit"),
        ("feature-gates", "RotateKubeletServerCertificate=true,kube:SELinuxMount=false", None),
        ("feature-gates", "RotateKubeletServerCertificate", "'RotateKubeletServerCertificate' not in the form Name=true or Name=false"),
        ("vmodule", "node*=4,garbagecollector=2", None),
        ("vmodule", "node*", "'node*' not in the form pattern=N"),
        ("cluster-name", "kubernetes", None),
        ("cluster-name", "kube\nrnetes", "contains a control character such as a newline or tab"),
        ("controllers", "*,-ttl", None),
        ("controllers", "*,TTL", "'TTL' is not *, NAME or -NAME"),
    ],
)
def test_check_value(name, value, problem):
    assert check_value(spec_of(name), value) == problem


@pytest.mark.parametrize("minor", ALL_MINORS)
def test_cloud_provider_values(minor):
    spec = spec_of("cloud-provider", minor)

    assert check_value(spec, "external") is None
    assert check_value(spec, "") is None
    if minor < 31:
        assert check_value(spec, "aws") is None
    else:
        assert check_value(spec, "aws") == "'aws' is not an allowed value"


# ---------------------------------------------------------------------------
# Listing and data file
# ---------------------------------------------------------------------------


def test_render_table_text():
    text = render_table(30, as_json=False)
    lines = text.splitlines()

    assert re.fullmatch(r"FLAG +TYPE +DEFAULT +STATUS +REPLACEMENT", lines[0])
    row = next(line for line in lines if line.startswith("--cluster-signing-duration "))
    assert row.split() == ["--cluster-signing-duration", "duration", "8760h0m0s", "present", "-"]
    assert not any(line.startswith("--pod-eviction-timeout ") for line in lines)
    assert not any(line.startswith("--port ") for line in lines)


def test_render_table_json():
    rows = json.loads(render_table(26, as_json=True))
    by_name = {row["name"]: row for row in rows}

    assert isinstance(rows, list)
    assert by_name["pod-eviction-timeout"]["status"] == "noop"
    assert by_name["pod-eviction-timeout"]["removed"] == "1.27"
    assert "experimental-cluster-signing-duration" not in by_name
    assert by_name["leader-elect-resource-lock"]["values"] == ["leases", "endpointsleases", "configmapsleases"]
    assert by_name["enable-taint-manager"]["status"] == "deprecated"
    assert set(rows[0]) == {
        "name", "type", "default", "status", "replacement", "values",
        "introduced", "deprecated", "noop", "removed", "confidence",
    }


def test_render_table_json_introduced_flags():
    names_131 = {row["name"] for row in json.loads(render_table(31, as_json=True))}
    names_132 = {row["name"] for row in json.loads(render_table(32, as_json=True))}

    assert "concurrent-daemonset-syncs" not in names_131
    assert "concurrent-daemonset-syncs" in names_132


def test_load_table_is_cached():
    assert load_table() is load_table()


def test_json_table_is_the_toml_table(snapshot):
    # kcmbundle reads kcm-flags.json, converted from the reviewed TOML file
    # for speed; refresh it with: pytest tests/test_flags.py --snapshot-update
    data = Path(__file__).resolve().parent.parent / "kcmbundle" / "data"
    table = tomllib.loads((data / "kcm-flags.toml").read_text(encoding="utf-8"))
    snapshot.snapshot_dir = data
    snapshot.assert_match(json.dumps(table, indent=1, ensure_ascii=False) + "\n", "kcm-flags.json")


def test_data_file_references_are_consistent():
    table = load_table()
    source_ref = re.compile(r"[\w.-]+/[\w.-]+#[0-9]+")

    for spec in table.flags.values():
        if not spec.sources:
            assert spec.confidence == "inferred", f"{spec.name} has no sources"
            assert spec.note.startswith("NOTE:"), f"{spec.name} has no sources"
        for source in spec.sources + tuple(s for c in spec.changes for s in c.overrides.get("sources", ())):
            assert source in table.sources or source_ref.fullmatch(source), f"{spec.name}: bad source {source}"
        if spec.replacement:
            assert spec.replacement in table.flags, f"{spec.name}: unknown replacement"
        if spec.removed is not None:
            assert spec.replacement or spec.reason, f"{spec.name}: removed without a replacement or reason"
        if spec.noop_unless:
            assert spec.noop_unless[0] in table.flags
        for minor in ALL_MINORS:
            current = spec.at(minor)
            if current.default is not None and current.type not in ("controllers",):
                assert check_value(current, current.default) is None, f"{spec.name}: default invalid in 1.{minor}"

    for controller in table.controllers.values():
        for source in controller.sources:
            assert source in table.sources or source_ref.fullmatch(source), f"{controller.name}: bad source"
