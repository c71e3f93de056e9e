"""Create a cluster CA on disk for labs and tests (``kcmbundle ca init``)."""

from __future__ import annotations

from pathlib import Path

from kcmbundle.archive import write_atomically
from kcmbundle.durations import DURATION_HINT, parse_duration
from kcmbundle.errors import OutputError, UsageError
from kcmbundle.pki import KEY_ALGORITHMS, Seams, create_ca

CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca-key.pem"


def init_ca(directory: Path, *, key_algorithm: str, validity: str, common_name: str,
            force: bool, seams: Seams = Seams()) -> tuple[Path, Path]:
    """Write a new self-signed CA to ``directory``; return the certificate and key paths.

    Raises:
        UsageError: an option value is invalid.
        OutputError: the files exist and ``force`` is false, or writing failed.
    """
    if key_algorithm not in KEY_ALGORITHMS:
        raise UsageError(f"--key-algorithm {key_algorithm!r} is invalid; use one of {', '.join(KEY_ALGORITHMS)}")
    try:
        lifetime = parse_duration(validity)
    except ValueError as error:
        raise UsageError(f"--validity {validity!r} is invalid: {error}. {DURATION_HINT}") from None
    if lifetime.total_seconds() < 3600:
        raise UsageError(f"--validity {validity!r} is invalid: shorter than 1h; use a duration such as 87600h")
    if not common_name.strip():
        raise UsageError("--common-name is empty; give the CA a name such as kubernetes-ca")
    if len(common_name) > 64:
        raise UsageError(f"--common-name is {len(common_name)} characters long; X.509 allows at most 64 "
                         "(RFC 5280 ub-common-name), so use a shorter name such as kubernetes-ca")

    cert_path = directory / CA_CERT_NAME
    key_path = directory / CA_KEY_NAME
    if not force:
        existing = [str(path) for path in (cert_path, key_path) if path.exists()]
        if existing:
            raise OutputError(f"{', '.join(existing)} already exists; pass --force to replace the CA "
                              "(every certificate it signed stops being trusted)")

    cert_pem, key_pem = create_ca(common_name=common_name, key_algorithm=key_algorithm,
                                  validity=lifetime, seams=seams)
    write_atomically([(key_path, key_pem, 0o600), (cert_path, cert_pem, 0o644)], force=force)
    return cert_path, key_path
