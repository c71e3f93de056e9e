"""Build the bundles of one cluster, or of many: check everything, plan every bundle, then write them all.

Nothing is written until every master's bundle has been planned, and no
tarball is renamed into place until all of them are staged, so a failure
leaves the output folder as it was.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Sequence

from kcmbundle import interrupts
from kcmbundle.archive import discard, publish, remove_stale_temporaries, stage_file, tarball_bytes
from kcmbundle.bundle import Bundle, iter_bundles, keys_needed
from kcmbundle.cluster_checks import ClusterReport, assert_same_units
from kcmbundle.config import DEFAULT_KEY_ALGORITHM, Config, Master, read_document
from kcmbundle.errors import KcmbundleError, OutputError, UsageError
from kcmbundle.keygen import KeyMaker
from kcmbundle.lock import locked_folder
from kcmbundle.pki import CA, KEY_ALGORITHMS, PrivateKey, Seams
from kcmbundle.validation import load_and_check

logger = logging.getLogger(__name__)

MAX_TAR_MTIME = 8**11 - 1
"""Latest entry time that fits the tar header's 11 octal digits; GNU tar rejects later ones."""

MAX_KEYS_GUESSED = 1000
"""Maximum number of keys started before the configs are checked; the rest wait for the checks."""

Planner = Callable[[Config, CA, Sequence[Master], Seams, Callable[[bytes], bytes] | None], list[Bundle]]
"""Signs and lays out the bundles of the given masters, like ``bundle.iter_bundles``."""


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
    if not config.certificate.per_master and set(names) != set(known):
        raise UsageError(f"--master {names[0]}: {config.source} shares one certificate between all masters "
                         "(certificate.perMaster is false), and rebuilding some bundles would give them a "
                         "new one; build every master, or set certificate.perMaster to true")
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
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_TAR_MTIME:
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is invalid; set it to a Unix time in seconds up to "
                         f"{MAX_TAR_MTIME}, such as $(git log -1 --format=%ct), or unset it")
    return int(value)


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
    bundle. ``planner`` replaces ``bundle.iter_bundles``; ``kcmbundle renew`` uses
    it to reuse old keys. ``strict`` and ``on_report`` are as for
    ``load_and_check``.

    Raises:
        ConfigError, CAError, UsageError: the input is invalid; nothing was written.
        OutputError: a tarball exists and ``force`` is false, or writing failed;
        no tarball was replaced.
    """
    signer = _load_signer(sign_key)
    config, ca = load_and_check(config_path, seams, strict=strict, on_report=on_report)
    selected = select_masters(config, masters)
    return _write_cluster(config, ca, selected, out_dir, force=force, seams=seams, signer=signer, planner=planner)


@dataclass(frozen=True)
class ClusterOutcome:
    """The result of building one config of a multi-cluster run: tarballs written, or the error."""

    config_path: Path
    cluster: str | None
    results: list[BuildResult]
    error: KcmbundleError | None = None


def build_clusters(
    config_paths: Sequence[Path],
    out_dir: Path,
    *,
    masters: Sequence[str] = (),
    force: bool = False,
    seams: Seams = Seams(),
    sign_key: Path | None = None,
    strict: bool = False,
    on_report: Callable[[Path, ClusterReport], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[ClusterOutcome]:
    """Build every master of every config, each cluster under ``out_dir/<cluster>/``.

    A cluster that fails does not stop the others: its outcome carries the
    error. Each CA is loaded once, and the keys of all clusters are made in
    one batch so that they spread over the cores. Worker processes start on
    the keys named in the raw files while the configs are being checked.
    ``on_progress(done, total)`` is called after each key and each bundle.
    ``masters`` selects masters as for ``build`` and needs exactly one config.

    Raises:
        UsageError: the signing key is unusable, or ``masters`` is given with
        several configs; nothing was built.
    """
    config_paths = _distinct(config_paths)
    if masters and len(config_paths) != 1:
        raise UsageError("--master selects masters of one cluster; pass exactly one config with it")
    signer = _load_signer(sign_key)
    with KeyMaker(seams.key_factory) as key_maker:
        key_maker.prefetch(guess_key_algorithms(config_paths, masters))
        loaded, outcomes = _load_all(config_paths, masters, out_dir, seams, strict, on_report)

        counts = [keys_needed(config, selected) for _, config, _, selected in loaded]
        total = sum(counts) + sum(len(selected) for *_, selected in loaded)
        done = 0

        def advance() -> None:
            nonlocal done
            done += 1
            if on_progress is not None:
                on_progress(done, total)

        requests = [[config.certificate.key_algorithm] * count for (_, config, _, _), count in zip(loaded, counts)]
        key_maker.settle([algorithm for cluster in requests for algorithm in cluster])
        # Each cluster is signed and written as soon as its keys are ready, while
        # the workers go on making the keys of the next clusters.
        for (path, config, ca, selected), cluster_requests in zip(loaded, requests):
            try:
                results = _write_cluster(config, ca, selected, out_dir, force=force, seams=seams, signer=signer,
                                         keys=key_maker.keys(cluster_requests, on_key=advance))
            except KcmbundleError as error:
                outcomes[path] = ClusterOutcome(path, config.cluster.name, [], error)
            else:
                outcomes[path] = ClusterOutcome(path, config.cluster.name, results)
            for _ in selected:
                advance()
    return [outcomes[path] for path in config_paths]


def _distinct(paths: Sequence[Path]) -> list[Path]:
    # The same file named twice, such as a.json and ./a.json, is built once.
    seen: set[Path] = set()
    distinct = []
    for path in paths:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            distinct.append(path)
    return distinct


def _load_all(config_paths: Sequence[Path], masters: Sequence[str], out_dir: Path, seams: Seams, strict: bool,
              on_report: Callable[[Path, ClusterReport], None] | None,
              ) -> tuple[list[tuple[Path, Config, CA, list[Master]]], dict[Path, ClusterOutcome]]:
    # Returns the configs that passed every check, with their CA and selected
    # masters, and the outcomes of those that failed.
    outcomes: dict[Path, ClusterOutcome] = {}
    ca_cache: dict[tuple, CA] = {}
    loaded: list[tuple[Path, Config, CA, list[Master]]] = []
    owners: dict[str, Path] = {}
    for path in config_paths:
        try:
            config, ca = load_and_check(path, seams, strict=strict, ca_cache=ca_cache,
                                        on_report=None if on_report is None else partial(on_report, path))
            if config.cluster.name in owners:
                raise UsageError(f"{path}: cluster name {config.cluster.name!r} is also used by "
                                 f"{owners[config.cluster.name]}, and both would write {out_dir / config.cluster.name}; "
                                 "give each cluster its own cluster.name")
            selected = select_masters(config, masters)
        except KcmbundleError as error:
            outcomes[path] = ClusterOutcome(path, None, [], error)
            continue
        owners[config.cluster.name] = path
        loaded.append((path, config, ca, selected))
    return loaded, outcomes


def guess_key_algorithms(config_paths: Sequence[Path], masters: Sequence[str] = ()) -> list[str]:
    """Return the key algorithms that building ``config_paths`` will likely request, read from the raw files.

    Nothing is checked, so the guess can be wrong, such as for a config that
    turns out invalid. It only decides which keys to start early. Files that
    cannot be read as JSON objects add nothing, and so do pipes and other
    files that are not regular files.
    """
    algorithms: list[str] = []
    for path in config_paths:
        if not path.is_file():
            continue  # a pipe such as /dev/stdin can be read only once, by the build
        try:
            document = read_document(path)
        except KcmbundleError:
            continue
        certificate = document.get("certificate")
        if not isinstance(certificate, dict):
            certificate = {}
        listed = document.get("masters")
        count = len(masters) or (len(listed) if isinstance(listed, list) else 0)
        if certificate.get("perMaster") is False:
            count = min(count, 1)
        algorithm = certificate.get("keyAlgorithm", DEFAULT_KEY_ALGORITHM)
        if algorithm in KEY_ALGORITHMS:
            algorithms += [algorithm] * count
    return algorithms[:MAX_KEYS_GUESSED]


def find_configs(folder: Path) -> list[Path]:
    """Return the cluster configs in ``folder``: ``*.json`` there and one level below, without schemas.

    Raises:
        UsageError: ``folder`` is not a folder or contains no config.
    """
    if not folder.is_dir():
        raise UsageError(f"--all {folder}: folder not found; pass a folder of cluster configs")
    # NOTE: any other JSON file there, such as package.json, is taken for a
    # config and reported as an invalid one.
    found = sorted(folder.glob("*.json")) + sorted(folder.glob("*/*.json"))
    configs = [path for path in found if not path.name.endswith(".schema.json") and path.is_file()]
    if not configs:
        raise UsageError(f"--all {folder}: no *.json config found there or in its subfolders")
    return configs


def _load_signer(sign_key: Path | None) -> Callable[[bytes], bytes] | None:
    if sign_key is None:
        return None
    from kcmbundle.signing import load_signer

    return load_signer(sign_key)


def _write_cluster(config: Config, ca: CA, selected: list[Master], out_dir: Path, *, force: bool, seams: Seams,
                   signer: Callable[[bytes], bytes] | None, planner: Planner | None = None,
                   keys: Iterable[PrivateKey] | None = None) -> list[BuildResult]:
    mtime = archive_mtime(seams)
    targets = {master.name: bundle_path(out_dir, config, master) for master in selected}

    # Nothing is created in the output folder before the input is known to be valid.
    cluster_dir = out_dir / config.cluster.name
    with locked_folder(cluster_dir):
        for path in remove_stale_temporaries(cluster_dir, ".tar.gz"):
            logger.debug("removed %s, left by an interrupted build", path)
        if not force:
            _reject_existing(list(targets.values()))
        unit_path = "rootfs" + str(config.paths.unit)
        if planner is not None:
            return _write_all(planner(config, ca, selected, seams, signer), targets, mtime, unit_path, force=force)
        with closing(iter_bundles(config, ca, selected, seams, signer, keys)) as bundles:
            return _write_all(bundles, targets, mtime, unit_path, force=force)


def _reject_existing(paths: list[Path]) -> None:
    existing = [path for path in paths if path.exists()]
    if existing:
        listed = ", ".join(str(path) for path in existing)
        raise OutputError(f"bundle already exists: {listed}; pass --force to replace "
                          f"{'it' if len(existing) == 1 else 'them'}")


def _write_all(bundles: Iterable[Bundle], targets: dict[str, Path], mtime: int, unit_path: str, *,
               force: bool) -> list[BuildResult]:
    # Each tarball is staged as soon as its bundle is planned, while the
    # workers make the next keys. Nothing is published until every bundle is
    # staged and the units are known to agree.
    staged = []
    results = []
    units = {}
    try:
        for bundle in bundles:
            data = tarball_bytes(bundle, mtime)
            path = targets[bundle.master.name]
            staged.append(stage_file(path, data))
            results.append(BuildResult(path, hashlib.sha256(data).hexdigest(), bundle))
            units[bundle.master.name] = bundle.file(unit_path).content.decode()
        assert_same_units(units)
        # The renames take milliseconds. An interrupt in the middle would
        # leave some masters with new bundles and some with old ones (with
        # a shared certificate, two certificates in one cluster), so it
        # waits until they are done.
        # NOTE: SIGKILL or a power loss during the renames can still leave
        # the cluster half replaced; only catchable signals wait.
        with interrupts.held():
            for item in staged:
                publish(item, force=force)
                logger.debug("wrote %s", item.target)
    finally:
        for item in staged:
            discard(item)
    return results
