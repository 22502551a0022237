"""`skillrouter route` at the command line: start-up (imports, corpus, models, the cached corpus embeddings) and
one request's own work, for each named system over a finished run's corpus.

    .venv/bin/python benchmarks/route_latency.py --config configs/minilm.yaml [--system minilm ...] [key=value ...]

Each system runs in a fresh process (what a user's call pays), twice: the first call may fill the embedding
cache, the second is what every later call pays. Prints wall seconds per phase.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
started = time.perf_counter()
from skillrouter.cli import _corpus
from skillrouter.config import load_config
from skillrouter.retrieval.router import Router
config = load_config(sys.argv[1], sys.argv[3:])
router = Router(_corpus(config, None), sys.argv[2], config)
ready = time.perf_counter()
router.route("merge these PDF files into one", 5)
first = time.perf_counter()
for q in ("cache the dependencies of our CI workflow", "find why the orders query got slow",
          "release notes from merged pull requests"):
    router.route(q, 5)
done = time.perf_counter()
print(json.dumps({"in_process_startup_s": ready - started, "first_route_s": first - ready,
                  "later_route_s": (done - first) / 3}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/minilm.yaml")
    parser.add_argument("--system", action="append")
    args, overrides = parser.parse_known_args()
    for system in args.system or ["bm25", "minilm", "hybrid", "finetuned", "finetuned+reranker"]:
        for attempt in ("first", "again"):
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CHILD, args.config, system, *overrides],
                                 capture_output=True, text=True, check=True)
            wall = time.perf_counter() - started
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{system:<20} {attempt:<6} process {wall:6.2f} s  (imports + corpus + models "
                  f"{r['in_process_startup_s']:5.2f} s, route {r['first_route_s'] * 1000:6.0f} ms, "
                  f"later routes {r['later_route_s'] * 1000:5.0f} ms)", flush=True)


if __name__ == "__main__":
    main()
