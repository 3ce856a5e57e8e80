"""The timer the micro-benchmarks share: warm-up calls, then the median of timed calls."""

from __future__ import annotations

import time
from collections.abc import Callable


def median_seconds(call: Callable[[], object], iters: int, warmup: int = 2) -> float:
    """Seconds per ``call()``: the median of ``iters`` timed calls after ``warmup`` untimed ones (kernel selection,
    allocator and cache warm-up)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]
