"""Keep an LLM endpoint busy: a query-generation run of 5,000+ requests against a local server of fixed capacity.

    .venv/bin/python benchmarks/querygen_load.py [--requests 5000] [--capacity 32] [--latency 0.25]

The server (skillrouter.testing.openai_server on 127.0.0.1, in a process of its own so that it does not share an
interpreter with the job's driver) serves at most `capacity` requests at once, each taking `latency` seconds: its
capacity is capacity/latency requests per second. The job runs `actors` Ray Data actors of `in_flight` requests
each; the figure of merit is the share of the server's capacity that the job used.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import read_skills
from skillrouter.corpus.synthetic import SynthConfig, SyntheticPool
from skillrouter.querygen.job import run_query_generation


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--capacity", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--out", default="runs/bench/queries-load")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    pool = SyntheticPool(read_skills("bundled"), SynthConfig(num_skills=args.requests, near_dup_rate=0))
    skills = [pool.skill(i) for i in range(args.requests)]
    config = PipelineConfig()
    qc = config.querygen
    qc.generator, qc.actors, qc.max_in_flight_per_actor, qc.batch_size = "llm", args.actors, args.in_flight, 64
    qc.body_chars = 1000
    os.environ.setdefault("OPENAI_API_KEY", "local-benchmark")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "skillrouter.testing.openai_server", "--port", str(port),
                               "--capacity", str(args.capacity), "--latency", str(args.latency)],
                              stdout=subprocess.PIPE, text=True)
    try:
        qc.base_url = server.stdout.readline().strip()
        started = time.perf_counter()
        summary = run_query_generation(skills, config, args.out, log=print)
        wall = time.perf_counter() - started
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as resp:
            stats = json.load(resp)
    finally:
        server.terminate()
        server.wait(timeout=10)
    served, span = stats["answered"], stats["serving_s"]
    capacity = args.capacity / args.latency
    print(f"\n{served:,} requests answered ({stats['requests']:,} received) in {span:.1f} s of serving "
          f"({wall:.1f} s wall, incl. Ray start-up and the write-out)")
    print(f"server capacity {capacity:.0f} req/s; achieved {served / span:.1f} req/s = "
          f"{served / span / capacity:.1%} of capacity; slot utilisation {stats['utilisation']:.1%}")
    print(f"skills ok {summary['skills_ok']:,}, failed {summary['skills_failed']}, "
          f"unfinished {summary['skills_unfinished']}")

if __name__ == "__main__":
    main()
