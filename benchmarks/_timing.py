"""Timing shared by the benchmarks: median seconds of a call after a warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_time(fn: Callable[[], Any], repeats: int, warmups: int = 1) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after ``warmups`` untimed ones (tracing, allocation)."""
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
