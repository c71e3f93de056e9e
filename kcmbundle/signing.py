"""Ed25519 signing keys and detached signatures of SHA256SUMS.

``SHA256SUMS.sig`` contains the raw 64-byte Ed25519 signature of SHA256SUMS,
the form that OpenSSL 3 checks with::

    openssl pkeyutl -verify -pubin -inkey signing-key.pub.pem -rawin \\
        -in SHA256SUMS -sigfile SHA256SUMS.sig

The private key is PEM PKCS#8 (mode 0600), the public key PEM SubjectPublicKeyInfo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from kcmbundle.archive import write_atomically
from kcmbundle.errors import OutputError, UsageError

PRIVATE_KEY_NAME = "signing-key.pem"
PUBLIC_KEY_NAME = "signing-key.pub.pem"

_MAX_KEY_FILE_BYTES = 64 * 1024


def generate_key_pair(directory: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair into ``directory``; return (private key path, public key path).

    Raises:
        OutputError: a key file exists and ``force`` is false, or writing failed.
    """
    private_path, public_path = directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME
    if not force:
        existing = [str(path) for path in (private_path, public_path) if path.exists()]
        if existing:
            raise OutputError(f"{', '.join(existing)} already exists; pass --force to replace the key pair")

    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)

    write_atomically([(private_path, private_pem, 0o600), (public_path, public_pem, 0o644)], force=force)
    return private_path, public_path


def load_signer(path: Path) -> Callable[[bytes], bytes]:
    """Load an Ed25519 private key from ``path`` and return a function that signs bytes with it.

    Raises:
        UsageError: the file is missing, unreadable or not an unencrypted Ed25519 private key.
    """
    data = _read_key_file(path, "--sign-key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # The library's message may quote the file, so it is not shown.
        raise UsageError(f"--sign-key {path}: invalid or encrypted private key; "
                         "create a key pair with 'kcmbundle keygen DIR'") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UsageError(f"--sign-key {path}: not an Ed25519 key; create one with 'kcmbundle keygen DIR'")
    return key.sign


def load_public_key(data: bytes, name: str) -> ed25519.Ed25519PublicKey:
    """Parse a PEM Ed25519 public key; ``name`` names its source in messages.

    Raises:
        UsageError: the data is not a PEM Ed25519 public key.
    """
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise UsageError(f"{name}: invalid PEM public key; pass the {PUBLIC_KEY_NAME} "
                         "that 'kcmbundle keygen' wrote") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise UsageError(f"{name}: not an Ed25519 public key; pass the {PUBLIC_KEY_NAME} "
                         "that 'kcmbundle keygen' wrote")
    return key


def read_public_key(path: Path) -> bytes:
    """Read a public key file for ``verify --key``.

    Raises:
        UsageError: the file is missing or unreadable.
    """
    return _read_key_file(path, "--key")


def _read_key_file(path: Path, option: str) -> bytes:
    try:
        with path.open("rb") as stream:
            data = stream.read(_MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"{option} {path}: file not found; create a key pair with 'kcmbundle keygen DIR'") from None
    except OSError as error:
        raise UsageError(f"{option} {path}: could not be read: {error.strerror}") from None
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise UsageError(f"{option} {path}: too large for a key file; pass the PEM key")
    return data
