"""The signals that interrupt kcmbundle, and holding them back during steps that must not be cut short.

The CLI turns each of these signals into an exception, so that temporary
files are removed on the way out. A few steps must either finish or not
start, such as renaming a cluster's tarballs into place. They run with the
signals blocked, so a signal that arrives meanwhile is delivered when the
step ends.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
"""Ctrl-C, a polite kill, and a closed terminal."""


@contextmanager
def held() -> Iterator[None]:
    """Block ``SIGNALS`` in this thread for the duration of the block."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
