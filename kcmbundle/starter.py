"""The starter config that ``kcmbundle init`` writes: the classic three-master layout."""

from __future__ import annotations

import json
from pathlib import Path

from kcmbundle.archive import write_atomically
from kcmbundle.config import DEFAULT_PATHS
from kcmbundle.errors import OutputError
from kcmbundle.resources import SCHEMA_FILE_NAME
from kcmbundle.schema import schema_text

# Addresses come from 192.0.2.0/24 (TEST-NET-1, RFC 5737), reserved for
# documentation, so a starter config never points at a real host by accident.
STARTER_CONFIG = {
    "$schema": f"./{SCHEMA_FILE_NAME}",
    "cluster": {
        "name": "kubernetes",
        "kubernetesVersion": "1.34.1",
        "serviceCIDR": "10.254.0.0/16",
        "clusterCIDR": "172.30.0.0/16",
        "apiServer": {"mode": "node-local", "port": 6443},
    },
    "ca": {"cert": "pki/ca.pem", "key": "pki/ca-key.pem"},
    "masters": [
        {"name": "k8s-master1", "ip": "192.0.2.11"},
        {"name": "k8s-master2", "ip": "192.0.2.12"},
        {"name": "k8s-master3", "ip": "192.0.2.13"},
    ],
    "certificate": {
        "keyAlgorithm": "rsa-2048",
        "validity": "8760h",
        "perMaster": True,
        "subject": {"country": "CN", "province": "Beijing", "locality": "Beijing", "organizationalUnit": "ops"},
        "extraSANs": [],
    },
    "paths": dict(DEFAULT_PATHS),
    "controllerManager": {
        "leaderElect": True,
        "extraArgs": {"horizontal-pod-autoscaler-sync-period": "10s"},
    },
}


def starter_text() -> str:
    """Return the starter config as JSON text."""
    return json.dumps(STARTER_CONFIG, indent=2) + "\n"


def write_starter(path: Path, *, force: bool) -> list[Path]:
    """Write the starter config to ``path`` and the JSON Schema beside it; return what was written.

    Raises:
        OutputError: a file exists and ``force`` is false, or writing failed.
    """
    schema_file = path.parent / SCHEMA_FILE_NAME
    outputs = {path: starter_text().encode(), schema_file: schema_text().encode()}
    if not force:
        existing = [str(item) for item in outputs if item.exists()]
        if existing:
            raise OutputError(f"{', '.join(existing)} already exists; pass --force to overwrite")

    write_atomically([(target, data, 0o644) for target, data in outputs.items()], force=force)
    return list(outputs)
