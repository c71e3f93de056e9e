"""Read a bundle that may have been tampered with, from a tarball or an unpacked folder.

Nothing is ever extracted: members are read into memory, one at a time,
with size limits, and a member that could escape a folder on extraction
(absolute path, ``..``, link, device, FIFO) is rejected by name. The result
is a ``BundleContents``: every regular file of the bundle, keyed by its path
relative to the top folder ``<cluster>-<master>/``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from kcmbundle.errors import BundleError

MAX_MEMBER_BYTES = 16 * 1024 * 1024
"""Largest file read into memory; real members other than the binary are a few kilobytes."""

MAX_TOTAL_BYTES = 64 * 1024 * 1024
"""Largest sum of the sizes of the files read into memory from one bundle."""

MAX_BINARY_BYTES = 512 * 1024 * 1024
"""Largest executable under ``rootfs/``, for a bundled kube-controller-manager binary. Such a file
is hashed while it is read and its content is not kept. NOTE: the size is an estimate with headroom
over the release binaries' size, not a measured one."""

MAX_MEMBERS = 1000
"""Most entries (files and folders) accepted in one bundle; a real one has about 15."""

_HEADER_ALLOWANCE = 8 * 1024 * 1024
"""Decompressed bytes allowed beyond MAX_TOTAL_BYTES for tar headers and padding."""

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class BundleMember:
    """One regular file of a bundle."""

    path: str
    """Path relative to the bundle's top folder, such as ``rootfs/etc/kubernetes/cert/ca.pem``."""
    content: bytes = field(repr=False)
    """The file's bytes; empty when ``streamed``."""
    mode: int
    size: int
    sha256: str
    streamed: bool = False
    """True for a large executable that was hashed but not kept in memory."""

    @property
    def install_path(self) -> str | None:
        """Where install.sh puts the file on the master, for files under ``rootfs/``."""
        if self.path.startswith("rootfs/"):
            return self.path.removeprefix("rootfs")
        return None


@dataclass(frozen=True)
class BundleContents:
    """The files of one bundle, read into memory."""

    source: str
    """The tarball or folder the bundle was read from, for messages."""
    top: str
    members: dict[str, BundleMember]

    def get(self, path: str) -> BundleMember | None:
        return self.members.get(path)

    def where(self, path: str) -> str:
        """Return ``source:path``, the way messages name a member."""
        return f"{self.source}:{path}"

    def manifest(self) -> dict[str, Any]:
        """Return MANIFEST.json as data.

        Raises:
            BundleError: MANIFEST.json is missing or not a JSON object.
        """
        member = self.get("MANIFEST.json")
        if member is None:
            raise BundleError(f"{self.source}: MANIFEST.json not found; this is not a kcmbundle bundle, "
                              "or it was damaged: build it again")
        try:
            data = json.loads(member.content.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BundleError(f"{self.where('MANIFEST.json')}: invalid JSON ({error}); "
                              "the bundle was damaged: build it again") from None
        if not isinstance(data, dict):
            raise BundleError(f"{self.where('MANIFEST.json')}: invalid manifest, not a JSON object; "
                              "build the bundle again")
        return data


def is_tarball(path: Path) -> bool:
    """Return True when ``path`` is a regular file that starts like a gzip or plain tar archive."""
    try:
        with path.open("rb") as stream:
            head = stream.read(512)
    except OSError:
        return False
    return head.startswith(_GZIP_MAGIC) or head[257:262] == b"ustar"


def read_bundle(path: Path) -> BundleContents:
    """Read the bundle at ``path``: a tarball, an unpacked top folder, or a folder holding one.

    Raises:
        BundleError: the path is missing or unreadable, a member is unsafe or
        too large, or the layout is not a bundle's.
    """
    if path.is_dir():
        return read_folder(path)
    if not path.exists():
        raise BundleError(f"{path}: bundle not found; pass a bundle tarball or an unpacked bundle folder")
    return read_tarball(path)


def read_tarball(path: Path) -> BundleContents:
    """Read the members of a gzip or plain tarball into memory, checking each one.

    Raises:
        BundleError: see ``read_bundle``.
    """
    try:
        raw = path.open("rb")
    except OSError as error:
        raise BundleError(f"{path}: could not be read: {error.strerror}") from None

    with raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        limited = _LimitedReader(stream, MAX_TOTAL_BYTES + MAX_BINARY_BYTES + _HEADER_ALLOWANCE, path)
        try:
            with tarfile.open(fileobj=limited, mode="r|") as archive:
                files = _read_members(archive, path)
        except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as error:
            raise BundleError(f"{path}: invalid or damaged tarball ({error}); copy it again") from None

    top, members = _split_top(files, path)
    return BundleContents(source=str(path), top=top, members=members)


class _LimitedReader(io.RawIOBase):
    """A read-only stream that raises ``BundleError`` once more than ``limit`` bytes were read.

    It bounds what tarfile itself reads, such as a huge pax header, before any
    member check can run.
    """

    def __init__(self, stream: BinaryIO, limit: int, path: Path) -> None:
        self._stream = stream
        self._left = limit
        self._path = path

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size if size >= 0 else self._left + 1)
        self._left -= len(data)
        if self._left < 0:
            raise BundleError(f"{self._path}: the tarball unpacks to more than "
                              f"{MAX_TOTAL_BYTES // (1024 * 1024)} MiB; it is not a kcmbundle bundle")
        return data


