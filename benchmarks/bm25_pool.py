"""BM25 at pool scale: build time, batched and single-query latency, and identical top-k against rank_bm25.

    .venv/bin/python benchmarks/bm25_pool.py [--corpus runs/bench/pool] [--queries 200] [--rank-bm25-queries 20]
        [--analyzer english|plain]

Queries: the bundled dev set's requests plus descriptions of pool skills sampled with a fixed seed.
"""

import argparse
import random
import time

import numpy as np

from _common import stage
from skillrouter.common.text import analyzer
from skillrouter.corpus.ingest import read_skills
from skillrouter.evaluation.benchmark import load_bundled
from skillrouter.retrieval.bm25 import BM25Index, top_k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", default="runs/bench/pool", help="ingested directory (benchmarks/ingest_pool.py)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rank-bm25-queries", type=int, default=200, help="queries also scored by rank_bm25")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--analyzer", default="english", choices=["english", "plain"], help="BM25's terms")
    args = parser.parse_args()
    results: dict = {}
    with stage("load corpus", results):
        skills = read_skills(args.corpus)
        texts = [s.text() for s in skills]
    rng = random.Random(0)
    queries = [t.query for t in load_bundled().tasks]
    queries += [s.description for s in rng.sample(skills, max(0, args.queries - len(queries)))]
    queries = queries[: args.queries]
    print(f"{len(skills):,} skills, {len(queries)} queries")

    with stage("build (vectorised)", results):
        index = BM25Index.build(texts, analyzer=args.analyzer, progress=True)
    print(f"vocabulary {len(index.vocab):,} terms, {index.weights.nnz:,} postings")

    started = time.perf_counter()
    ours_idx, ours_scores = index.search(queries, args.k)
    batched = (time.perf_counter() - started) / len(queries)
    started = time.perf_counter()
    for q in queries[:50]:
        index.search([q], args.k)
    single = (time.perf_counter() - started) / min(50, len(queries))
    print(f"vectorised: {batched * 1e3:.2f} ms/query batched, {single * 1e3:.2f} ms/query one at a time")

    from rank_bm25 import BM25Okapi

    with stage("build (rank_bm25)", results):
        terms = analyzer(args.analyzer)
        tokenized = [terms(t) for t in texts]
        del texts
        ref = BM25Okapi(tokenized)
        del tokenized
    n_ref = min(args.rank_bm25_queries, len(queries))
    started = time.perf_counter()
    ref_scores = np.array([ref.get_scores(terms(q)) for q in queries[:n_ref]])
    ref_ms = (time.perf_counter() - started) / n_ref * 1e3
    ref_idx, ref_top = top_k(ref_scores, args.k)
    same = int((ref_idx == ours_idx[:n_ref]).all(axis=1).sum())
    max_diff = float(np.abs(ref_top - ours_scores[:n_ref]).max())
    print(f"rank_bm25: {ref_ms:.1f} ms/query; speed-up {ref_ms / (batched * 1e3):.0f}x batched, "
          f"{ref_ms / (single * 1e3):.0f}x single")
    print(f"identical top-{args.k}: {same}/{n_ref} queries; max score difference {max_diff:.2e}")


if __name__ == "__main__":
    main()
