"""Hard negatives for one batch of queries: dense neighbours, BM25 matches, same-category and other-category
skills, each checked by the false-negative filter, back-filled when filtering or a small source leaves a gap.

The corpus-wide structures live in a `MiningIndex`, built once and shared by every worker (it holds no per-query
state). `mine_batch` is pure and deterministic for a seed: a query's negatives do not depend on how queries are
batched or which worker mines them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from skillrouter.config import MiningConfig
from skillrouter.filtering.filter import FalseNegativeFilter
from skillrouter.retrieval.bm25 import BM25Index, top_k

DENSE, BM25, CATEGORY, RANDOM = "dense", "bm25", "category", "random"
SOURCES = (DENSE, BM25, CATEGORY, RANDOM)


@dataclass
class MiningIndex:
    ids: list[str]
    categories: np.ndarray  # category code per skill
    embeddings: np.ndarray  # unit rows, the same encoder as the queries
    bm25: BM25Index
    filter: FalseNegativeFilter
    members: list[np.ndarray] = field(default_factory=list)  # skill indices per category code
    index_of: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        order = np.argsort(self.categories, kind="stable")
        bounds = np.flatnonzero(np.diff(self.categories[order])) + 1
        self.members = np.split(order, bounds)
        self.index_of = {sid: i for i, sid in enumerate(self.ids)}


def quotas(cfg: MiningConfig) -> dict[str, int]:
    return {DENSE: cfg.dense_negatives, BM25: cfg.bm25_negatives, CATEGORY: cfg.category_negatives,
            RANDOM: cfg.random_negatives}


def query_rng(seed: int, query_id: str) -> np.random.Generator:
    """A generator of its own per query: what a query draws does not depend on its batch or worker."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}:{query_id}".encode()).digest()[:8], "big"))


def _ranked(idx: np.ndarray, scores: np.ndarray) -> Iterator[tuple[int, float]]:
    yield from zip(idx.tolist(), scores.tolist())


def _category(index: MiningIndex, positive: int, rng: np.random.Generator, dense_row: np.ndarray):
    members = index.members[index.categories[positive]]
    for i in rng.permutation(members).tolist():
        yield i, float(dense_row[i])


def _random_other(index: MiningIndex, positive: int, rng: np.random.Generator, dense_row: np.ndarray,
                  tries: int = 64):
    others = [c for c in range(len(index.members)) if c != index.categories[positive]]
    for _ in range(tries if others else 0):
        members = index.members[others[rng.integers(len(others))]]
        i = int(members[rng.integers(len(members))])
        yield i, float(dense_row[i])


class _Group:
    """One query's negatives as they are drawn: each candidate is examined once, whichever source offers it."""

    def __init__(self, index: MiningIndex, positive: int, stats: Counter, streams: dict[str, Iterator],
                 filtering: bool = True):
        self.index, self.positive, self.stats, self.streams = index, positive, stats, streams
        self.filtering = filtering  # off: flagged candidates are kept and counted (the ablation without filter)
        self.seen = {positive}  # never the positive itself
        self.chosen: list[dict] = []

    def take(self, source: str, n: int) -> int:
        """Take up to n from `source`, filtering as we go; returns how many are still missing."""
        stream = self.streams[source]
        while n > 0:
            cand, score = next(stream, (None, 0.0))
            if cand is None:
                return n  # this source is exhausted
            if cand in self.seen:
                continue
            self.seen.add(cand)
            self.stats["examined"] += 1
            reason = self.index.filter.reason(self.positive, cand)
            if reason and self.filtering:
                self.stats[f"removed_{reason}"] += 1
                continue
            if reason:
                self.stats[f"kept_{reason}"] += 1
            self.chosen.append({"skill_id": self.index.ids[cand], "source": source, "score": round(score, 6)})
            n -= 1
        return n


def mine_batch(index: MiningIndex, query_ids: Sequence[str], queries: Sequence[str], positive_ids: Sequence[str],
               query_embeddings: np.ndarray, cfg: MiningConfig) -> tuple[list[list[dict]], Counter]:
    """Negatives (`skill_id, source, score`) for each query, and counters: candidates examined, removed by each
    filter layer (with `cfg.filter_false_negatives` off: kept although flagged), back-filled, short groups."""
    want = quotas(cfg)
    margin = cfg.candidate_margin
    dense_scores = query_embeddings @ index.embeddings.T
    dense_idx, dense_top = top_k(dense_scores, want[DENSE] + margin)
    bm25_idx, bm25_top = index.bm25.search(list(queries), want[BM25] + margin)
    stats: Counter = Counter()
    groups = []
    for q, (qid, pos_id) in enumerate(zip(query_ids, positive_ids)):
        positive = index.index_of[pos_id]
        rng = query_rng(cfg.seed, qid)
        group = _Group(index, positive, stats, {
            DENSE: _ranked(dense_idx[q], dense_top[q]), BM25: _ranked(bm25_idx[q], bm25_top[q]),
            CATEGORY: _category(index, positive, rng, dense_scores[q]),
            RANDOM: _random_other(index, positive, rng, dense_scores[q])}, cfg.filter_false_negatives)
        missing = sum(group.take(source, want[source]) for source in SOURCES)
        for source in SOURCES:  # back-fill what a source could not supply from the others, in order
            if missing == 0:
                break
            before = missing
            missing = group.take(source, missing)
            stats["backfilled"] += before - missing
        if missing:
            stats["short_groups"] += 1
        stats["queries"] += 1
        stats["negatives"] += len(group.chosen)
        groups.append(group.chosen)
    return groups, stats
