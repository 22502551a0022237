"""The skill pool on a real Milvus server beside Milvus Lite: build (insert, verify, switch), searches, an upsert.

    .venv/bin/python benchmarks/index_server.py [--pool ../shared/data/skills_pool.jsonl.gz] [--dim 384]
        [--index-type HNSW] [--backend server --backend lite]

The server is PyPI's milvus 2.3.5 standalone, started here on 127.0.0.1 (`skillrouter.testing.milvus_server`,
authorization on, the token in MILVUS_TOKEN as a cluster job has it). Vectors are random unit rows (the store's
cost does not depend on what they mean; embedding the pool takes minutes on a GPU, hours on this CPU); queries are
skill vectors plus noise, so each has a clear nearest skill.
"""

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np

from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import read_skills
from skillrouter.index.build import build_index, open_index
from skillrouter.testing.milvus_server import MilvusServer


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def measure(config: PipelineConfig, skills, vectors, queries, targets, k: int) -> dict:
    summary = build_index(skills, config, embeddings=vectors, log=lambda _: None)
    out: dict = {"build_s": summary["seconds"]}
    with open_index(config) as index:
        index.search(queries[:10], k)  # load and warm up
        started = time.perf_counter()
        hits = index.search(queries, k)
        out["batched_qps"] = round(len(queries) / (time.perf_counter() - started))
        started = time.perf_counter()
        for q in queries[:200]:
            index.search(q[None], k)
        out["single_ms"] = round((time.perf_counter() - started) / 200 * 1000, 1)
        started = time.perf_counter()
        index.search(queries, k, category=skills[0].category)
        out["filtered_qps"] = round(len(queries) / (time.perf_counter() - started))
        out["top1"] = round(float(np.mean([h[0][0] == skills[t].id for h, t in zip(hits, targets)])), 4)
        started = time.perf_counter()
        index.upsert(skills[:10], vectors[:10])  # an admin edit: returns once every reader sees it
        out["upsert_10_s"] = round(time.perf_counter() - started, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pool", default="../shared/data/skills_pool.jsonl.gz")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--index-type", default="HNSW", choices=["FLAT", "HNSW"])
    parser.add_argument("--backend", action="append", choices=["server", "lite"])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    skills = read_skills(args.pool)
    rng = np.random.default_rng(0)
    vectors = unit(rng.standard_normal((len(skills), args.dim)))
    targets = rng.integers(0, len(skills), args.queries)
    queries = unit(vectors[targets] + 0.5 / np.sqrt(args.dim) * rng.standard_normal((args.queries, args.dim)))
    results = {"skills": len(skills), "dim": args.dim, "index_type": args.index_type}
    work = tempfile.mkdtemp(prefix="index-server-")
    try:
        for backend in args.backend or ["server", "lite"]:
            config = PipelineConfig(run_dir=work)
            config.index.index_type = args.index_type
            if backend == "lite":
                config.index.uri = os.path.join(work, "lite", "skills.db")
                results["lite"] = measure(config, skills, vectors, queries, targets, args.k)
            else:
                with MilvusServer(os.path.join(work, "server"), auth=True) as server:
                    os.environ["MILVUS_TOKEN"] = server.token
                    config.index.uri = server.uri
                    results["server"] = {"start_s": server.start_s,
                                         **measure(config, skills, vectors, queries, targets, args.k)}
            print(json.dumps({backend: results[backend]}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
