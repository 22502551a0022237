"""Helpers shared by the benchmark scripts: timing, peak memory, FLOPs, the real pool's location."""

from __future__ import annotations

import resource
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

PEAK_TFLOPS = 790  # dense bf16 matrix products measured on the lent H200
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


def git_commit() -> str:
    """The checkout's commit, '+' when it has changes: what a recorded figure was measured on."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return (commit or "unknown") + ("+" if dirty else "")


def flops_per_token(cfg, mean_len: float) -> float:
    d, L, ff = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    qdim, kvdim = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    dense = L * (d * qdim * 2 + d * kvdim * 2 + 3 * d * ff)  # q, o, k, v, gate/up/down
    attn = L * 2 * mean_len * qdim  # QK^T and AV, averaged over positions of a causal sequence
    return 2 * (dense + attn)
