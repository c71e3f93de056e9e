"""Fixtures shared by the test modules; plain helpers live in support.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from kcmbundle.build import build
from kcmbundle.pki import Seams

from support import fixed_seams, write_config


@pytest.fixture
def seams() -> Seams:
    """Fixed clock, counting serials and stored keys, for reproducible builds."""
    return fixed_seams()


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """The starter config with a test CA, in a fresh folder."""
    return write_config(tmp_path / "cluster")


@pytest.fixture
def built(config_path: Path, tmp_path: Path, seams: Seams):
    """The starter config's three bundles, built with fixed keys and clock into tmp_path/out."""
    return build(config_path, tmp_path / "out", seams=seams)


@pytest.fixture(autouse=True)
def _no_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    # A SOURCE_DATE_EPOCH in the caller's environment would change every tarball.
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
