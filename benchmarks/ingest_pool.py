"""Ingest the real 69K-skill pool: wall time, peak memory, and the quarantine by reason.

    .venv/bin/python benchmarks/ingest_pool.py [--pool PATH] [--out DIR]
"""

import argparse
import json

from _common import POOL, stage
from skillrouter.corpus.ingest import ingest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pool", default=str(POOL))
    parser.add_argument("--out", default="runs/bench/pool")
    args = parser.parse_args()
    results = {}
    with stage("ingest", results):
        summary = ingest([args.pool], args.out, progress=False)
    print("\n".join(summary.lines()))
    print(json.dumps({**results, "read": summary.read, "written": summary.written,
                      "quarantined": summary.quarantined}, indent=2))


if __name__ == "__main__":
    main()
