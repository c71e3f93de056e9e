"""Generate many private keys at once, spread over the machine's cores.

RSA key generation dominates a large build (bench/RESULTS.md records the
time per RSA-2048 key on the benchmark machine), so keys are made in worker
processes, one per core. A build starts the workers on a guess of the keys
it will need before it checks the config, so that key generation overlaps
the checks. A wrong guess costs CPU time, never a wrong key.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing
from typing import Callable, Iterator, Sequence

from cryptography.hazmat.primitives import serialization

from kcmbundle import interrupts
from kcmbundle.pki import PrivateKey, generate_private_key

logger = logging.getLogger(__name__)

MIN_KEYS_FOR_POOL = 1
"""Fewer RSA keys than this are made in-process. Forking a worker costs a few
milliseconds, and the worker makes an RSA-2048 key (about 100 ms) while the
build checks the config. ECDSA keys take about a millisecond, so they never
start a worker."""

WORKER_NICENESS = 5
"""Nice value added to the workers. When the workers and the build share the
cores, the build's checks, signing and writing go first, so it waits for keys
only at the end."""

PR_SET_PDEATHSIG = 1
"""prctl option that sends a signal to this process when its parent dies (Linux)."""

PARENT_CHECK_SECONDS = 0.5
"""How often a worker checks that the build that started it is still running."""

KeyFactory = Callable[[str], PrivateKey]


class KeyMaker:
    """Source of new private keys by algorithm name, made in worker processes when that pays.

    ``prefetch`` starts keys before they are requested. ``keys`` hands out
    keys in request order, and takes a prefetched key of the same algorithm
    where there is one. A ``key_factory`` other than the default (such as the
    fixed keys of the tests) is called in order in this process, so injected
    keys come out the same on any number of cores. Use it as a context
    manager: leaving it stops the workers and drops the keys not yet started.
    """

    def __init__(self, key_factory: KeyFactory = generate_private_key, workers: int | None = None) -> None:
        self._factory = key_factory
        self._workers = workers or _usable_cores()
        self._pool: ProcessPoolExecutor | None = None
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._pending: dict[str, deque[Future[bytes]]] = {}

    def __enter__(self) -> KeyMaker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def prefetch(self, algorithms: Sequence[str]) -> None:
        """Start making keys for ``algorithms`` in the workers, unless they are already being made.

        Prefetched keys not yet handed out count, so prefetching a guess and
        then the real requests starts only the keys that the guess missed.
        Keys too few to pay for a worker are left for ``keys`` to make.
        """
        algorithms = self._shortfall(algorithms)
        if not algorithms or (self._pool is None and not self._worth_a_pool(algorithms)):
            return
        # The first submission starts the workers and the executor's thread.
        # Interrupts wait meanwhile because the CLI turns them into
        # exceptions, and one raised during that start-up leaves the executor
        # half made.
        with interrupts.held():
            if self._pool is None:
                self._start_pool(algorithms)
            else:
                self._submit(algorithms)

    def settle(self, algorithms: Sequence[str]) -> None:
        """Make ``algorithms`` the keys still to hand out: cancel prefetched keys beyond them, start missing ones.

        Only keys that no worker has started can be cancelled, so a wrong
        guess costs at most the keys already under way.
        """
        needed = Counter(algorithms)
        for algorithm, pending in self._pending.items():
            surplus = len(pending) - needed[algorithm]
            # The newest keys are the least likely to have started.
            for future in reversed(list(pending)):
                if surplus <= 0:
                    break
                if future.cancel():
                    pending.remove(future)
                    surplus -= 1
        self.prefetch(algorithms)

    def keys(self, algorithms: Sequence[str], on_key: Callable[[], None] | None = None) -> Iterator[PrivateKey]:
        """Yield one key per algorithm name in ``algorithms``, in order, as each is ready.

        The caller signs and writes with the first keys while the workers
        make the rest. ``on_key`` is called after each key.
        """
        self.prefetch(algorithms)
        for algorithm in algorithms:
            pending = self._pending.get(algorithm)
            if pending:
                # The worker generated this key a moment ago, so OpenSSL's RSA
                # consistency check (about 70 ms a key) would only repeat its work.
                key = serialization.load_der_private_key(pending.popleft().result(), password=None,
                                                         unsafe_skip_rsa_key_validation=True)
            else:
                key = self._factory(algorithm)
            if on_key is not None:
                on_key()
            yield key  # type: ignore[misc]

    def close(self) -> None:
        """Stop the workers at once; keys not yet handed out are dropped."""
        if self._pool is not None:
            unfinished = any(not future.done() for pending in self._pending.values() for future in pending)
            if unfinished:
                # An RSA-4096 key can take seconds, which an invalid config or
                # Ctrl-C should not have to wait for.
                for process in self._processes:
                    process.terminate()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._processes = []
        self._pending.clear()

    def _worth_a_pool(self, algorithms: Sequence[str]) -> bool:
        slow = sum(1 for algorithm in algorithms if algorithm.startswith("rsa-"))
        return self._factory is generate_private_key and self._workers >= 2 and slow >= MIN_KEYS_FOR_POOL

    def _shortfall(self, algorithms: Sequence[str]) -> list[str]:
        available = {algorithm: len(pending) for algorithm, pending in self._pending.items()}
        missing = []
        for algorithm in algorithms:
            if available.get(algorithm, 0) > 0:
                available[algorithm] -= 1
            else:
                missing.append(algorithm)
        return missing

    def _start_pool(self, algorithms: Sequence[str]) -> None:
        size = min(self._workers, len(algorithms))
        logger.debug("generating keys in %d worker processes", size)
        running = set(multiprocessing.active_children())
        self._pool = ProcessPoolExecutor(max_workers=size, mp_context=_context(), initializer=_start_worker,
                                         initargs=(os.getpid(),))
        self._submit(algorithms)
        # With fork, the first submission starts every worker.
        self._processes = [process for process in multiprocessing.active_children() if process not in running]

    def _submit(self, algorithms: Sequence[str]) -> None:
        assert self._pool is not None
        for algorithm in algorithms:
            self._pending.setdefault(algorithm, deque()).append(self._pool.submit(_generate_der, algorithm))


def generate_keys(requests: list[str], key_factory: KeyFactory = generate_private_key,
                  workers: int | None = None, on_key: Callable[[], None] | None = None) -> list[PrivateKey]:
    """Return one new key per algorithm name in ``requests``, in the same order.

    ``on_key`` is called after each key; see ``KeyMaker`` for the rest.
    """
    with closing(iter_keys(requests, key_factory, workers, on_key)) as keys:
        return list(keys)


def iter_keys(requests: list[str], key_factory: KeyFactory = generate_private_key,
              workers: int | None = None, on_key: Callable[[], None] | None = None) -> Iterator[PrivateKey]:
    """Yield one new key per algorithm name in ``requests``, in order, as each is ready.

    Close the iterator (or exhaust it) to stop the workers; see ``KeyMaker``.
    """
    with KeyMaker(key_factory, workers) as maker:
        yield from maker.keys(requests, on_key)


def _start_worker(parent: int) -> None:
    from kcmbundle.lock import close_inherited_locks

    # The parent stops the workers on Ctrl-C; a terminal sends SIGINT to the
    # whole process group, and workers would only print tracebacks for it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, interrupts.SIGNALS)
    close_inherited_locks()
    _follow_parent(parent)
    try:
        os.nice(WORKER_NICENESS)
    except OSError:  # the worker then runs at the build's priority, which only costs speed
        pass


def _follow_parent(parent: int) -> None:
    # A worker waits for tasks on a pipe that it also has open for writing, so
    # it would wait forever after the build is killed with SIGKILL. On Linux
    # the kernel kills it when the build dies, even in the middle of a key.
    # Elsewhere a thread checks, and can act only between keys.
    if sys.platform.startswith("linux") and _kill_on_parent_death():
        if os.getppid() != parent:  # the build died before prctl took effect
            os._exit(1)
        return
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _kill_on_parent_death() -> bool:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0
    except (OSError, AttributeError):
        return False


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _generate_der(algorithm: str) -> bytes:
    key = generate_private_key(algorithm)
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _context() -> multiprocessing.context.BaseContext:
    # fork starts a worker in milliseconds; the CLI runs no other threads at
    # this point, so fork's hazards with threads do not apply.
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()
