"""Independent chunks of NumPy work on every core.

NumPy releases the GIL inside its loops, so threads writing disjoint slices
of one preallocated result scale with the cores (the analytic blocks and the
fd columns do). Only for built-ins: user code runs on the calling thread.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

_pool: ThreadPoolExecutor | None = None


def workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def run_chunks(n: int, work: Callable[[int, int], None], *, chunk: int, parallel: bool = True) -> None:
    """Call ``work(start, stop)`` for consecutive chunks of ``[0, n)`` of size
    ``chunk``, on a thread pool when ``parallel`` and there is more than one."""
    global _pool
    bounds = [(start, min(start + chunk, n)) for start in range(0, n, chunk)]
    if not parallel or workers() == 1 or len(bounds) == 1:
        for start, stop in bounds:
            work(start, stop)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(workers(), thread_name_prefix="gradcli")
    try:
        for _ in _pool.map(lambda b: work(*b), bounds):  # re-raises a worker's exception here
            pass
    except BaseException:
        # Ctrl-C or an error: drop the queued chunks so the process can stop now.
        _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None
        raise
