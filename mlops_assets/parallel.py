"""Bounded parallel map: the one way the platform fans work out over chunks of data.

``map_chunks(task, chunks, client=...)`` runs ``task(chunk, *shared)`` for every chunk, on the
workers of a Dask ``distributed`` client when there is one (a LocalCluster, or the scheduler at
``DASK_SCHEDULER_ADDRESS``), else on local threads. ``chunks`` is consumed lazily and at most
``window`` chunks are in flight, so memory follows the chunk size, not the table: the caller
reads chunk *n + window* from DuckDB only after chunk *n*'s result came back. ``shared`` objects
(a model, a reference profile) go to every worker once. Results come back in chunk order.

Where each task ran is counted in a :class:`Placement`, which the assets publish as metadata:
on a cluster it names the worker addresses, so a run shows (and a test checks) where its work
went.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

LOCAL = "local"  # the placement of work that ran in the calling process


def dask_setup(worker) -> None:
    """Run by each worker process of the platform's LocalCluster as it starts (its preload):
    its ``distributed`` log lines reach the terminal only when critical, and the exit of a
    spawned worker (one its nanny started again) skips the garbage collector's passes over
    everything the tasks imported (an exit handler freezes every object; the handlers
    registered before it, ``distributed``'s, run after it and need no collection): the
    cluster's close waits for its workers to exit. A forked worker (``resources``) ends with
    ``os._exit``, as every child of a forkserver does: no exit handler, no passes."""
    import atexit
    import gc
    import logging

    for handler in logging.getLogger("distributed").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.CRITICAL)
    atexit.register(gc.freeze)


class Placement(Counter):
    """Tasks per place: a worker address, or ``local``."""


def here() -> str:
    """Where this code runs: the Dask worker's address inside a task, else ``local``."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return LOCAL


def located(task: Callable, *args: Any) -> tuple[str, Any]:
    """``task(*args)`` and where it ran (submitted in place of ``task``)."""
    return here(), task(*args)


def map_chunks(
    task: Callable,
    chunks: Iterable,
    *,
    shared: tuple = (),
    client=None,
    window: int | None = None,
    placement: Placement | None = None,
) -> Iterator:
    """``task(chunk, *shared)`` for every chunk, in order, at most ``window`` in flight
    (default: twice the workers or threads, so every worker has its next chunk queued)."""
    placement = placement if placement is not None else Placement()
    if client is not None:
        remote = client.scatter(list(shared), broadcast=True) if shared else []
        yield from _bounded(
            lambda chunk: client.submit(located, task, chunk, *remote, pure=False),
            chunks,
            window or 2 * max(1, sum(client.nthreads().values())),
            placement,
        )
        return
    threads = os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="chunks") as pool:
        yield from _bounded(
            lambda chunk: pool.submit(located, task, chunk, *shared),
            chunks,
            window or threads + 1,
            placement,
        )


def _bounded(submit: Callable, chunks: Iterable, window: int, placement: Placement) -> Iterator:
    pending: deque = deque()
    for chunk in chunks:
        pending.append(submit(chunk))
        while len(pending) >= window:
            yield _record(pending.popleft().result(), placement)
    while pending:
        yield _record(pending.popleft().result(), placement)


def _record(outcome: tuple[str, Any], placement: Placement) -> Any:
    where, result = outcome
    placement[where] += 1
    return result
