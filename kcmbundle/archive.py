"""Write bundles as reproducible tarballs, atomically.

The same ``Bundle`` always gives the same bytes: entries sorted, folders
listed, owner root with empty owner names, one fixed mtime, and a gzip header
without file name or time. A tarball is written under a temporary name in
the target folder and renamed into place, so a crash never leaves a partial
file under the final name.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

from kcmbundle.bundle import Bundle
from kcmbundle.errors import OutputError

MODE_FOLDER = 0o755


def tarball_bytes(bundle: Bundle, mtime: int) -> bytes:
    """Return the gzip-compressed tarball of ``bundle`` with every entry dated ``mtime``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder in _folders(bundle):
            tar.addfile(_entry(folder, tarfile.DIRTYPE, MODE_FOLDER, mtime))
        for bundle_file in bundle.files:
            info = _entry(f"{bundle.top}/{bundle_file.path}", tarfile.REGTYPE, bundle_file.mode, mtime)
            info.size = len(bundle_file.content)
            tar.addfile(info, io.BytesIO(bundle_file.content))

    compressed = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of build-specific data.
    # Level 6, gzip's default, takes a fifth less time than level 9 for a
    # tarball less than 1% larger.
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6) as stream:
        stream.write(raw.getvalue())
    return compressed.getvalue()


def _folders(bundle: Bundle) -> list[str]:
    folders = {bundle.top}
    for bundle_file in bundle.files:
        for parent in PurePosixPath(f"{bundle.top}/{bundle_file.path}").parents:
            if str(parent) != ".":
                folders.add(str(parent))
    return sorted(folders)


def _entry(name: str, kind: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


@dataclass
class StagedFile:
    """A complete file under a temporary name beside its final path."""

    temporary: Path
    target: Path


def write_atomically(outputs: Sequence[tuple[Path, bytes, int]], *, force: bool) -> None:
    """Write each (path, data, mode) through a temporary file, renaming them into place only when all are written.

    Raises:
        OutputError: a file exists and ``force`` is false, or writing failed.
        Files staged so far are removed; files already renamed into place stay.
    """
    staged: list[StagedFile] = []
    try:
        for path, data, mode in outputs:
            staged.append(stage_file(path, data, mode=mode))
        for item in staged:
            publish(item, force=force)
    finally:
        for item in staged:
            discard(item)


def stage_file(path: Path, data: bytes, *, mode: int = 0o600) -> StagedFile:
    """Write ``data`` to a new temporary file in ``path``'s folder and flush it to disk.

    The file has ``mode`` from its creation on, whatever the umask.

    Raises:
        OutputError: the folder cannot be created or the write failed.
    """
    folder = path.parent
    make_folder(folder)
    try:
        descriptor, name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise OutputError(f"{folder}: could not create a file: {error.strerror}; "
                          "check its permissions or choose another folder with --out") from None

    staged = StagedFile(Path(name), path)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            os.fchmod(stream.fileno(), mode)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as error:
        discard(staged)
        raise OutputError(f"{path}: could not write: {error.strerror}; "
                          "check free space and permissions, then run the build again") from None
    return staged


def publish(staged: StagedFile, *, force: bool) -> None:
    """Rename a staged file to its final path.

    Without ``force`` an existing file is kept and ``OutputError`` raised;
    the check and the rename are one step (a hard link), so two writers
    cannot both win.
    """
    path = staged.target
    try:
        if force:
            os.replace(staged.temporary, path)
        else:
            os.link(staged.temporary, path)
            staged.temporary.unlink()
        _sync_folder(path.parent)
    except FileExistsError:
        raise OutputError(f"{path}: already exists; pass --force to replace it") from None
    except OSError as error:
        raise OutputError(f"{path}: could not write: {error.strerror}; "
                          "check free space and permissions, then run the build again") from None


def discard(staged: StagedFile) -> None:
    """Remove a staged file that was not published."""
    staged.temporary.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path, suffix: str) -> list[Path]:
    """Delete the temporary files that ``stage_file`` left in ``folder`` for targets ending in ``suffix``.

    Only a process killed between staging and publishing (SIGKILL, power
    loss) leaves such files. Call this only while holding the folder's lock
    (see ``kcmbundle.lock``), or it could delete another build's staged file.
    Returns the paths removed.
    """
    removed = []
    for path in folder.glob(f".*{suffix}.*.tmp"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def make_folder(folder: Path) -> None:
    """Create ``folder`` and its parents unless it exists.

    Raises:
        OutputError: a file is in the way or the folder cannot be created.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise _file_in_the_way(folder) from None
    except OSError as error:
        raise OutputError(f"{folder}: could not create the output folder: {error.strerror}; "
                          "check its permissions or choose another folder with --out") from None
    if not folder.is_dir():
        raise _file_in_the_way(folder)


def _file_in_the_way(folder: Path) -> OutputError:
    # Name the file itself, which may be a parent of the folder such as the --out path.
    blocker = next((path for path in (folder, *folder.parents) if path.exists() and not path.is_dir()), folder)
    return OutputError(f"{blocker}: is a file, not a folder, so the output folder {folder} cannot be created; "
                       "remove the file or choose another folder with --out")


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
