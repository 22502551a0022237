"""Memory and time of a pool-scale `skillrouter eval`: the dev set routed among its skills plus a large pool.

    .venv/bin/python benchmarks/eval_pool_memory.py --pool ../shared/data/skills_pool.jsonl.gz \\
        [--system minilm --system hybrid] [--limit N] [--fake-embeddings] [key=value ...]

Runs the command in a child process and samples its process tree (the driver, and Ray's processes and actors when
the pool is embedded on Ray Data) every 0.5 s: the driver's peak RSS, and the tree's peak PSS (shared pages, such as
Ray's object store, counted once). `--limit N` keeps the pool's first N skills (written to a temporary JSONL under
--out, never into the repository). `--fake-embeddings` first fills a private embedding cache (under --out) with
random unit rows for the whole pool, so the run measures everything the evaluation holds besides embedding the
corpus (the pool, BM25, the dense search, the routes); without it the corpus is embedded on the Ray Data actor
pool, which takes hours of CPU at 69K skills.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def tree_memory(root: psutil.Process) -> tuple[int, int, list[tuple[int, str]]]:
    """(RSS of `root`, PSS of `root` and every descendant, [(PSS, name)] per process), bytes."""
    procs = [root]
    try:
        procs += root.children(recursive=True)
    except psutil.NoSuchProcess:
        pass
    rss, each = 0, []
    for p in procs:
        try:
            info, name = p.memory_full_info(), " ".join(p.cmdline()[:1])[-40:]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        each.append((info.pss, "driver" if p is root else name))
        rss = info.rss if p is root else rss
    return rss, sum(pss for pss, _ in each), each


def fake_cache(pool: str, config_path: str, overrides: list[str], systems: list[str]) -> None:
    """Random unit rows in the embedding cache for every dense model the systems use, over the eval's pool."""
    import numpy as np

    from skillrouter.config import load_config
    from skillrouter.evaluation.benchmark import add_distractors, load_benchmark
    from skillrouter.retrieval.embeddings import cache_path, save_embeddings
    from skillrouter.retrieval.systems import get_system

    config = load_config(config_path, overrides)
    skills = add_distractors(load_benchmark("bundled"), [pool]).skills
    rng = np.random.default_rng(0)
    for name in systems:
        first = name.partition("+")[0]
        dense = get_system("minilm" if first == "hybrid" else first.removeprefix("hybrid:")).dense
        if dense is None:
            continue
        spec = dense.spec(config)
        path = cache_path(config.mining.cache_dir, spec, skills, dense.fields)
        if path.exists():  # hybrid and its dense system share one
            continue
        emb = rng.standard_normal((len(skills), 384), dtype=np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        save_embeddings(emb, path, spec, skills, dense.fields, reusable=False)  # no other corpus takes them
        print(f"fake cache: {len(skills):,} random rows for {spec.model}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", required=True)
    parser.add_argument("--system", action="append")
    parser.add_argument("--config", default="configs/minilm.yaml")
    parser.add_argument("--limit", type=int, help="the pool's first N skills only")
    parser.add_argument("--fake-embeddings", action="store_true")
    parser.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--seconds", type=float, help="stop the command after this long (peaks so far: e.g. the "
                                                      "embedding phase of a pool too large to embed here)")
    args, overrides = parser.parse_known_args()
    systems = args.system or ["minilm", "hybrid"]
    out = Path(args.out or tempfile.mkdtemp(prefix="eval-pool-"))
    out.mkdir(parents=True, exist_ok=True)
    pool = args.pool
    if args.limit:
        pool = str(out / f"pool-{args.limit}.jsonl")
        with gzip.open(args.pool, "rt") as src, open(pool, "w") as dst:
            dst.writelines(itertools.islice(src, args.limit))
    if args.fake_embeddings:
        overrides = [*overrides, f"mining.cache_dir={out / 'cache'}"]
        fake_cache(pool, args.config, overrides, systems)
    cmd = [sys.executable, "-m", "skillrouter.cli", "eval", "--config", args.config, "--distractors", pool,
           "--out", str(out / "eval"), *(x for s in systems for x in ("--system", s)), *overrides]
    print(" ".join(cmd), flush=True)
    started = time.perf_counter()
    child = subprocess.Popen(cmd)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # killed: the `finally` below stops the command too
    root = psutil.Process(child.pid)
    peak_rss = peak_pss = 0
    at_peak: list[tuple[int, str]] = []
    try:
        while child.poll() is None and (args.seconds is None or time.perf_counter() - started < args.seconds):
            rss, pss, each = tree_memory(root)
            peak_rss = max(peak_rss, rss)
            if pss > peak_pss:
                peak_pss, at_peak = pss, each
            time.sleep(0.5)
    finally:
        if child.poll() is None:  # interrupted: the command (and its Ray cluster) go too
            child.terminate()
            child.wait()
    wall = time.perf_counter() - started
    stopped = f"exit {child.returncode}"
    if args.seconds and child.returncode < 0:
        stopped = f"stopped after {args.seconds:.0f} s"
    print(f"\n{stopped}; wall {wall:.0f} s; driver peak RSS {peak_rss / 2**30:.2f} GiB; process tree "
          f"peak PSS {peak_pss / 2**30:.2f} GiB ({', '.join(systems)})")
    print("at the tree's peak: " + ", ".join(f"{name} {pss / 2**30:.2f}" for pss, name in sorted(at_peak)[::-1]
                                              if pss > 50 * 2**20) + " GiB (PSS, processes over 50 MiB)")


if __name__ == "__main__":
    main()
