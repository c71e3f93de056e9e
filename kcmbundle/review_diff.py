"""Compare bundles the way a reviewer reads them.

Each side (a tarball, an unpacked bundle, a folder of tarballs, or a config
that is rendered) becomes a ``View`` per master. In a view, text files stay
text, certificates become their fields, and keys become their algorithm and
public-key fingerprint. The kubeconfig becomes YAML without its embedded
data, plus the fields of each embedded certificate. Text files get a unified
diff, and certificates and keys get one line per changed field.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kcmbundle.errors import BundleError
from kcmbundle.inspection import (KUBECONFIG_KEY_FIELD, describe_certificate, embedded_data, find_parts,
                                  key_algorithm, key_fingerprint, load_certificates, load_kubeconfig,
                                  load_private_key)
from kcmbundle.reader import BundleContents, is_tarball, read_bundle, read_folder
from kcmbundle.render import REVIEW_FIELDS, RenderedBundle, dump_review_yaml, render_config, replace_embedded

EMBEDDED_MARK = "(embedded data, compared field by field)"


@dataclass
class Entry:
    """One file as ``diff`` compares it."""

    kind: str
    """``text``, ``certificates``, ``key``, ``kubeconfig``, ``checksums`` or ``digest``."""
    text: str = ""
    facts: Any = None


@dataclass
class View:
    """One bundle as ``diff`` compares it."""

    label: str
    master: str
    entries: dict[str, Entry] = field(default_factory=dict)


def diff_paths(old: Path, new: Path, *, now: datetime) -> tuple[str, bool]:
    """Compare two sides; return the report and whether they are the same.

    Bundles are paired by master name; when each side is a single bundle
    they are compared whatever their names.

    Raises:
        BundleError: a bundle cannot be read safely.
        ConfigError, CAError: a side is a config that cannot be rendered.
    """
    old_views, new_views = load_side(old, now), load_side(new, now)
    # One bundle against several (such as a config) compares with that master's bundle only.
    if len(old_views) == 1 and len(new_views) > 1:
        new_views = [view for view in new_views if view.master == old_views[0].master] or new_views
    elif len(new_views) == 1 and len(old_views) > 1:
        old_views = [view for view in old_views if view.master == new_views[0].master] or old_views
    if len(old_views) == 1 and len(new_views) == 1:
        pairs = [(old_views[0], new_views[0])]
        unpaired_old: list[View] = []
        unpaired_new: list[View] = []
    else:
        new_by_master = {view.master: view for view in new_views}
        old_masters = {view.master for view in old_views}
        pairs = [(view, new_by_master[view.master]) for view in old_views if view.master in new_by_master]
        unpaired_old = [view for view in old_views if view.master not in new_by_master]
        unpaired_new = [view for view in new_views if view.master not in old_masters]

    lines: list[str] = []
    for view in unpaired_old:
        lines.append(f"removed bundle: {view.master} ({view.label})")
    for view in unpaired_new:
        lines.append(f"added bundle: {view.master} ({view.label})")
    for old_view, new_view in pairs:
        lines += compare_views(old_view, new_view)
    return "".join(line + "\n" for line in lines), not lines


def load_side(path: Path, now: datetime) -> list[View]:
    """Read one side of a diff into views, one per bundle."""
    if path.is_dir():
        try:
            return [bundle_view(read_folder(path), now)]
        except BundleError:
            tarballs = sorted(child for child in path.iterdir() if child.is_file() and is_tarball(child))
            if not tarballs:
                raise
            return [bundle_view(read_bundle(child), now) for child in tarballs]
    if not path.exists():
        raise BundleError(f"{path}: not found; pass a bundle, an unpacked bundle, a folder of bundles or a config")
    if is_tarball(path):
        return [bundle_view(read_bundle(path), now)]
    return [rendered_view(bundle, path) for bundle in render_config(path)]


def bundle_view(contents: BundleContents, now: datetime) -> View:
    """Turn a bundle into the entries ``diff`` compares."""
    manifest = contents.manifest()
    master = str((manifest.get("master") or {}).get("name", contents.top))
    view = View(label=contents.source, master=master)
    parts = find_parts(contents)
    for member in contents.members.values():
        where = contents.where(member.path)
        if member.streamed:
            view.entries[member.path] = Entry("digest", facts={"sha256": member.sha256, "size": member.size})
        elif member.path == "SHA256SUMS":
            view.entries[member.path] = Entry("checksums", facts=_parse_checksums(member.content))
        elif member.path == "MANIFEST.json":
            view.entries[member.path] = Entry("text", text=_normalize_manifest(member.content))
        elif member is parts.key:
            key = load_private_key(member.content, where)
            view.entries[member.path] = Entry("key", facts=_key_facts(key))
        elif member is parts.kubeconfig:
            view.entries[member.path] = _kubeconfig_entry(member.content, where, now)
        elif b"-----BEGIN CERTIFICATE-----" in member.content:
            view.entries[member.path] = Entry("certificates", facts=[
                _certificate_facts(certificate, now) for certificate in load_certificates(member.content, where)])
        else:
            view.entries[member.path] = _text_or_digest(member.content, member.sha256)
    return view


def rendered_view(bundle: RenderedBundle, config_path: Path) -> View:
    """Turn a rendered config bundle into the entries ``diff`` compares."""
    view = View(label=f"{config_path} (rendered)", master=bundle.master)
    for item in bundle.files:
        if item.path == "SHA256SUMS":
            view.entries[item.path] = Entry("checksums", facts=_parse_checksums(item.text.encode()))
        elif item.path == "MANIFEST.json":
            view.entries[item.path] = Entry("text", text=_normalize_manifest(item.text.encode()))
        elif isinstance(item.facts, list):
            view.entries[item.path] = Entry("certificates", facts=item.facts)
        elif isinstance(item.facts, dict) and "keyFingerprint" in item.facts:
            view.entries[item.path] = Entry("key", facts=item.facts)
        elif isinstance(item.facts, dict):
            import yaml

            document = yaml.safe_load(item.text)
            replace_embedded(document, lambda _location, _field, _value: EMBEDDED_MARK)
            view.entries[item.path] = Entry("kubeconfig", text=dump_review_yaml(document), facts=item.facts)
        else:
            view.entries[item.path] = Entry("text", text=item.text)
    return view


def _certificate_facts(certificate, now: datetime) -> dict[str, Any]:
    facts = describe_certificate(certificate, now)
    return {name: facts[name] for name in REVIEW_FIELDS}


def _key_facts(key: Any) -> dict[str, Any]:
    return {"keyAlgorithm": key_algorithm(key), "keyFingerprint": key_fingerprint(key)}


def _kubeconfig_entry(content: bytes, where: str, now: datetime) -> Entry:
    document = load_kubeconfig(content, where)
    facts: dict[str, Any] = {}
    for item in embedded_data(document, where):
        if item.field == KUBECONFIG_KEY_FIELD:
            facts[item.location] = _key_facts(load_private_key(item.content, f"{where}: {item.location}"))
        else:
            facts[item.location] = [_certificate_facts(certificate, now) for certificate
                                    in load_certificates(item.content, f"{where}: {item.location}")]
    replace_embedded(document, lambda _location, _field, _value: EMBEDDED_MARK)
    return Entry("kubeconfig", text=dump_review_yaml(document), facts=facts)


def _text_or_digest(content: bytes, sha256: str) -> Entry:
    try:
        return Entry("text", text=content.decode("utf-8"))
    except UnicodeDecodeError:
        return Entry("digest", facts={"sha256": sha256, "size": len(content)})


def _parse_checksums(content: bytes) -> dict[str, str]:
    listed = {}
    for line in content.decode("utf-8", errors="replace").splitlines():
        digest, separator, path = line.partition("  ")
        if separator:
            listed[path] = digest
    return listed


def _normalize_manifest(content: bytes) -> str:
    """Return MANIFEST.json without per-file checksums, which SHA256SUMS reports once."""
    try:
        data = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return content.decode("utf-8", errors="replace")
    for entry in data.get("files") or [] if isinstance(data, dict) else []:
        if isinstance(entry, dict):
            entry.pop("sha256", None)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def compare_views(old: View, new: View) -> list[str]:
    """Return the report lines for one pair of bundles; empty when they are the same."""
    lines: list[str] = []
    for path in sorted(old.entries.keys() | new.entries.keys()):
        before, after = old.entries.get(path), new.entries.get(path)
        if before is None:
            lines.append(f"added: {path}")
        elif after is None:
            lines.append(f"removed: {path}")
        else:
            lines += _compare_entry(path, before, after)
    if lines:
        lines = [f"=== {old.master}: {old.label} -> {new.label}", *lines]
    return lines


def _compare_entry(path: str, before: Entry, after: Entry) -> list[str]:
    if before.kind != after.kind:
        return [f"changed: {path} ({before.kind} -> {after.kind})"]
    if before.kind == "text":
        return _unified(path, before.text, after.text)
    if before.kind == "certificates":
        return _compare_certificates(path, before.facts, after.facts)
    if before.kind == "key":
        return _compare_fields(f"{path}: private key changed", before.facts, after.facts)
    if before.kind == "kubeconfig":
        lines = _unified(path, before.text, after.text)
        for location in sorted(before.facts.keys() | after.facts.keys()):
            old_facts, new_facts = before.facts.get(location), after.facts.get(location)
            where = f"{path} ({location})"
            if old_facts is None or new_facts is None:
                lines.append(f"{'added' if old_facts is None else 'removed'}: {where}")
            elif isinstance(old_facts, list):
                lines += _compare_certificates(where, old_facts, new_facts)
            else:
                lines += _compare_fields(f"{where}: private key changed", old_facts, new_facts)
        return lines
    if before.kind == "checksums":
        changed = sorted(name for name in before.facts.keys() | after.facts.keys()
                         if before.facts.get(name) != after.facts.get(name))
        return [f"{path}: checksums changed for {', '.join(changed)}"] if changed else []
    return _compare_fields(f"{path}: content changed", before.facts, after.facts)


def _unified(path: str, before: str, after: str) -> list[str]:
    if before == after:
        return []
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), f"a/{path}", f"b/{path}", lineterm="")
    return list(diff)


def _compare_certificates(where: str, before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    lines = []
    for index in range(max(len(before), len(after))):
        label = where if max(len(before), len(after)) == 1 else f"{where} certificate {index + 1}"
        if index >= len(before):
            lines.append(f"added: {label} ({after[index]['subject']})")
        elif index >= len(after):
            lines.append(f"removed: {label} ({before[index]['subject']})")
        else:
            lines += _compare_fields(f"{label}: certificate changed", before[index], after[index])
    return lines


def _compare_fields(title: str, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    changed = [name for name in dict.fromkeys([*before, *after]) if before.get(name) != after.get(name)]
    if not changed:
        return []
    lines = [title]
    for name in changed:
        lines.append(f"    {name}: {_show(before.get(name))} -> {_show(after.get(name))}")
    return lines


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return str(value)
