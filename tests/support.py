"""Shared test helpers: fixed keys, a fixed clock, test CAs and configs, real tools."""

from __future__ import annotations

import copy
import functools
import glob
import itertools
import json
import os
import shutil
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from kcmbundle.pki import Seams, create_ca
from kcmbundle.starter import STARTER_CONFIG

FIXTURES = Path(__file__).parent / "fixtures"
KEYS = FIXTURES / "keys"

FIXED_NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=timezone.utc)
"""The clock of every reproducible test build."""


@functools.cache
def load_key(name: str):
    """Load the test key ``tests/fixtures/keys/<name>.pem``.

    RSA consistency checks are skipped because they cost about 70 ms a key and
    these files are the suite's own; keys are immutable, so one object is shared.
    """
    data = (KEYS / f"{name}.pem").read_bytes()
    return serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=True)


class FixtureKeys:
    """A key factory that hands out the stored test keys of each algorithm in order."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}

    def __call__(self, algorithm: str):
        index = self._used.get(algorithm, 0) + 1
        self._used[algorithm] = index
        path = KEYS / f"{algorithm}-{index}.pem"
        if not path.exists():
            raise AssertionError(f"no test key {path.name}; add one with openssl genpkey")
        return load_key(f"{algorithm}-{index}")


def fixed_seams(now: datetime = FIXED_NOW) -> Seams:
    """Return seams with the fixed clock, serials counting up from 0x1000 and the stored keys."""
    counter = itertools.count(0x1000)
    return Seams(clock=lambda: now, serial=lambda: next(counter), key_factory=FixtureKeys())


def write_ca(folder: Path, *, key_name: str = "ca-rsa-2048", now: datetime = FIXED_NOW,
             validity: timedelta = timedelta(days=3650), common_name: str = "kcmbundle-test-ca") -> tuple[Path, Path]:
    """Write a test CA signed with a stored key; return (cert path, key path)."""
    seams = Seams(clock=lambda: now, serial=lambda: 0xCA, key_factory=lambda _algorithm: load_key(key_name))
    cert_pem, key_pem = create_ca(common_name=common_name, key_algorithm="rsa-2048", validity=validity, seams=seams)
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "ca.pem", folder / "ca-key.pem"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    key_path.chmod(0o600)
    return cert_path, key_path


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively with ``changes``; a value of ``DELETE`` removes a key."""
    result = copy.deepcopy(base)
    for key, value in changes.items():
        if value is DELETE:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


DELETE = object()


def starter_config(**changes: Any) -> dict[str, Any]:
    """Return the starter config with ``changes`` merged in."""
    return merge(STARTER_CONFIG, changes)


def write_config(folder: Path, document: dict[str, Any] | None = None, *, with_ca: bool = True) -> Path:
    """Write ``document`` (default: the starter config) and a test CA under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if with_ca:
        write_ca(folder / "pki")
    path = folder / "cluster.json"
    path.write_text(json.dumps(document if document is not None else starter_config(), indent=2))
    return path


def extract(tarball: Path, destination: Path) -> Path:
    """Unpack a bundle tarball (built by these tests) and return its top folder."""
    with tarfile.open(tarball) as archive:
        archive.extractall(destination, filter="data")
        top = archive.getnames()[0].split("/")[0]
    return destination / top


def require_tool(name: str) -> str:
    """Return the path of a command-line tool, or skip the test when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed; .ci/run installs it")
    return path


def plain_kubectl() -> str:
    """Return a kubectl that does not contact the kubeconfig's server on its own.

    /usr/bin/kubectl on these machines is the Google Cloud SDK's dispatcher,
    which connects to the server before running any command, so the tests use
    KCMBUNDLE_TEST_KUBECTL, else the newest versioned kubectl.1.NN beside it.
    """
    configured = os.environ.get("KCMBUNDLE_TEST_KUBECTL")
    if configured:
        return configured
    candidates = glob.glob("/usr/lib/google-cloud-sdk/bin/kubectl.1.*")
    candidates.sort(key=lambda path: int(path.rsplit(".", 1)[1]))
    if not candidates:
        pytest.skip("no plain kubectl found; set KCMBUNDLE_TEST_KUBECTL to a kubectl binary")
    return candidates[-1]