def _read_members(archive: tarfile.TarFile, path: Path) -> dict[str, BundleMember]:
    files: dict[str, BundleMember] = {}
    seen: set[str] = set()
    total = 0
    streamed = False
    for count, member in enumerate(archive, start=1):
        if count > MAX_MEMBERS:
            raise BundleError(f"{path}: more than {MAX_MEMBERS} entries; it is not a kcmbundle bundle")
        name = _safe_name(member.name, path)
        if name in seen:
            raise BundleError(f"{path}: member {member.name!r} appears twice; the tarball was tampered with")
        seen.add(name)

        if member.isdir():
            continue
        if not member.isreg():
            raise BundleError(f"{path}: member {member.name!r} is a {_kind(member)}, which bundles never "
                              "contain; the tarball was tampered with, do not unpack it")
        mode = member.mode & 0o7777
        stream = archive.extractfile(member)
        assert stream is not None  # a regular file always has a data stream
        if _may_stream(name.split("/", 1)[-1], member.size, mode) and not streamed:
            streamed = True
            files[name] = _hash_stream(name, stream, member.size, mode)
            continue
        total = _check_size(member.name, member.size, total, path)
        content = stream.read(member.size)
        files[name] = BundleMember(name, content, mode, len(content), hashlib.sha256(content).hexdigest())
    return files


def _may_stream(relative: str, size: int, mode: int) -> bool:
    """Return True for the one large executable a bundle may carry under rootfs/ (the binary)."""
    return relative.startswith("rootfs/") and mode & 0o111 != 0 and MAX_MEMBER_BYTES < size <= MAX_BINARY_BYTES


def _hash_stream(name: str, stream: BinaryIO, size: int, mode: int) -> BundleMember:
    digest = hashlib.sha256()
    left = size
    while left > 0:
        chunk = stream.read(min(left, 1024 * 1024))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk)
    return BundleMember(name, b"", mode, size - left, digest.hexdigest(), streamed=True)


def _safe_name(name: str, path: Path) -> str:
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise BundleError(f"{path}: member {name!r} has an absolute or invalid path; "
                          "the tarball was tampered with, do not unpack it")
    parts = [part for part in PurePosixPath(name).parts if part != "."]
    if ".." in parts:
        raise BundleError(f"{path}: member {name!r} contains '..' and would be written outside the "
                          "bundle folder; the tarball was tampered with, do not unpack it")
    if not parts:
        raise BundleError(f"{path}: member {name!r} has an empty path; the tarball is damaged")
    return "/".join(parts)


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "FIFO"
    return f"special entry (tar type {member.type!r})"


def _check_size(name: str, size: int, total: int, path: Path) -> int:
    if size > MAX_MEMBER_BYTES:
        raise BundleError(f"{path}: member {name!r} is {size} bytes, more than the "
                          f"{MAX_MEMBER_BYTES // (1024 * 1024)} MiB limit; it is not a kcmbundle bundle")
    total += size
    if total > MAX_TOTAL_BYTES:
        raise BundleError(f"{path}: members add up to more than {MAX_TOTAL_BYTES // (1024 * 1024)} MiB "
                          f"(at {name!r}); it is not a kcmbundle bundle")
    return total


