"""Generate many private keys at once, spread over the machine's cores.

RSA key generation dominates a large build (bench/RESULTS.md records the
time per RSA-2048 key on the benchmark machine), so keys are made in worker
processes, one per core, when there are enough of them to pay for starting
the workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from typing import Callable, Iterator

from cryptography.hazmat.primitives import serialization

from kcmbundle.pki import PrivateKey, generate_private_key

logger = logging.getLogger(__name__)

MIN_KEYS_FOR_POOL = 2
"""Fewer RSA keys than this are made in-process. Forking a worker costs a few
milliseconds and one RSA-2048 key about 100 ms, so two keys already gain;
ECDSA keys take about a millisecond and never pay for a worker."""


def generate_keys(requests: list[str], key_factory: Callable[[str], PrivateKey] = generate_private_key,
                  workers: int | None = None, on_key: Callable[[], None] | None = None) -> list[PrivateKey]:
    """Return one new key per algorithm name in ``requests``, in the same order.

    ``on_key`` is called after each key; see ``iter_keys`` for the rest.
    """
    with closing(iter_keys(requests, key_factory, workers, on_key)) as keys:
        return list(keys)


def iter_keys(requests: list[str], key_factory: Callable[[str], PrivateKey] = generate_private_key,
              workers: int | None = None, on_key: Callable[[], None] | None = None) -> Iterator[PrivateKey]:
    """Yield one new key per algorithm name in ``requests``, in the same order, as each is ready.

    The caller can sign and write with the first keys while workers make the
    rest. A ``key_factory`` other than the default (such as the fixed keys of
    the tests) is called in order in this process, so injected keys come out
    the same however many cores the machine has. Close the iterator (or
    exhaust it) to shut the workers down.
    """
    workers = workers or _usable_cores()
    slow = sum(1 for algorithm in requests if algorithm.startswith("rsa-"))
    if key_factory is not generate_private_key or slow < MIN_KEYS_FOR_POOL or workers < 2:
        for algorithm in requests:
            key = key_factory(algorithm)
            _notify(on_key)
            yield key
        return

    logger.debug("generating %d keys in %d worker processes", len(requests), workers)
    pool, results = _start_pool(requests, workers)
    try:
        for der in results:
            # The worker generated this key a moment ago, so OpenSSL's RSA
            # consistency check (about 70 ms a key) would only repeat its work.
            key = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
            _notify(on_key)
            yield key  # type: ignore[misc]
    finally:
        # After an error or Ctrl-C the keys not yet started are dropped, not made.
        pool.shutdown(wait=True, cancel_futures=True)


def _start_pool(requests: list[str], workers: int) -> tuple[ProcessPoolExecutor, Iterator[bytes]]:
    # SIGINT and SIGTERM are held back while the workers and the executor's
    # thread start: the CLI turns them into exceptions, and one raised in the
    # middle of that start-up leaves the executor half made. A signal that
    # arrives meanwhile is delivered as soon as the mask is restored.
    interrupts = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, interrupts)
    try:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(requests)), mp_context=_context(),
                                   initializer=_start_worker)
        results = pool.map(_generate_der, requests)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return pool, results


def _start_worker() -> None:
    from kcmbundle.lock import close_inherited_locks

    # The parent stops the workers on Ctrl-C; a terminal sends SIGINT to the
    # whole process group, and workers would only print tracebacks for it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    close_inherited_locks()


def _notify(callback: Callable[[], None] | None) -> None:
    if callback is not None:
        callback()


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
