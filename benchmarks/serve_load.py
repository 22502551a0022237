"""Load test of the Serve application on 127.0.0.1: a bounded closed-loop generator per concurrency level.

    .venv/bin/python benchmarks/serve_load.py [--config configs/minilm.yaml] [--concurrency 1,4,16]
        [--requests 200] [--first-stage bm25,dense,hybrid] [--rerank off,on] [--rerank-requests 60]
        [--reranker PATH] [--run-dir DIR] [key=value ...]

The application is the one `skillrouter serve` starts (MiniLM encoder and Milvus Lite over the bundled corpus,
built under --run-dir on the first run; --reranker, else the run's trained reranker if any), started once; each
(first stage, rerank) pair is asked for per request. At each concurrency C, C clients send the dev set's requests
one after another, each waiting for its answer before the next (closed loop), until --requests answers came back.
Reported: QPS, client latency p50/p95/p99, the server's own stage times (mean), and every answer that was not 2xx,
by status. `--quality` first routes every dev-set request through the API (top 50) and scores the answers as
`skillrouter eval` does, so the served first stages can be compared with the evaluated systems.
"""

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp
import numpy as np

from skillrouter.config import load_config
from skillrouter.evaluation.benchmark import load_benchmark
from skillrouter.evaluation.metrics import aggregate, task_metrics
from skillrouter.serving.app import start, stop


async def closed_loop(url: str, bodies: list[dict], concurrency: int, total: int) -> dict:
    """`concurrency` clients, `total` requests in all; latencies in ms and statuses of every request."""
    latencies, statuses, server = [], [], {"embed": [], "search": [], "rerank": [], "total": []}
    sent = 0
    timeout = aiohttp.ClientTimeout(total=120)

    async def client(session: aiohttp.ClientSession):
        nonlocal sent
        while sent < total:
            body = bodies[sent % len(bodies)]
            sent += 1
            started = time.perf_counter()
            async with session.post(f"{url}/v1/route", json=body) as response:
                text = await response.text()
                latencies.append((time.perf_counter() - started) * 1000)
                statuses.append(response.status)
                if response.status == 200:
                    for k, v in json.loads(text)["timings_ms"].items():
                        server[k].append(v)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    lat = np.array(latencies)
    bad = {s: statuses.count(s) for s in sorted(set(statuses)) if not 200 <= s < 300}
    return {"concurrency": concurrency, "requests": len(statuses), "seconds": round(seconds, 2),
            "qps": round(len(statuses) / seconds, 2),
            **{f"p{q}_ms": round(float(np.percentile(lat, q)), 1) for q in (50, 95, 99)},
            "server_mean_ms": {k: round(float(np.mean(v)), 1) if v else None for k, v in server.items()},
            "non_2xx": bad, "5xx": sum(n for s, n in bad.items() if s >= 500)}


async def served_quality(url: str, tasks, first_stage: str, rerank: bool, concurrency: int = 4) -> dict:
    """Route every task through the API (top 50) and score the answers like `skillrouter eval`."""
    predictions: dict[str, list[str]] = {}
    queue = list(tasks)

    async def client(session: aiohttp.ClientSession):
        while queue:
            task = queue.pop()
            body = {"query": task.query[:2000], "top_k": 50, "first_stage": first_stage, "rerank": rerank}
            async with session.post(f"{url}/v1/route", json=body) as response:
                answer = json.loads(await response.text())
                predictions[task.task_id] = [r["skill_id"] for r in answer["results"]]

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    per_task = {t.task_id: task_metrics(predictions[t.task_id], set(t.gt_skill_ids), t.relevance) for t in tasks}
    return aggregate(per_task, {t.task_id: t.task_type for t in tasks})["all"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/minilm.yaml")
    parser.add_argument("--run-dir", default="runs/bench/serve", help="corpus, index and serving state")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--first-stage", default="bm25,dense,hybrid", help="first stages to load, in turn")
    parser.add_argument("--rerank", default="off", help="off, on, or off,on (on needs a reranker)")
    parser.add_argument("--rerank-requests", type=int, help="requests per level when reranking (default: --requests)")
    parser.add_argument("--reranker", help="cross-encoder to serve (default: the run's trained one, if any)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--quality", action="store_true", help="score the served answers on the dev set first")
    parser.add_argument("--out", help="JSON results (default: RUN_DIR/load.json)")
    parser.add_argument("overrides", nargs="*", help="key=value profile overrides")
    args = parser.parse_args()

    config = load_config(args.config, [f"run_dir={args.run_dir}", *args.overrides])
    config.serving.port = 0
    if args.reranker:
        config.serving.reranker = args.reranker
    reranks = [r == "on" for r in args.rerank.split(",")]
    config.serving.rerank = any(reranks)
    tasks = load_benchmark("bundled").tasks
    url = start(config)
    runs = []
    try:
        ready = json.loads(aiohttp_get(f"{url}/readyz"))
        print(f"serving {ready['skills']} skills, index {ready['index']}, encoder {ready['encoder']}, "
              f"reranker {ready['reranker']}", flush=True)
        quality = {}
        for first in args.first_stage.split(",") if args.quality else []:
            for rerank in reranks:
                m = asyncio.run(served_quality(url, tasks, first, rerank))
                quality[f"{first}{'+rerank' if rerank else ''}"] = m
                print(f"dev set through the API, {first:<6} rerank {'on ' if rerank else 'off'}: " + ", ".join(
                    f"{k} {100 * m[k]:.1f}" for k in ("Hit@1", "MRR@10", "nDCG@10", "Recall@10", "Recall@50")),
                    flush=True)
        for first in args.first_stage.split(","):
            for rerank in reranks:
                bodies = [{"query": t.query[:2000], "top_k": args.top_k, "first_stage": first, "rerank": rerank}
                          for t in tasks]
                asyncio.run(closed_loop(url, bodies, 2, 10))  # warm-up
                total = args.rerank_requests if rerank and args.rerank_requests else args.requests
                for c in (int(x) for x in args.concurrency.split(",")):
                    r = asyncio.run(closed_loop(url, bodies, c, total))
                    runs.append({"first_stage": first, "rerank": rerank, **r})
                    s = r["server_mean_ms"]
                    print(f"{first:<6} rerank {'on ' if rerank else 'off'} c={c:<3} {r['requests']} requests in "
                          f"{r['seconds']:.1f} s: {r['qps']:.1f} QPS, p50 {r['p50_ms']:.0f} / p95 {r['p95_ms']:.0f} "
                          f"/ p99 {r['p99_ms']:.0f} ms; server mean: embed {s['embed']}, search {s['search']}, "
                          f"rerank {s['rerank']}, total {s['total']} ms; non-2xx {r['non_2xx'] or 0}", flush=True)
    finally:
        stop()
    out = Path(args.out or Path(args.run_dir) / "load.json")
    out.write_text(json.dumps({"ready": ready, "quality": quality, "runs": runs}, indent=1) + "\n")
    print(f"wrote {out}")


def aiohttp_get(url: str) -> str:
    async def get():
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return await response.text()
    return asyncio.run(get())


if __name__ == "__main__":
    main()
