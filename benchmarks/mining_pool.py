"""Hard-negative mining at pool scale: the real 69K pool with 38K offline queries, on this machine's CPUs.

    .venv/bin/python benchmarks/mining_pool.py [--corpus runs/bench/pool] \
        [--queries runs/bench/queries-offline/queries.parquet] [--num-queries 38000]

Prerequisites: benchmarks/ingest_pool.py and benchmarks/querygen_offline_pool.py (for the pool and its queries).
Corpus embeddings are reported apart: on a CPU they come from the cache (MiniLM over the pool takes over an hour
here; `benchmarks/gpu_embed.py` computes them on a GPU in seconds and they are stored under the same cache key).
"""

import argparse
import json
import random
from pathlib import Path

import pyarrow.parquet as pq

from _common import peak_rss_gib, stage
from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import read_skills
from skillrouter.mining.job import print_mining_summary, run_mining
from skillrouter.retrieval.categories import load_categories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", default="runs/bench/pool")
    parser.add_argument("--queries", default="runs/bench/queries-offline/queries.parquet")
    parser.add_argument("--num-queries", type=int, default=38_000)
    parser.add_argument("--out", default="runs/bench/mined")
    args = parser.parse_args()
    results: dict = {}
    with stage("load corpus and queries", results):
        skills = read_skills(args.corpus)
        queries = pq.read_table(args.queries)
        keep = random.Random(0).sample(range(queries.num_rows), min(args.num_queries, queries.num_rows))
        queries = queries.take(sorted(keep))
        categories = load_categories(Path(args.queries).parent / "categories.json", skills)
    print(f"{len(skills):,} skills, {queries.num_rows:,} queries, "
          f"categories: {categories.method if categories else 'inferred now'}")
    config = PipelineConfig()
    with stage("mining job", results):
        summary = run_mining(skills, queries, config, args.out, categories=categories)
    print_mining_summary(summary, args.out)
    print(json.dumps({"stages": summary["timings"], "peak_rss_gib": round(peak_rss_gib(), 2), **results}, indent=1))


if __name__ == "__main__":
    main()
