"""Helpers shared by the benchmark scripts: timing, peak memory, the real pool's location."""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from pathlib import Path

POOL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "skills_pool.jsonl.gz"


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@contextmanager
def stage(name: str, results: dict):
    started = time.perf_counter()
    yield
    results[name] = {"seconds": round(time.perf_counter() - started, 2), "peak_rss_gib": round(peak_rss_gib(), 2)}
    print(f"{name:<28} {results[name]['seconds']:>8.2f} s   peak RSS {results[name]['peak_rss_gib']:.2f} GiB",
          flush=True)
