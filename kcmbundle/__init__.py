"""kcmbundle: offline kube-controller-manager bundles for binary-installed control planes."""

__version__ = "0.1.0"
