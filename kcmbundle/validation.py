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
from kcmbundle.pki import CA, Seams, check_ca_outlives, load_ca


def load_and_check(config_path: Path, seams: Seams, *, strict: bool = False,
                   on_report: Callable[[ClusterReport], None] | None = None,
                   ca_cache: dict[tuple, CA] | None = None) -> tuple[Config, CA]:
    """Load the config and its CA, raising ``ConfigError`` or ``CAError`` on any problem.

    This includes the whole-cluster checks of ``cluster_checks.check_cluster``,
    whose warnings and notes go to ``on_report`` once (``strict`` makes the
    warnings errors), and the CA expiring before a certificate issued now
    would, so that ``validate`` reports it too. ``ca_cache`` lets the configs
    of one multi-cluster run share a CA that they name by the same files.
    """
    config = load_config(config_path)
    report = check_cluster(config, strict=strict)
    if on_report is not None:
        on_report(report)
    now = seams.clock()
    ca = _load_ca_once(config, now, ca_cache)
    check_ca_outlives(ca, now + config.certificate.validity)
    return config, ca


def _load_ca_once(config: Config, now: datetime, cache: dict[tuple, CA] | None) -> CA:
    if cache is None:
        return load_ca(config.ca, now)
    # Loading checks the CA key's consistency, about 0.1 s for RSA, so a
    # hundred clusters sharing one CA would otherwise spend seconds on it.
    key = (config.ca.cert.resolve(), config.ca.key.resolve(), config.ca.passphrase_env)
    if key not in cache:
        cache[key] = load_ca(config.ca, now)
    return cache[key]
