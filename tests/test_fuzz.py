"""Property-based fuzzing of validate and build: success or a clean error, never a traceback or a partial file.

Configs come from two strategies: one built from schemas/kcmbundle.schema.json
(mostly valid values, so that builds get past validation), and one that
mutates those configs (deleted keys, swapped types, odd strings, huge numbers,
nested garbage). The number of examples is set by the "ci" profile and can
be raised with KCMBUNDLE_FUZZ_EXAMPLES.

Key generation is replaced by stored test keys so that a build costs
milliseconds: every RSA size gets the stored RSA-2048 key, every curve its
stored P-256 or P-384 key. The CA is real and written once per module.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import os
import shutil
import unicodedata
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import typer.testing
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner
from kcmbundle.cli import app
from kcmbundle.schema import load_schema

from support import load_key, write_ca

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("KCMBUNDLE_FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("KCMBUNDLE_FUZZ_RANDOM") is None,
)
FUZZ = settings.get_profile("ci")

CLEAN_EXIT_CODES = (0, 2, 3, 4)

# Values that pass the checks together (one IPv4 cluster), by dotted field path, so that
# generated configs often reach the build.
GOOD_VALUES: dict[str, list[Any]] = {
    "$schema": ["./kcmbundle.schema.json"],
    "cluster.name": ["kubernetes", "prod-1"],
    "cluster.kubernetesVersion": ["1.24", "1.28.3", "v1.30.4", "1.34.1", "1.36"],
    "cluster.serviceCIDR": ["10.254.0.0/16", "10.96.0.0/12"],
    "cluster.clusterCIDR": ["172.30.0.0/16", "10.244.0.0/16"],
    "cluster.nodeCIDRMaskSize": [24, 26],
    "cluster.apiServer.url": ["https://192.0.2.10:6443", "https://api.example.com:6443"],
    "ca.cert": ["pki/ca.pem"],
    "ca.key": ["pki/ca-key.pem"],
    "ca.passphraseEnv": ["KCMBUNDLE_FUZZ_PASSPHRASE"],
    "masters.name": ["k8s-master1", "k8s-master2", "cp-a", "m1"],
    "certificate.validity": ["8760h", "1h", "720h30m", "43800h"],
    "certificate.extraSANs": [[], ["192.0.2.100"], ["kcm.example.com", "192.0.2.101"]],
    "certificate.extraSANs.items": ["192.0.2.102", "kcm.example.org"],
    "paths.binary": ["/opt/k8s/bin/kube-controller-manager", "/usr/local/bin/kube-controller-manager"],
    "paths.certDir": ["/etc/kubernetes/cert", "/etc/kubernetes/pki"],
    "paths.kubeconfig": ["/etc/kubernetes/kube-controller-manager.kubeconfig"],
    "paths.unit": ["/etc/systemd/system/kube-controller-manager.service"],
    "paths.workingDir": ["/var/lib/kube-controller-manager"],
    "paths.clusterSigningKey": ["/etc/kubernetes/cert/ca-key.pem"],
    "paths.serviceAccountKey": ["/etc/kubernetes/cert/sa.key", "/etc/kubernetes/cert/ca-key.pem"],
    "controllerManager.extraArgs": [{}, {"horizontal-pod-autoscaler-sync-period": "10s"},
                                    {"kube-api-qps": "50", "kube-api-burst": "100"}],
}
OMIT = object()

# Strings that have broken parsers elsewhere: control characters, lone surrogates, shell and path syntax.
NASTY_STRINGS = ["", " ", "\n", "\x00", "\ud800", "\u202e", "é", "../../etc/passwd", "$(reboot)", "`id`",
                 "a" * 300, "-----BEGIN PRIVATE KEY-----", "1e999", "0x10", "null", "/dev/zero", "8760"]

JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**18, max_value=10**400)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | st.sampled_from(NASTY_STRINGS))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def mostly(usual: st.SearchStrategy, other: st.SearchStrategy, share: float = 0.9) -> st.SearchStrategy:
    """Draw from ``usual`` about ``share`` of the time, else from ``other``.

    one_of would not do: Hypothesis biases its branch choice, so that a
    duplicated branch does not raise its weight.
    """
    return st.floats(min_value=0, max_value=1).flatmap(lambda roll: usual if roll < share else other)


def strategy_for(node: dict[str, Any], path: str = "") -> st.SearchStrategy:
    """Return a strategy of mostly valid values for the schema ``node`` at dotted field ``path``."""
    if path in GOOD_VALUES:
        return mostly(st.sampled_from(GOOD_VALUES[path]), _schema_strategy(node, path))
    return _schema_strategy(node, path)


def _schema_strategy(node: dict[str, Any], path: str) -> st.SearchStrategy:
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if isinstance(kind, list):
        return st.one_of([_schema_strategy({**node, "type": one}, path) for one in kind])
    if kind == "object":
        return _object_strategy(node, path)
    if kind == "array":
        items = strategy_for(node.get("items", {}), f"{path}.items" if path != "masters" else path)
        if path == "masters":
            # Masters need distinct names and addresses; duplicates have their own corpus cases.
            return st.lists(items, min_size=1, max_size=4,
                            unique_by=(lambda master: str(master.get("name")), lambda master: str(master.get("ip"))))
        return st.lists(items, min_size=node.get("minItems", 0), max_size=4, unique=node.get("uniqueItems", False))
    if kind == "string":
        return _string_strategy(node, path)
    if kind == "integer":
        return mostly(st.integers(min_value=node.get("minimum"), max_value=node.get("maximum")), st.integers())
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return JSON_VALUES


def _object_strategy(node: dict[str, Any], path: str) -> st.SearchStrategy:
    properties = node.get("properties", {})
    if not properties and isinstance(node.get("additionalProperties"), dict):
        names = node.get("propertyNames", {}).get("pattern")
        keys = st.from_regex(names, fullmatch=True) if names else st.text(min_size=1, max_size=12)
        return st.dictionaries(keys, strategy_for(node["additionalProperties"]), max_size=3)
    required = set(node.get("required", []))
    # Each optional field is left out about half the time, so that most configs stay buildable.
    fields = {}
    for name, child in properties.items():
        value = strategy_for(child, f"{path}.{name}" if path else name)
        fields[name] = value if name in required else mostly(st.just(OMIT), value, 0.5)
    return st.fixed_dictionaries(fields).map(
        lambda document: {name: value for name, value in document.items() if value is not OMIT})


def _string_strategy(node: dict[str, Any], path: str) -> st.SearchStrategy:
    if path == "masters.ip":
        good = st.integers(min_value=1, max_value=254).map(lambda host: f"192.0.2.{host}")
    elif "pattern" in node:
        good = st.from_regex(node["pattern"], fullmatch=True)
    else:
        good = st.text(min_size=node.get("minLength", 0), max_size=20)
    # A valid value with a final newline slips past a regex "$" in Python unless the pattern is anchored with \Z.
    return mostly(good, st.text(max_size=20) | st.sampled_from(NASTY_STRINGS) | good.map(lambda value: value + "\n"))


def node_paths(document: Any, path: tuple = ()) -> list[tuple]:
    """Return the path of every node in a JSON document, the root included."""
    paths = [path]
    if isinstance(document, dict):
        for key, value in document.items():
            paths += node_paths(value, path + (key,))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            paths += node_paths(value, path + (index,))
    return paths


def mutate(data: st.DataObject, document: Any) -> Any:
    """Apply one random mutation to a copy of ``document``."""
    document = copy.deepcopy(document)
    path = data.draw(st.sampled_from(node_paths(document)), label="path")
    operation = data.draw(st.sampled_from(["delete", "replace", "rename", "add", "string"]), label="operation")
    if not path:
        return data.draw(JSON_VALUES) if operation == "replace" else document
    parent = document
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]

    if operation == "delete":
        del parent[last]
    elif operation == "replace":
        parent[last] = data.draw(JSON_VALUES, label="value")
    elif operation == "string":
        parent[last] = data.draw(st.text() | st.sampled_from(NASTY_STRINGS), label="string")
    elif operation == "rename" and isinstance(parent, dict):
        new_name = data.draw(st.text(max_size=12) | st.just(str(last) + "s") | st.just(str(last).lower()), label="name")
        parent[new_name] = parent.pop(last)
    elif operation == "add" and isinstance(parent[last], dict):
        parent[last][data.draw(st.text(max_size=12), label="key")] = data.draw(JSON_VALUES, label="value")
    return document


CONFIGS = strategy_for(load_schema())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    """A folder with a real test CA; each example writes its config there."""
    folder = tmp_path_factory.mktemp("fuzz")
    # An EC CA loads in microseconds; OpenSSL checks an RSA key for about 80 ms on every load.
    write_ca(folder / "pki", key_name="ca-ecdsa-p256", now=datetime.now(timezone.utc))
    return folder


@pytest.fixture(scope="module")
def stored_keys():
    """Make key generation return stored test keys, so that a build costs milliseconds."""
    keys = {"rsa": load_key("rsa-2048-1"), "secp256r1": load_key("ecdsa-p256-1"), "secp384r1": load_key("ecdsa-p384-1")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rsa, "generate_private_key", lambda public_exponent, key_size, backend=None: keys["rsa"])
        patch.setattr(ec, "generate_private_key", lambda curve, backend=None: keys[curve.name])
        yield


_counter = itertools.count()


@pytest.fixture(scope="module")
def command_built_once():
    """Build the Click command once: typer's CliRunner rebuilds it from the app on every call (about 70 ms)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", functools.cache(typer.testing._get_command))
        yield


