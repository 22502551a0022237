"""The offline query generator over the real 69K pool, through Ray Data: queries per second.

    .venv/bin/python benchmarks/querygen_offline_pool.py [--corpus runs/bench/pool] [--actors 2]

The pool has no categories, so they are inferred first (k-means over LSA vectors), as the job does.
"""

import argparse
import json
import shutil

from _common import stage
from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import read_skills
from skillrouter.querygen.job import run_query_generation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", default="runs/bench/pool", help="ingested pool (benchmarks/ingest_pool.py)")
    parser.add_argument("--out", default="runs/bench/queries-offline")
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    results: dict = {}
    with stage("load corpus", results):
        skills = read_skills(args.corpus)
    config = PipelineConfig()
    config.querygen.generator = "offline"
    config.querygen.actors = args.actors
    config.querygen.batch_size = 256
    with stage("generate (incl. categories)", results):
        summary = run_query_generation(skills, config, args.out)
    print(json.dumps({k: v for k, v in summary.items() if k != "failed"}, indent=1))
    print(f"{summary['queries']:,} queries for {len(skills):,} skills in {summary['seconds']:.1f} s: "
          f"{summary['queries'] / summary['seconds']:.0f} queries/s end to end")


if __name__ == "__main__":
    main()
