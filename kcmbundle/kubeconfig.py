"""Build kube-controller-manager's kubeconfig as data, then serialise it as YAML.

The result is what four ``kubectl config`` calls with ``--embed-certs`` give:
one cluster, one user, one context, all certificates and the key inline.
"""

from __future__ import annotations

import base64
from typing import Any

from kcmbundle.pki import COMPONENT_NAME


def build_kubeconfig(*, cluster_name: str, server: str, ca_pem: bytes, cert_pem: bytes,
                     key_pem: bytes) -> dict[str, Any]:
    """Return a ``v1`` Config with the CA, client certificate and key embedded."""
    context = f"{COMPONENT_NAME}@{cluster_name}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": cluster_name,
            "cluster": {
                "certificate-authority-data": _b64(ca_pem),
                "server": server,
            },
        }],
        "users": [{
            "name": COMPONENT_NAME,
            "user": {
                "client-certificate-data": _b64(cert_pem),
                "client-key-data": _b64(key_pem),
            },
        }],
        "contexts": [{
            "name": context,
            "context": {"cluster": cluster_name, "user": COMPONENT_NAME},
        }],
        "current-context": context,
        "preferences": {},
    }


def dump_kubeconfig(config: dict[str, Any]) -> bytes:
    """Serialise a kubeconfig as block-style YAML in a stable key order."""
    import yaml

    # libyaml's emitter is several times faster on the long base64 lines; the
    # text is the same as the pure-Python emitter's for these plain values.
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text = yaml.dump(config, Dumper=dumper, sort_keys=False, default_flow_style=False, width=1 << 16)
    return text.encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
