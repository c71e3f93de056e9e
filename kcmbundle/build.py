"""Build the bundles of one cluster: check everything, plan every bundle, then write them all.

Nothing is written until every master's bundle has been planned, and no
tarball is renamed into place until all of them are staged, so a failure
leaves the output folder as it was.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from kcmbundle.archive import discard, publish, remove_stale_temporaries, stage_file, tarball_bytes
from kcmbundle.bundle import Bundle, plan_bundles
from kcmbundle.cluster_checks import ClusterReport, assert_same_units, check_cluster
from kcmbundle.config import Config, Master, load_config
from kcmbundle.errors import OutputError, UsageError
from kcmbundle.lock import locked_folder
from kcmbundle.pki import CA, Seams, check_ca_outlives, load_ca

logger = logging.getLogger(__name__)

Planner = Callable[[Config, CA, Sequence[Master], Seams, Callable[[bytes], bytes] | None], list[Bundle]]
"""Signs and lays out the bundles of the given masters, like ``bundle.plan_bundles``."""


@dataclass(frozen=True)
class BuildResult:
    """One tarball written."""

    path: Path
    sha256: str
    bundle: Bundle


def select_masters(config: Config, names: Sequence[str]) -> list[Master]:
    """Return the masters named in ``names``, or all of them when it is empty.

    Raises:
        UsageError: a name is not a master of the config.
    """
    if not names:
        return list(config.masters)
    known = [master.name for master in config.masters]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(f"--master {unknown[0]}: master not found in {config.source}; "
                         f"choose from: {', '.join(known)}")
    return [master for master in config.masters if master.name in names]


def bundle_path(out_dir: Path, config: Config, master: Master) -> Path:
    """Return where ``master``'s tarball goes: ``<out>/<cluster>/<master>.tar.gz``."""
    return out_dir / config.cluster.name / f"{master.name}.tar.gz"


def archive_mtime(seams: Seams) -> int:
    """Return the timestamp for tarball entries: SOURCE_DATE_EPOCH when set, else the build clock.

    Raises:
        UsageError: SOURCE_DATE_EPOCH is set but not a non-negative integer.
    """
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        return int(seams.clock().timestamp())
    if not value.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is invalid; set it to a Unix time in seconds, "
                         "such as $(git log -1 --format=%ct), or unset it")
    return int(value)


def load_and_check(config_path: Path, seams: Seams, *, strict: bool = False,
                   on_report: Callable[[ClusterReport], None] | None = None) -> tuple[Config, CA]:
    """Load the config and its CA, raising ``ConfigError`` or ``CAError`` on any problem.

    This includes the whole-cluster checks of ``cluster_checks.check_cluster``,
    whose warnings and notes go to ``on_report`` once (``strict`` makes the
    warnings errors), and the CA expiring before a certificate issued now
    would, so that ``validate`` reports it too.
    """
    config = load_config(config_path)
    report = check_cluster(config, strict=strict)
    if on_report is not None:
        on_report(report)
    now = seams.clock()
    ca = load_ca(config.ca, now)
    check_ca_outlives(ca, now + config.certificate.validity)
    return config, ca


def build(
    config_path: Path,
    out_dir: Path,
    *,
    masters: Sequence[str] = (),
    force: bool = False,
    seams: Seams = Seams(),
    sign_key: Path | None = None,
    planner: Planner | None = None,
    strict: bool = False,
    on_report: Callable[[ClusterReport], None] | None = None,
) -> list[BuildResult]:
    """Build and write the tarballs of the selected masters.

    ``sign_key`` adds SHA256SUMS.sig, signed with that Ed25519 key, to each
    bundle. ``planner`` replaces ``plan_bundles``; ``kcmbundle renew`` uses
    it to reuse old keys. ``strict`` and ``on_report`` are as for
    ``load_and_check``.

    Raises:
        ConfigError, CAError, UsageError: the input is invalid; nothing was written.
        OutputError: a tarball exists and ``force`` is false, or writing failed;
        no tarball was replaced.
    """
    signer = None
    if sign_key is not None:
        from kcmbundle.signing import load_signer

        signer = load_signer(sign_key)
    config, ca = load_and_check(config_path, seams, strict=strict, on_report=on_report)
    selected = select_masters(config, masters)
    mtime = archive_mtime(seams)
    targets = {master.name: bundle_path(out_dir, config, master) for master in selected}

    # Nothing is created in the output folder before the input is known to be valid.
    cluster_dir = out_dir / config.cluster.name
    with locked_folder(cluster_dir):
        for path in remove_stale_temporaries(cluster_dir, ".tar.gz"):
            logger.debug("removed %s, left by an interrupted build", path)
        if not force:
            _reject_existing(list(targets.values()))
        bundles = (planner or plan_bundles)(config, ca, selected, seams, signer)
        unit_path = "rootfs" + str(config.paths.unit)
        assert_same_units({bundle.master.name: bundle.file(unit_path).content.decode() for bundle in bundles})
        return _write_all(bundles, targets, mtime, force=force)


def _reject_existing(paths: list[Path]) -> None:
    existing = [path for path in paths if path.exists()]
    if existing:
        listed = ", ".join(str(path) for path in existing)
        raise OutputError(f"bundle already exists: {listed}; pass --force to replace "
                          f"{'it' if len(existing) == 1 else 'them'}")


def _write_all(bundles: list[Bundle], targets: dict[str, Path], mtime: int, *, force: bool) -> list[BuildResult]:
    staged = []
    results = []
    try:
        for bundle in bundles:
            data = tarball_bytes(bundle, mtime)
            path = targets[bundle.master.name]
            staged.append(stage_file(path, data))
            results.append(BuildResult(path, hashlib.sha256(data).hexdigest(), bundle))
        for item in staged:
            publish(item, force=force)
            logger.debug("wrote %s", item.target)
    finally:
        for item in staged:
            discard(item)
    return results
