"""The second stage: a cross-encoder's scores for a first stage's head, and the final order serving and the
evaluation both give. No torch here: the reranker is passed in.

The order is the reranker's alone (`weight` 1, the paper's), or a weighted sum of both stages' scores, each
standardised over the head (z-scores: BM25, cosine and a reranker's logits live on different scales): a weight fitted
on held-out queries (`evaluation.fusion.fit_rerank_weight`) lets a reranker that knows less than its first stage
refine it instead of overturning it, and weight 0 is the first stage's own order.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skillrouter.corpus.skill import Skill

SCORE_MEMO_SIZE = 50_000  # pairs remembered per process: a forward pass each; an entry holds its query (<= 2 KB)
_memo: OrderedDict[tuple, float] = OrderedDict()


class ScoreStore:
    """A cross-encoder's pair scores on disk (SQLite), for the evaluation and the select stage: a later process with
    the same weights (`--rerun eval`, `skillrouter eval` again, a changed eval setting) reads a pair's score instead
    of a forward pass (about 20 ms each on this project's 2-core CPU, in fp32). One file per model, version and
    dtype (`score_store`), at `path`; a key is the pair's query, skill id and content hash."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=60)
        self.db.execute("CREATE TABLE IF NOT EXISTS scores (pair TEXT PRIMARY KEY, score REAL NOT NULL)")

    @staticmethod
    def pair(query: str, skill_id: str, content_hash: str) -> str:
        return hashlib.sha256(json.dumps([query, skill_id, content_hash]).encode()).hexdigest()[:32]

    def get(self, pairs: Sequence[str]) -> dict[str, float]:
        out = {}
        for start in range(0, len(pairs), 500):  # SQLite's bound on parameters per statement
            chunk = list(pairs[start:start + 500])
            rows = self.db.execute(f"SELECT pair, score FROM scores WHERE pair IN ({','.join('?' * len(chunk))})",
                                   chunk)
            out.update(rows.fetchall())
        return out

    def put(self, scores: dict[str, float]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)", scores.items())


def score_store(cache_dir: str | Path, spec) -> ScoreStore | None:
    """The score file of a reranker `spec` (its settings and its weights' version) under `cache_dir`; None for a
    model that is not a local folder (no version to key it by; the bundled MiniLM's head is drawn at each load)."""
    from skillrouter.models.loading import model_version

    weights = model_version(spec.model) if spec is not None else ""
    if not weights:
        return None
    version = hashlib.sha256(f"{spec!r}|{weights}".encode()).hexdigest()[:12]
    return ScoreStore(Path(cache_dir) / "rerank-scores" / f"{version}.sqlite")


def rerank_scores(reranker, items: Sequence[tuple[str, Sequence[Skill]]],
                  store: ScoreStore | None = None, memo: bool = True) -> list[dict[str, float]]:
    """A cross-encoder's score of each (query, skill) pair, {skill id: score} per item; the pairs of every item
    go through `Reranker.score_batch` together (length-sorted batches). A pair this process scored before with the
    same model and the same skill text is not scored again (an LRU of `SCORE_MEMO_SIZE`): systems that share a
    reranker see the same heads, and the evaluation scores a benchmark's pairs once for all of them. With a `store`
    (the model's own), a pair any earlier process scored is read from it, and new scores are added to it.
    `memo` false (serving) scores every pair: a replica's answers cost what they cost, and a load test that repeats
    its requests measures the model, not the LRU."""
    model = getattr(reranker, "spec", None) or reranker  # a model without a spec is its own key
    keys = [[(model, q, s.id, s.content_hash) for s in skills] for q, skills in items]
    known = {key: _memo[key] for row in keys for key in row if key in _memo} if memo else {}
    if store is not None:
        missing = {ScoreStore.pair(*key[1:]): key for row in keys for key in row if key not in known}
        known.update((missing[pair], score) for pair, score in store.get(list(missing)).items())
    todo = [(q, [s for s, key in zip(skills, row) if key not in known]) for (q, skills), row in zip(items, keys)]
    todo = [(q, skills) for q, skills in todo if skills]
    new = {}
    for (q, skills), scores in zip(todo, reranker.score_batch(todo) if todo else []):
        new.update(((model, q, s.id, s.content_hash), float(x)) for s, x in zip(skills, scores.tolist()))
    known.update(new)
    if store is not None and new:
        store.put({ScoreStore.pair(*key[1:]): score for key, score in new.items()})
    for key in (key for row in keys for key in row) if memo else ():
        _memo[key] = known[key]
        _memo.move_to_end(key)
    while len(_memo) > SCORE_MEMO_SIZE:
        _memo.popitem(last=False)
    return [{s.id: known[key] for s, key in zip(skills, row)} for (_, skills), row in zip(items, keys)]


def standardised(values: Sequence[float]) -> np.ndarray:
    """(x - mean) / std over one query's head; all zeros when every value is the same."""
    x = np.asarray(values, dtype=np.float64)
    std = x.std() if len(x) else 0.0
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


def fused(first: Sequence[float], rerank: Sequence[float], weight: float) -> np.ndarray:
    """`weight` * z(rerank) + (1 - `weight`) * z(first), over one query's head."""
    return weight * standardised(rerank) + (1.0 - weight) * standardised(first)


def rerank_order(hits: list[tuple], scores: dict[str, float], retrieve_k: int, weight: float = 1.0) -> list[tuple]:
    """The reranked head (best first by the reranker's score, or with `weight` < 1 by the fused score; a tie
    keeps the first stage's order), then head candidates the reranker could not score, then the first stage's tail
    in its own order. `hits` are tuples (skill id, first-stage score, ...), best first."""
    if not scores:
        return list(hits)
    head, tail = hits[:retrieve_k], hits[retrieve_k:]
    scored = [h for h in head if h[0] in scores]
    keys = [scores[h[0]] for h in scored]
    if weight < 1.0:
        keys = fused([h[1] for h in scored], keys, weight).tolist()
    order = sorted(range(len(scored)), key=lambda i: -keys[i])  # stable: the first stage breaks ties
    return [scored[i] for i in order] + [h for h in head if h[0] not in scores] + tail
