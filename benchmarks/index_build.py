"""Milvus index at scale: build (insert, verify, switch), batched and single searches, filters, a 1% sync.

    .venv/bin/python benchmarks/index_build.py [--num-skills 10000] [--dim 384] [--index-type FLAT]
        [--uri runs/bench/index/skills.db] [--embeddings FILE.npy]

Skills come from the synthetic pool (`skillrouter.corpus.synthetic`); vectors are random unit rows (the store's
cost does not depend on what the vectors mean), or `--embeddings`, a cached corpus matrix of matching length.
Queries are skill vectors plus noise, so every query has a clear nearest skill.
"""

import argparse
import dataclasses
import json
import shutil
import time

import numpy as np

from _common import peak_rss_gib, stage
from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import read_skills
from skillrouter.corpus.synthetic import SynthConfig, SyntheticPool
from skillrouter.index.build import build_index, open_index, sync_index


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-skills", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--index-type", default="FLAT", choices=["FLAT", "HNSW"])
    parser.add_argument("--uri", default="runs/bench/index/skills.db", help="a Lite file (recreated) or a server")
    parser.add_argument("--embeddings", help="a .npy corpus matrix, rows in synthetic-pool order")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results: dict = {}
    with stage("synthetic skills", results):
        pool = SyntheticPool(read_skills("bundled"), SynthConfig(num_skills=args.num_skills))
        skills = [pool.skill(i) for i in range(args.num_skills)]
    vectors = (np.load(args.embeddings)[:args.num_skills] if args.embeddings
               else unit(rng.standard_normal((args.num_skills, args.dim))))
    if "://" not in args.uri:
        shutil.rmtree(args.uri, ignore_errors=True)
    config = PipelineConfig(run_dir=".")  # --uri is taken as given
    config.index.uri, config.index.index_type = args.uri, args.index_type
    with stage("build (write, verify, switch)", results):
        summary = build_index(skills, config, embeddings=vectors)

    targets = rng.integers(0, len(skills), args.queries)
    queries = unit(vectors[targets] + 0.5 / np.sqrt(vectors.shape[1]) * rng.standard_normal((args.queries,
                                                                                              vectors.shape[1])))
    category = skills[0].category
    timings = {}
    with open_index(config) as index:
        index.search(queries[:10], args.k)  # load and warm up
        started = time.perf_counter()
        hits = index.search(queries, args.k)
        timings["batched"] = time.perf_counter() - started
        started = time.perf_counter()
        for q in queries[:200]:
            index.search(q[None], args.k)
        timings["single"] = (time.perf_counter() - started) / 200
        started = time.perf_counter()
        index.search(queries, args.k, category=category)
        timings["filtered"] = time.perf_counter() - started
    top1 = float(np.mean([h[0][0] == skills[t].id for h, t in zip(hits, targets)]))
    print(f"search: {args.queries:,} queries, top-{args.k}: batched {args.queries / timings['batched']:,.0f} QPS, "
          f"one at a time {timings['single'] * 1000:.1f} ms/query, filtered by category "
          f"'{category}' {args.queries / timings['filtered']:,.0f} QPS; noisy-query top-1 = target {top1:.3f}")

    step = 100  # edit 1% of the skills, then sync
    edited = [dataclasses.replace(s, body=s.body + "\nEdited.") if i % step == 0 else s for i, s in enumerate(skills)]
    with stage("sync (1% edited)", results):
        counts = sync_index(edited, config, embed=lambda texts: unit(rng.standard_normal((len(texts), args.dim))))
    print(json.dumps({"build": summary["seconds"], "sync": {k: counts[k] for k in ("changed", "unchanged")},
                      "search_s": {k: round(v, 4) for k, v in timings.items()},
                      "peak_rss_gib": round(peak_rss_gib(), 2)}, indent=1))


if __name__ == "__main__":
    main()
