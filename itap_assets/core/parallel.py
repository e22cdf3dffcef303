"""Ordered, bounded thread-parallel map: how ITAP overlaps IO with compute and uses both cores in pure Python loops
(numpy, Polars and DuckDB release the GIL in their heavy work)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from threadpoolctl import ThreadpoolController

T = TypeVar("T")
R = TypeVar("R")

_CONTROLLER: ThreadpoolController | None = None


def blas_single_thread():
    """Context limiting BLAS to one thread (our own threads parallelise); the controller is built once (~20 ms)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


MAX_THREADS_ENV = "ITAP_MAX_THREADS"  # a process's share of the cores when several run side by side


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Worker threads of a step: two (IO overlapped with compute, both cores busy), never more than the cores
    this process may use (`ITAP_MAX_THREADS` when runs share the machine)."""
    share = int(os.environ.get(MAX_THREADS_ENV) or available_cpus())
    return max(1, min(2, available_cpus(), share))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` background threads, in order, with at most ``workers`` results computed
    ahead of the consumer (``Executor.map`` computes them all, holding every result at once). With one worker,
    the next item is prepared while the caller works on the current one."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > max(1, workers):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
