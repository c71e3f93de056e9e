"""Renew the certificates of existing bundles: same subject and SANs, new validity and serial.

The bundles are built again from the config through ``build.build``, so
every other file comes out as a fresh build would make it (``kcmbundle
diff`` shows what changed). With ``keep_keys`` the old private keys are
reused through the key factory seam instead of generating new ones.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

from kcmbundle.build import BuildResult, build
from kcmbundle.bundle import Bundle, certificate_names, plan_bundles
from kcmbundle.config import Config, Master, load_config
from kcmbundle.errors import UsageError
from kcmbundle.inspection import find_parts, key_algorithm, key_fingerprint, load_certificates, load_private_key
from kcmbundle.pki import CA, Seams, build_sans, build_subject, san_strings
from kcmbundle.reader import BundleContents, is_tarball, read_bundle


@dataclasses.dataclass(frozen=True)
class OldBundle:
    """The subject, SANs and key that renew reads from an existing bundle."""

    master: str
    subject: str
    sans: list[str]
    key: Any


def renew_bundles(config_path: Path, old_dir: Path, out_dir: Path, *, keep_keys: bool = False,
                  force: bool = False, sign_key: Path | None = None, seams: Seams = Seams()) -> list[BuildResult]:
    """Write new bundles for the masters whose tarballs are in ``old_dir``.

    Raises:
        UsageError: ``old_dir`` contains no bundle of this cluster, a bundle
        belongs to a master the config lacks, or the config's subject, SANs
        or key algorithm differ from the old certificate's.
        BundleError: an old bundle cannot be read safely.
        ConfigError, CAError, OutputError: as for ``build``.
    """
    config = load_config(config_path)
    old = read_old_bundles(old_dir, config)
    _check_unchanged(config, old, keep_keys)

    def planner(config: Config, ca: CA, masters: Sequence[Master], seams: Seams,
                signer: Callable[[bytes], bytes] | None) -> list[Bundle]:
        if not keep_keys:
            return plan_bundles(config, ca, masters, seams, signer)
        if not config.certificate.per_master:
            shared_key = old[masters[0].name].key
            return plan_bundles(config, ca, masters, _with_key(seams, shared_key), signer)
        bundles = []
        for master in masters:
            bundles += plan_bundles(config, ca, [master], _with_key(seams, old[master.name].key), signer)
        return bundles

    return build(config_path, out_dir, masters=list(old), force=force, seams=seams, sign_key=sign_key,
                 planner=planner)


def _with_key(seams: Seams, key: Any) -> Seams:
    return dataclasses.replace(seams, key_factory=lambda _algorithm: key)


def read_old_bundles(old_dir: Path, config: Config) -> dict[str, OldBundle]:
    """Read the subject, SANs and key of every bundle tarball in ``old_dir``, keyed by master name.

    Raises:
        UsageError, BundleError: see ``renew_bundles``.
    """
    if not old_dir.is_dir():
        raise UsageError(f"--from {old_dir}: folder not found; pass the folder of the old tarballs, "
                         f"such as out/{config.cluster.name}/")
    tarballs = sorted(path for path in old_dir.iterdir() if path.is_file() and is_tarball(path))
    known = {master.name for master in config.masters}
    old: dict[str, OldBundle] = {}
    for path in tarballs:
        contents = read_bundle(path)
        manifest = contents.manifest()
        master = str((manifest.get("master") or {}).get("name"))
        if manifest.get("cluster") != config.cluster.name:
            raise UsageError(f"{path}: bundle of cluster {manifest.get('cluster')!r}, not "
                             f"{config.cluster.name!r}; pass the folder of this cluster's bundles")
        if master not in known:
            raise UsageError(f"{path}: master {master!r} not found in {config.source}; "
                             "add it to the config, or move its bundle out of the folder")
        old[master] = _read_old(contents, master)
    if not old:
        raise UsageError(f"--from {old_dir}: no bundle tarball found; pass the folder of the old tarballs, "
                         f"such as out/{config.cluster.name}/")
    return old


def _read_old(contents: BundleContents, master: str) -> OldBundle:
    parts = find_parts(contents)
    if parts.certificate is None or parts.key is None:
        raise UsageError(f"{contents.source}: no certificate or key found; it is not a complete kcmbundle bundle")
    certificate = load_certificates(parts.certificate.content, contents.where(parts.certificate.path))[0]
    key = load_private_key(parts.key.content, contents.where(parts.key.path))
    return OldBundle(master=master, subject=certificate.subject.rfc4514_string(),
                     sans=san_strings(certificate), key=key)


def _check_unchanged(config: Config, old: dict[str, OldBundle], keep_keys: bool) -> None:
    subject = build_subject(config.certificate.subject).rfc4514_string()
    problems = []
    for name, bundle in old.items():
        covered = config.masters if not config.certificate.per_master else [config.master(name)]
        sans = [str(entry.value) for entry in build_sans(certificate_names(config, covered))]
        if bundle.subject != subject:
            problems.append(f"{name}: the config gives subject {subject}, the old certificate has {bundle.subject}")
        if bundle.sans != sans:
            problems.append(f"{name}: the config gives SANs {', '.join(sans)}, "
                            f"the old certificate has {', '.join(bundle.sans)}")
        if keep_keys and key_algorithm(bundle.key) != config.certificate.key_algorithm:
            problems.append(f"{name}: --keep-keys: the old key is {key_algorithm(bundle.key)}, "
                            f"the config asks for {config.certificate.key_algorithm}")
    if keep_keys and not config.certificate.per_master:
        if len({key_fingerprint(bundle.key) for bundle in old.values()}) > 1:
            problems.append("--keep-keys: certificate.perMaster is false but the old bundles hold different keys")
    if problems:
        raise UsageError("renew keeps the subject, SANs and key algorithm, but the config changed them:\n"
                         + "\n".join(problems)
                         + "\nUse 'kcmbundle build --force' to issue certificates for the new settings")
