"""An exclusive lock on a cluster's output folder, so that two builds never write it at once.

The lock is an ``fcntl.flock`` on ``<out>/<cluster>/.kcmbundle.lock``. The
kernel releases it when the holder exits, even on SIGKILL, so a crashed
build never leaves the folder locked. The file itself stays: deleting it
while another process waits on it would let a third process lock a new
file beside the old one.

A second build does not wait: it fails at once with ``OutputError``, so
that a script never hangs on a build that another terminal started.
"""

from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kcmbundle.archive import make_folder
from kcmbundle.errors import OutputError

LOCK_FILE_NAME = ".kcmbundle.lock"

_held_descriptors: set[int] = set()
"""Descriptors of the locks this process holds, for ``close_inherited_locks``."""


def close_inherited_locks() -> None:
    """Close the lock descriptors a forked child inherited from its parent.

    An flock belongs to the open file, which a forked child shares, so a key
    worker that outlived a killed build would otherwise keep the folder locked.
    """
    for descriptor in list(_held_descriptors):
        try:
            os.close(descriptor)
        except OSError:
            pass
    _held_descriptors.clear()


@contextmanager
def locked_folder(folder: Path) -> Iterator[Path]:
    """Create ``folder`` if needed and hold its build lock while the block runs; yield the lock file.

    Raises:
        OutputError: another process holds the lock, or the lock file cannot be opened.
    """
    make_folder(folder)
    path = folder / LOCK_FILE_NAME
    try:
        # 0600 from creation on; O_NOFOLLOW refuses a symbolic link planted in place of the lock file.
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise OutputError(f"{path}: could not open the lock file: {error.strerror}; "
                          "check the folder's permissions or choose another folder with --out") from None

    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OutputError(f"{path}: could not lock: {error.strerror}") from None
            raise OutputError(f"{folder}: another kcmbundle build is writing to this folder "
                              f"(it holds {path}); kcmbundle does not wait, so run the build again "
                              "when the other one has finished") from None
        _held_descriptors.add(descriptor)
        yield path
    finally:
        _held_descriptors.discard(descriptor)
        os.close(descriptor)