def _split_top(files: dict[str, BundleMember], path: Path) -> tuple[str, dict[str, BundleMember]]:
    tops = sorted({name.split("/", 1)[0] for name in files})
    if not files:
        raise BundleError(f"{path}: the tarball contains no files; it is not a kcmbundle bundle")
    loose = sorted(name for name in files if "/" not in name)
    if loose:
        raise BundleError(f"{path}: member {loose[0]!r} is not inside a top folder; "
                          "it is not a kcmbundle bundle")
    if len(tops) > 1:
        raise BundleError(f"{path}: several top folders ({', '.join(tops)}); a bundle has exactly one")

    top = tops[0]
    members = {}
    for name in sorted(files):
        relative = name.split("/", 1)[1]
        members[relative] = dataclasses.replace(files[name], path=relative)
    return top, members


def read_folder(folder: Path) -> BundleContents:
    """Read an unpacked bundle: ``folder`` itself, or its only subfolder that contains MANIFEST.json.

    Symbolic links and special files are rejected, never followed.

    Raises:
        BundleError: see ``read_bundle``.
    """
    top = _find_top(folder)
    files: dict[str, BundleMember] = {}
    total = 0
    streamed = False
    for current, folders, names in os.walk(top, followlinks=False):
        folders.sort()
        for name in [*folders, *sorted(names)]:
            full = Path(current) / name
            relative = full.relative_to(top).as_posix()
            info = _lstat(full)
            if stat.S_ISDIR(info.st_mode):
                continue
            if stat.S_ISLNK(info.st_mode):
                raise BundleError(f"{top}: {relative} is a symbolic link, which bundles never contain; "
                                  "unpack the tarball again")
            if not stat.S_ISREG(info.st_mode):
                raise BundleError(f"{top}: {relative} is not a regular file; unpack the tarball again")
            if len(files) >= MAX_MEMBERS:
                raise BundleError(f"{top}: more than {MAX_MEMBERS} files; it is not a kcmbundle bundle")
            mode = stat.S_IMODE(info.st_mode)
            if _may_stream(relative, info.st_size, mode) and not streamed:
                streamed = True
                with _open_no_follow(full) as stream:
                    files[relative] = _hash_stream(relative, stream, info.st_size, mode)
                continue
            total = _check_size(relative, info.st_size, total, top)
            content = _read_no_follow(full)
            files[relative] = BundleMember(relative, content, mode, len(content), hashlib.sha256(content).hexdigest())
    return BundleContents(source=str(top), top=top.name, members=dict(sorted(files.items())))


def _find_top(folder: Path) -> Path:
    if (folder / "MANIFEST.json").is_file():
        return folder
    try:
        candidates = [child for child in sorted(folder.iterdir())
                      if child.is_dir() and not child.is_symlink() and (child / "MANIFEST.json").is_file()]
    except OSError as error:
        raise BundleError(f"{folder}: could not be read: {error.strerror}") from None
    if len(candidates) == 1:
        return candidates[0]
    raise BundleError(f"{folder}: MANIFEST.json not found; pass a bundle tarball or the folder "
                      "that 'tar -xzf' made from one")


def _lstat(path: Path) -> os.stat_result:
    try:
        return path.lstat()
    except OSError as error:
        raise BundleError(f"{path}: could not be read: {error.strerror}") from None


def _open_no_follow(path: Path) -> BinaryIO:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as error:
        raise BundleError(f"{path}: could not be read: {error.strerror}") from None
    return os.fdopen(descriptor, "rb")


def _read_no_follow(path: Path) -> bytes:
    with _open_no_follow(path) as stream:
        data = stream.read(MAX_MEMBER_BYTES + 1)
    if len(data) > MAX_MEMBER_BYTES:
        raise BundleError(f"{path}: larger than {MAX_MEMBER_BYTES // (1024 * 1024)} MiB; "
                          "it is not a kcmbundle bundle file")
    return data