def run_both(workspace: Path, text: str | bytes) -> None:
    """Run validate and build on one config and check that both end cleanly and agree."""
    config = workspace / "cluster.json"
    config.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", errors="surrogatepass"))
    out = workspace / f"out-{next(_counter)}"
    runner = CliRunner()
    env = {"KCMBUNDLE_FUZZ_PASSPHRASE": None, "SOURCE_DATE_EPOCH": None}

    validated = runner.invoke(app, ["validate", str(config)], env=env)
    built = runner.invoke(app, ["build", str(config), "--out", str(out)], env=env)

    for result in (validated, built):
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"{type(result.exception).__name__}: {result.exception}\n{result.stderr}")
        assert result.exit_code in CLEAN_EXIT_CODES, result.output
        assert "Traceback" not in result.output
        raw = [c for c in result.stderr if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Cs")]
        assert raw == [], f"raw control characters reach the terminal: {raw!r}"
        if result.exit_code != 0:
            assert "error: " in result.stderr, result.stderr
    if validated.exit_code != 0:
        assert built.exit_code == validated.exit_code, (validated.stderr, built.stderr)
    assert_no_partial_output(out, built.exit_code)
    shutil.rmtree(out, ignore_errors=True)


def assert_no_partial_output(out: Path, exit_code: int) -> None:
    if not out.exists():
        return
    files = [path for path in out.rglob("*") if path.is_file()]
    for path in files:
        assert not path.name.endswith(".tmp"), path
        assert path.name == ".kcmbundle.lock" or path.name.endswith(".tar.gz"), path
        if path.name.endswith(".tar.gz"):
            assert exit_code == 0, path
            with tarfile.open(path) as archive:
                for member in archive.getmembers():
                    if member.isfile():
                        archive.extractfile(member).read()


@FUZZ
@given(document=CONFIGS)
def test_generated_configs(workspace: Path, stored_keys: None, command_built_once: None, document: dict[str, Any]) -> None:
    run_both(workspace, json.dumps(document, ensure_ascii=False))


@FUZZ
@given(data=st.data())
def test_mutated_configs(workspace: Path, stored_keys: None, command_built_once: None, data: st.DataObject) -> None:
    document = data.draw(CONFIGS, label="config")
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="mutations")):
        document = mutate(data, document)
    # ASCII escapes let lone surrogates through the UTF-8 check into the parsed document.
    run_both(workspace, json.dumps(document, ensure_ascii=True))


@FUZZ
@given(text=st.binary(max_size=200) | st.text(max_size=200).map(lambda value: value.encode("utf-8", "surrogatepass")))
def test_arbitrary_bytes(workspace: Path, stored_keys: None, command_built_once: None, text: bytes) -> None:
    run_both(workspace, text)


def test_generated_configs_reach_the_build(workspace: Path, stored_keys: None, command_built_once: None) -> None:
    """The schema strategy must produce buildable configs, or the fuzzing above only tests validation."""
    exit_codes: list[int] = []

    @settings(max_examples=40, deadline=None, database=None, derandomize=True, phases=[Phase.generate])
    @given(document=CONFIGS)
    def attempt(document: dict[str, Any]) -> None:
        config = workspace / "reach.json"
        config.write_text(json.dumps(document))
        result = CliRunner().invoke(app, ["build", str(config), "--out", str(workspace / "reach-out")])
        shutil.rmtree(workspace / "reach-out", ignore_errors=True)
        exit_codes.append(result.exit_code)

    attempt()
    assert exit_codes.count(0) >= 4, sorted(exit_codes)
