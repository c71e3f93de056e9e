"""The signals that interrupt kcmbundle, and holding them back during steps that must not be cut short.

The CLI turns each of these signals into an ``Interrupted`` exception, so
that temporary files are removed on the way out. A few steps must either
finish or not start, such as renaming a cluster's tarballs into place. They
run inside ``held()``, so a signal that arrives meanwhile is raised when the
step ends.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
"""Ctrl-C, a polite kill, and a closed terminal."""

_hold_depth = 0
_deferred: list[int] = []


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP, raised by the handler that ``install_handlers`` installs.

    It is not a KeyboardInterrupt, which Click turns into "Aborted!" and
    exit 1 outside a command; this one reaches the CLI wherever it strikes.
    """

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number


def install_handlers() -> None:
    """Turn ``SIGNALS`` into ``Interrupted``, except those that are ignored (as under nohup)."""
    for signal_number in sorted(SIGNALS):
        if signal.getsignal(signal_number) is not signal.SIG_IGN:
            signal.signal(signal_number, _interrupt)


@contextmanager
def held() -> Iterator[None]:
    """Hold ``SIGNALS`` back for the duration of the block, then raise the first that arrived.

    The signals are also blocked in this thread, so that threads started
    inside the block inherit the mask. Blocking alone is not enough: the
    kernel may deliver a signal to another thread, and Python then runs the
    handler in the main thread all the same, so the handler defers it too.
    """
    global _hold_depth
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    _hold_depth += 1
    try:
        yield
    finally:
        _hold_depth -= 1
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    if not _hold_depth and _deferred:
        signal_number = _deferred[0]
        _deferred.clear()
        raise Interrupted(signal_number)


def _interrupt(signal_number: int, frame: object) -> None:
    if _hold_depth:
        _deferred.append(signal_number)
        return
    raise Interrupted(signal_number)
