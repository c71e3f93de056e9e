"""Load a config and its CA and run every check on them, without building anything.

``kcmbundle validate`` needs only this module, so it does not import the
bundle, archive and key-generation machinery.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable

from kcmbundle.cluster_checks import ClusterReport, check_cluster
from kcmbundle.config import Config, load_config
from kcmbundle.errors import CAError, ConfigError, Problem
from kcmbundle.pki import CA, Seams, check_ca_outlives, load_ca


def load_and_check(config_path: Path, seams: Seams, *, strict: bool = False,
                   on_report: Callable[[ClusterReport], None] | None = None,
                   ca_cache: dict[tuple, CA] | None = None) -> tuple[Config, CA]:
    """Load the config and its CA, raising ``ConfigError`` or ``CAError`` on any problem.

    This includes the whole-cluster checks of ``cluster_checks.check_cluster``,
    whose warnings and notes go to ``on_report`` once (``strict`` makes the
    warnings errors), and the CA expiring before a certificate issued now
    would, so that ``validate`` reports it too. When the flag checks fail,
    the ``ConfigError`` also lists the CA's problems. ``ca_cache`` lets the
    configs of one multi-cluster run share a CA that they name by the same
    files.
    """
    config = load_config(config_path)
    now = seams.clock()
    try:
        report = check_cluster(config, strict=strict)
    except ConfigError as error:
        # The CA is checked anyway, so that one run lists every problem.
        raise ConfigError([*error.problems, *_ca_problems(config, now, ca_cache)], summary=error.summary) from None
    if on_report is not None:
        on_report(report)
    return config, _checked_ca(config, now, ca_cache)


def _checked_ca(config: Config, now: datetime, cache: dict[tuple, CA] | None) -> CA:
    ca = _load_ca_once(config, now, cache)
    check_ca_outlives(ca, now + config.certificate.validity)
    return ca


def _ca_problems(config: Config, now: datetime, cache: dict[tuple, CA] | None) -> list[Problem]:
    try:
        _checked_ca(config, now, cache)
    except CAError as error:
        return error.problems
    return []


def _load_ca_once(config: Config, now: datetime, cache: dict[tuple, CA] | None) -> CA:
    if cache is None:
        return load_ca(config.ca, now)
    # Loading reads and parses both files and makes a test signature, work
    # that a hundred clusters sharing one CA need to do only once.
    key = (config.ca.cert.resolve(), config.ca.key.resolve(), config.ca.passphrase_env)
    if key not in cache:
        cache[key] = load_ca(config.ca, now)
    return cache[key]
