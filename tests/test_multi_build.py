"""Several clusters in one build, parallel key generation and the version fast path."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kcmbundle.build import MAX_KEYS_GUESSED, MAX_TAR_MTIME, archive_mtime, build_clusters, guess_key_algorithms
from kcmbundle.errors import UsageError
from kcmbundle.cli import app
from kcmbundle.keygen import MIN_KEYS_FOR_POOL, KeyMaker, generate_keys
from kcmbundle.pki import describe_key

from support import DELETE, fixed_seams, starter_config, write_ca, write_config

runner = CliRunner()


def _write_clusters(folder: Path, names: list[str]) -> list[Path]:
    write_ca(folder / "pki")
    paths = []
    for name in names:
        document = starter_config(cluster={"name": name}, ca={"cert": "../pki/ca.pem", "key": "../pki/ca-key.pem"})
        path = folder / name / "cluster.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(document))
        paths.append(path)
    return paths


def test_build_clusters_writes_each_cluster(tmp_path: Path) -> None:
    paths = _write_clusters(tmp_path / "configs", ["alpha", "beta"])
    outcomes = build_clusters(paths, tmp_path / "out", seams=fixed_seams())

    assert [outcome.cluster for outcome in outcomes] == ["alpha", "beta"]
    assert all(outcome.error is None for outcome in outcomes)
    for name in ("alpha", "beta"):
        tarballs = sorted(path.name for path in (tmp_path / "out" / name).glob("*.tar.gz"))
        assert tarballs == ["k8s-master1.tar.gz", "k8s-master2.tar.gz", "k8s-master3.tar.gz"]


def test_build_clusters_keeps_going_after_failure(tmp_path: Path) -> None:
    paths = _write_clusters(tmp_path / "configs", ["alpha", "broken", "gamma"])
    broken = json.loads(paths[1].read_text())
    broken["masters"][0]["ip"] = "10.0.0"
    paths[1].write_text(json.dumps(broken))

    outcomes = build_clusters(paths, tmp_path / "out", seams=fixed_seams())

    assert outcomes[0].error is None
    assert outcomes[2].error is None
    assert outcomes[1].error is not None
    assert "masters[0].ip: invalid IP address" in str(outcomes[1].error)
    assert not (tmp_path / "out" / "broken").exists()
    assert len(list((tmp_path / "out" / "gamma").glob("*.tar.gz"))) == 3


def test_build_clusters_rejects_duplicate_cluster_names(tmp_path: Path) -> None:
    first = write_config(tmp_path / "one")
    second = write_config(tmp_path / "two")

    outcomes = build_clusters([first, second], tmp_path / "out", seams=fixed_seams())

    assert outcomes[0].error is None
    assert "cluster name 'kubernetes' is also used by" in str(outcomes[1].error)


def test_build_clusters_matches_single_builds(tmp_path: Path) -> None:
    from kcmbundle.build import build

    paths = _write_clusters(tmp_path / "configs", ["alpha", "beta"])
    together = build_clusters(paths, tmp_path / "together", seams=fixed_seams())
    seams = fixed_seams()
    alone = [build(path, tmp_path / "alone", seams=seams) for path in paths]

    together_bytes = [result.path.read_bytes() for outcome in together for result in outcome.results]
    alone_bytes = [result.path.read_bytes() for results in alone for result in results]
    assert together_bytes == alone_bytes


def test_cli_build_all_prints_summary(tmp_path: Path) -> None:
    _write_clusters(tmp_path / "configs", ["alpha", "beta"])
    result = runner.invoke(app, ["build", "--all", str(tmp_path / "configs"), "--out", str(tmp_path / "out")])

    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 6
    summary = [line.split() for line in result.stderr.splitlines() if line.startswith(("alpha", "beta"))]
    assert [row[:3] for row in summary] == [["alpha", "3", "ok"], ["beta", "3", "ok"]]


def test_cli_build_several_reports_failed_cluster(tmp_path: Path) -> None:
    paths = _write_clusters(tmp_path / "configs", ["alpha", "beta"])
    document = json.loads(paths[0].read_text())
    document["ca"]["cert"] = "../pki/missing.pem"
    paths[0].write_text(json.dumps(document))

    result = runner.invoke(app, ["build", *map(str, paths), "--out", str(tmp_path / "out")])

    assert result.exit_code == 3, result.output
    assert f"error: {paths[0]}: ca.cert: file not found" in result.stderr
    assert len(result.stdout.splitlines()) == 3
    assert "failed" in result.stderr


def test_cli_build_without_config_is_usage_error() -> None:
    result = runner.invoke(app, ["build"])
    assert result.exit_code == 2, result.output
    assert "missing config" in result.stderr


def test_cli_master_needs_one_config(tmp_path: Path) -> None:
    paths = _write_clusters(tmp_path / "configs", ["alpha", "beta"])
    result = runner.invoke(app, ["build", *map(str, paths), "--master", "k8s-master1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "--master selects masters of one cluster" in result.stderr


def test_generate_keys_in_pool_returns_working_keys() -> None:
    requests = ["ecdsa-p256"] * 3 + ["rsa-2048"] * MIN_KEYS_FOR_POOL
    keys = generate_keys(requests, workers=2)

    assert [describe_key(key) for key in keys] == requests
    assert len({key.public_key().public_numbers() for key in keys}) == len(requests)


def test_generate_keys_injected_factory_keeps_order() -> None:
    calls = []

    def factory(algorithm: str):
        calls.append(algorithm)
        return object()

    generate_keys(["rsa-2048", "ecdsa-p256"] * 4, factory, workers=2)
    assert calls == ["rsa-2048", "ecdsa-p256"] * 4


def test_key_maker_ignores_a_wrong_guess() -> None:
    with KeyMaker(workers=2) as maker:
        maker.prefetch(["rsa-2048", "rsa-2048", "ecdsa-p384"])
        keys = list(maker.keys(["ecdsa-p256", "rsa-2048", "rsa-3072"]))

    assert [describe_key(key) for key in keys] == ["ecdsa-p256", "rsa-2048", "rsa-3072"]


def test_key_maker_hands_out_prefetched_keys_once() -> None:
    with KeyMaker(workers=2) as maker:
        maker.prefetch(["rsa-2048"] * 2)
        maker.prefetch(["rsa-2048"] * 2)
        keys = list(maker.keys(["rsa-2048"] * 3))

    assert [describe_key(key) for key in keys] == ["rsa-2048"] * 3
    assert len({key.public_key().public_numbers() for key in keys}) == 3


def test_key_maker_close_stops_workers_mid_key() -> None:
    maker = KeyMaker(workers=2)
    maker.prefetch(["rsa-4096"] * 4)
    assert len(multiprocessing.active_children()) == 2

    maker.close()

    assert multiprocessing.active_children() == []


def test_key_maker_injected_factory_skips_prefetch() -> None:
    calls = []

    def factory(algorithm: str):
        calls.append(algorithm)
        return algorithm

    with KeyMaker(factory, workers=2) as maker:
        maker.prefetch(["rsa-2048"] * 4)
        keys = list(maker.keys(["ecdsa-p256", "rsa-2048"]))

    assert keys == ["ecdsa-p256", "rsa-2048"]
    assert calls == ["ecdsa-p256", "rsa-2048"]


def test_guess_reads_raw_configs(tmp_path: Path) -> None:
    per_master = write_config(tmp_path / "a", starter_config(certificate={"keyAlgorithm": "ecdsa-p384"}))
    shared = write_config(tmp_path / "b", starter_config(certificate={"perMaster": False}))
    defaults = write_config(tmp_path / "c", starter_config(certificate=DELETE))
    unknown = write_config(tmp_path / "d", starter_config(certificate={"keyAlgorithm": "dsa-1024"}))
    broken = tmp_path / "broken.json"
    broken.write_text('{"masters": [')

    assert guess_key_algorithms([per_master, shared, broken, unknown, tmp_path / "missing.json"]) == [
        "ecdsa-p384"] * 3 + ["rsa-2048"]
    assert guess_key_algorithms([defaults]) == ["rsa-2048"] * 3
    assert guess_key_algorithms([defaults], ["k8s-master2"]) == ["rsa-2048"]


def test_guess_skips_pipes(tmp_path: Path) -> None:
    fifo = tmp_path / "cluster.json"
    os.mkfifo(fifo)

    assert guess_key_algorithms([fifo]) == []


def test_build_reads_config_from_pipe(tmp_path: Path) -> None:
    config = write_config(tmp_path / "cluster", starter_config(certificate={"keyAlgorithm": "ecdsa-p256"}))
    document = config.read_text().replace('"pki/', f'"{tmp_path}/cluster/pki/')

    completed = subprocess.run([sys.executable, "-m", "kcmbundle", "build", "/dev/stdin", "--out", str(tmp_path / "out")],
                               input=document, capture_output=True, text=True, timeout=120, check=False)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.count(".tar.gz") == 3


def test_settle_cancels_unstarted_guesses() -> None:
    with KeyMaker(workers=2) as maker:
        maker.prefetch(["rsa-4096"] * 8)
        maker.settle(["ecdsa-p256"])
        guessed = list(maker._pending["rsa-4096"])
        keys = list(maker.keys(["ecdsa-p256"]))

    # Only keys already handed to a worker (two running, one queued) remain.
    assert len(guessed) <= 3
    assert [describe_key(key) for key in keys] == ["ecdsa-p256"]


def test_same_config_twice_builds_once(tmp_path: Path) -> None:
    (path,) = _write_clusters(tmp_path / "configs", ["alpha"])
    again = path.parent / "." / path.name

    outcomes = build_clusters([path, again], tmp_path / "out", seams=fixed_seams())

    assert [outcome.cluster for outcome in outcomes] == ["alpha"]
    assert outcomes[0].error is None


def test_summary_names_each_path_once(tmp_path: Path) -> None:
    good, bad = _write_clusters(tmp_path / "configs", ["alpha", "beta"])
    bad.write_text('{"cluster": ')

    result = runner.invoke(app, ["build", str(good), str(bad), "--out", str(tmp_path / "out")])

    assert result.exit_code == 2, result.output
    assert f"error: {bad}: invalid JSON" in result.stderr
    assert f"{bad}: {bad}" not in result.stderr


def test_guess_is_capped(tmp_path: Path) -> None:
    masters = [{"name": f"m{i}", "ip": f"10.0.{i // 250}.{i % 250 + 1}"} for i in range(MAX_KEYS_GUESSED + 5)]
    path = write_config(tmp_path, starter_config(masters=masters))

    assert len(guess_key_algorithms([path])) == MAX_KEYS_GUESSED


def test_failed_cluster_keeps_next_key_algorithm(tmp_path: Path) -> None:
    # alpha fails before taking its RSA keys, because its bundles exist and
    # --force is off. beta must still get the ECDSA keys it requests.
    alpha, beta = _write_clusters(tmp_path / "configs", ["alpha", "beta"])
    document = json.loads(beta.read_text())
    document["certificate"]["keyAlgorithm"] = "ecdsa-p256"
    beta.write_text(json.dumps(document))
    build_clusters([alpha], tmp_path / "out", seams=fixed_seams())

    outcomes = build_clusters([alpha, beta], tmp_path / "out", seams=fixed_seams())

    assert "bundle already exists" in str(outcomes[0].error)
    assert outcomes[1].error is None
    assert {describe_key(result.bundle.issued.key) for result in outcomes[1].results} == {"ecdsa-p256"}


def test_version_fast_path_skips_typer() -> None:
    probe = "import sys; sys.argv = ['kcmbundle', '--version']; from kcmbundle.entry import main; main()"
    completed = subprocess.run([sys.executable, "-X", "importtime", "-c", probe],
                               capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0
    assert completed.stdout.startswith("kcmbundle ")
    assert "typer" not in completed.stderr


@pytest.mark.parametrize("value", ["²", "１２", "-1", "1e9", str(MAX_TAR_MTIME + 1)])
def test_source_date_epoch_invalid(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)

    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH=.* is invalid"):
        archive_mtime(fixed_seams())
