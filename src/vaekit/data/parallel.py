"""Decoding many image files at once: a process pool (one worker per core, fork on Linux) and an
ordered map over it with a tqdm progress bar, in a sliding window so that results wait for their
consumer rather than piling up."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import math
import multiprocessing
import os
import warnings
from typing import Callable, Iterator, Sequence

import numpy as np

from .decode import decode_chunk, probe_chunk

__all__ = ["n_workers", "process_pool", "pmap", "chunked", "decode_files", "probe_files", "PARALLEL_MIN"]

PARALLEL_MIN = 256  # fewer images are decoded in this process: a pool costs more than it saves


def n_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def process_pool(n_items: int) -> Iterator[concurrent.futures.Executor | None]:
    """A process pool (one worker per core; fork where available) when ``n_items`` images make it pay, else None."""
    workers = n_workers()
    if workers <= 1 or n_items < PARALLEL_MIN:
        yield None
        return
    ctx = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    executor = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx)
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def pmap(
    fn: Callable, jobs: Sequence, weights: Sequence[int], *, desc: str, progress: bool | None,
    pool: concurrent.futures.Executor | None = None,
) -> Iterator:
    """``map(fn, jobs)`` in order, over ``pool`` if given, with a tqdm bar counting ``weights``."""
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(weights), desc=desc, unit="img", disable=None if progress is None else not progress, leave=False)
    try:
        if pool is None:
            for job, weight in zip(jobs, weights):
                yield fn(job)
                bar.update(weight)
            return
        # a sliding window of jobs in flight: decoded images wait for the writer, never the whole split
        window = 4 * n_workers()
        pending: collections.deque = collections.deque()
        todo = iter(zip(jobs, weights))
        try:
            while True:
                while len(pending) < window:
                    job_weight = next(todo, None)
                    if job_weight is None:
                        break
                    with warnings.catch_warnings():  # Python >= 3.12 warns on fork with threads; workers only run Pillow
                        warnings.simplefilter("ignore", DeprecationWarning)
                        pending.append((pool.submit(fn, job_weight[0]), job_weight[1]))
                if not pending:
                    break
                future, weight = pending.popleft()
                yield future.result()
                bar.update(weight)
        finally:
            for future, _ in pending:
                future.cancel()
    finally:
        bar.close()


def chunked(items: Sequence, n_items: int) -> list:
    """Split ``items`` into chunks: about 8 per worker, 16 to 512 items each."""
    per = max(16, min(512, math.ceil(n_items / (n_workers() * 8))))
    return [items[i : i + per] for i in range(0, len(items), per)]


def decode_files(
    paths: list[str], size: int | None, channels: int | None, *, n_total: int, desc: str, progress: bool | None,
    pool: concurrent.futures.Executor | None,
) -> Iterator[tuple[int, np.ndarray | str]]:
    """Decode ``paths`` in order (over ``pool`` if given): (position of the first, [k, C, H, W] uint8 run of
    same-shape images) or (position, why the file is bad). ``n_total`` (all files of the import) sizes the chunks."""
    jobs = [(chunk, size, channels) for chunk in chunked(paths, n_total)]
    offsets = np.cumsum([0] + [len(j[0]) for j in jobs])
    results = pmap(decode_chunk, jobs, [len(j[0]) for j in jobs], desc=desc, progress=progress, pool=pool)
    with contextlib.closing(results):
        for offset, items in zip(offsets, results):
            for pos, item in items:
                yield int(offset + pos), item


def probe_files(paths: list[str], progress: bool | None) -> list:
    """(width, height, grey) of each file from its header, or why it cannot be read (a str), in order."""
    jobs = chunked(paths, len(paths))
    with process_pool(len(paths)) as pool:
        probes = list(pmap(probe_chunk, jobs, [len(j) for j in jobs], desc="reading headers", progress=progress, pool=pool))
    return [p for chunk in probes for p in chunk]
