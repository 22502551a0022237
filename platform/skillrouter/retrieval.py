"""Retrieve-then-rerank as plain Python, the one copy that serving and the evaluation both run.

- `FirstStage`: candidates for a batch of queries, `dense` (a query encoder and a dense search backend), `bm25`
  (over whatever text the BM25 index was built on), or `hybrid` (their reciprocal rank fusion). The backend is
  Milvus in serving (`serving.stages`) and `ExactDense`, an in-memory matrix product, in the evaluation: the same
  ranking as a FLAT index, without building one per benchmark.
- `rerank_scores` and `rerank_order`: a cross-encoder's scores for the first stage's head, and the final order.

No Ray, no Milvus and no torch are imported here: the encoder and the reranker are passed in.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from skillrouter.config import BM25Config
from skillrouter.corpus.skill import Skill
from skillrouter.index.store import UnsafeValue, value_problem
from skillrouter.mining.bm25 import BM25Index, top_k

RRF_K = 60  # Cormack et al. (2009): the constant that damps the weight of the very first ranks
FUSION_DEPTH = 100  # candidates each fused first stage contributes

FilterValue = str | Sequence[str] | None
Item = TypeVar("Item", bound=Hashable)


def build_bm25(skills: Sequence[Skill], params: BM25Config, text: Callable[[Skill], str] = Skill.text) -> BM25Index:
    """BM25 over each skill's `text` (by default the full text) with the profile's parameters."""
    return BM25Index.build([text(s) for s in skills], k1=params.k1, b=params.b, epsilon=params.epsilon,
                           progress=len(skills) > 20_000)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Item]], k: int = RRF_K) -> list[tuple[Item, float]]:
    """Fuse rankings (items best first) by reciprocal rank fusion: score(d) = sum over rankings of 1 / (k + rank),
    ranks from 1 (Cormack, Clarke and Buettcher, SIGIR 2009). Only ranks count, so scores on different scales
    (cosine, BM25) need no calibration. Ties go to the item met first reading the rankings rank by rank."""
    scores: dict[Item, float] = {}
    for depth in range(max((len(r) for r in rankings), default=0)):
        for ranking in rankings:
            if depth < len(ranking):
                item = ranking[depth]
                scores[item] = scores.get(item, 0.0) + 1.0 / (k + depth + 1)
    return sorted(scores.items(), key=lambda kv: -kv[1])  # stable: first met wins a tie


class Catalogue:
    """The skills of one corpus (a serving generation, or a benchmark's pool), by id and by row, with their
    categories and sources for filtering."""

    def __init__(self, skills: Sequence[Skill]):
        self.skills = list(skills)
        self.rows = {s.id: i for i, s in enumerate(self.skills)}
        self.categories = np.array([s.category or "" for s in self.skills], dtype=object)
        self.sources = np.array([s.source or "" for s in self.skills], dtype=object)

    def __len__(self) -> int:
        return len(self.skills)

    def get(self, skill_id: str) -> Skill | None:
        row = self.rows.get(skill_id)
        return None if row is None else self.skills[row]

    def allowed(self, category: FilterValue = None, source: FilterValue = None) -> np.ndarray | None:
        """Rows passing the filters (the same rule as the index's: equal to one value, or to any of a list);
        None without filters."""
        if category is None and source is None:
            return None
        mask = np.ones(len(self.skills), dtype=bool)
        for values, column in ((category, self.categories), (source, self.sources)):
            if values is not None:
                mask &= np.isin(column, [values] if isinstance(values, str) else list(values))
        return mask


@dataclass(frozen=True)
class RetrieveQuery:
    """One request to the first stage. Its filters are checked when it is made (`check`): a value that no first
    stage can compare (a control character, a lone surrogate, not text) is refused then, alone, before the query
    can join a batch of other clients' queries."""

    text: str
    k: int
    first_stage: str = "dense"
    category: FilterValue = None
    source: FilterValue = None

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise `UnsafeValue` (a ValueError) for a filter value the index could not be asked about."""
        for field, value in (("category", self.category), ("source", self.source)):
            if value is None:
                continue
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, (list, tuple)):
                raise UnsafeValue(f"filter '{field}': one value or a list of values, got {type(value).__name__}")
            for v in values:
                if (problem := value_problem(v)) is not None:
                    raise UnsafeValue(f"filter '{field}' value {v!r:.100}: {problem}")

    def filter_key(self) -> tuple:
        return (_frozen(self.category), _frozen(self.source))


def _frozen(value: FilterValue):
    return value if value is None or isinstance(value, str) else tuple(value)


@dataclass
class Retrieved:
    """A first stage's answer to one query: (skill id, score) best first, and the batch's stage times in ms."""

    hits: list[tuple[str, float]]
    embed_ms: float
    search_ms: float


class QueryEncoder(Protocol):
    def encode_queries(self, queries: Sequence[str]) -> np.ndarray: ...


class DenseSearch(Protocol):
    def search(self, vectors: np.ndarray, k: int, category: FilterValue = None,
               source: FilterValue = None) -> list[list[tuple[str, float]]]: ...


class ExactDense:
    """Dense search as one matrix product over skill embeddings held in memory (unit rows: cosine), filters
    masking the scores; ties go to the lower row."""

    def __init__(self, catalogue: Catalogue, embeddings: np.ndarray):
        self.catalogue, self.embeddings = catalogue, embeddings

    def search(self, vectors: np.ndarray, k: int, category: FilterValue = None,
               source: FilterValue = None) -> list[list[tuple[str, float]]]:
        scores = vectors @ self.embeddings.T
        allowed = self.catalogue.allowed(category, source)
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        idx, top = top_k(scores, k)
        skills = self.catalogue.skills
        return [[(skills[j].id, float(s)) for j, s in zip(row, row_scores) if s > -np.inf]
                for row, row_scores in zip(idx.tolist(), top.tolist())]


class FirstStage:
    """Candidates for a batch of queries from one corpus.

    `dense`: the query encoder and the dense backend's top-k (one search per distinct filter in the batch);
    `bm25`: BM25 scores (filters mask them); `hybrid`: reciprocal rank fusion of both, each contributing its top
    `fusion_depth`. A stage built without an encoder or without BM25 answers only the kinds it has.
    """

    def __init__(self, catalogue: Catalogue, encoder: QueryEncoder | None = None, dense: DenseSearch | None = None,
                 bm25: BM25Index | None = None, fusion_depth: int = FUSION_DEPTH, rrf_k: int = RRF_K):
        self.catalogue, self.encoder, self.dense, self.bm25 = catalogue, encoder, dense, bm25
        self.fusion_depth, self.rrf_k = fusion_depth, rrf_k

    def depth(self, query: RetrieveQuery) -> int:
        return max(query.k, self.fusion_depth) if query.first_stage == "hybrid" else query.k

    def search(self, queries: Sequence[RetrieveQuery]) -> list[Retrieved]:
        for q in queries:
            needs = {"dense": ("encoder",), "bm25": ("bm25",), "hybrid": ("encoder", "bm25")}.get(q.first_stage)
            if needs is None:
                raise ValueError(f"unknown first stage '{q.first_stage}': dense, bm25 or hybrid")
            if any(getattr(self, part) is None for part in needs):
                raise ValueError(f"this first stage has no {' or '.join(needs)}: it cannot answer '{q.first_stage}'")
        started = time.perf_counter()
        dense_rows = [i for i, q in enumerate(queries) if q.first_stage in ("dense", "hybrid")]
        vectors = self.encoder.encode_queries([queries[i].text for i in dense_rows]) if dense_rows else None
        embed_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        dense = self._dense(queries, dense_rows, vectors) if dense_rows else {}
        sparse = self._bm25(queries, [i for i, q in enumerate(queries) if q.first_stage in ("bm25", "hybrid")])
        out = []
        for i, q in enumerate(queries):
            if q.first_stage == "hybrid":
                hits = reciprocal_rank_fusion([[s for s, _ in dense[i]], [s for s, _ in sparse[i]]], self.rrf_k)
            else:
                hits = dense[i] if q.first_stage == "dense" else sparse[i]
            out.append(hits[: q.k])
        search_ms = (time.perf_counter() - started) * 1000
        return [Retrieved(hits, embed_ms, search_ms) for hits in out]

    def _dense(self, queries: Sequence[RetrieveQuery], rows: list[int],
               vectors: np.ndarray) -> dict[int, list[tuple[str, float]]]:
        """One search per distinct filter in the batch, at the deepest k asked under it."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for pos, i in enumerate(rows):
            groups[queries[i].filter_key()].append(pos)
        out = {}
        for positions in groups.values():
            first = queries[rows[positions[0]]]
            k = max(self.depth(queries[rows[p]]) for p in positions)
            hits = self.dense.search(vectors[positions], k, category=first.category, source=first.source)
            for p, row_hits in zip(positions, hits):
                i = rows[p]
                # an id the catalogue lacks (a change published between the two reads) is left out
                out[i] = [(s, float(d)) for s, d in row_hits if s in self.catalogue.rows][: self.depth(queries[i])]
        return out

    def _bm25(self, queries: Sequence[RetrieveQuery], rows: list[int]) -> dict[int, list[tuple[str, float]]]:
        if not rows:
            return {}
        scores = self.bm25.scores([queries[i].text for i in rows])
        for r, i in enumerate(rows):
            allowed = self.catalogue.allowed(queries[i].category, queries[i].source)
            if allowed is not None:
                scores[r, ~allowed] = -np.inf
        idx, top = top_k(scores, max(self.depth(queries[i]) for i in rows))
        skills = self.catalogue.skills
        return {i: [(skills[j].id, float(s)) for j, s in zip(idx[r], top[r]) if s > -np.inf][: self.depth(queries[i])]
                for r, i in enumerate(rows)}


def rerank_scores(reranker, items: Sequence[tuple[str, Sequence[Skill]]]) -> list[dict[str, float]]:
    """A cross-encoder's score of each (query, skill) pair, {skill id: score} per item; the pairs of every item
    go through `Reranker.score_batch` together (length-sorted batches)."""
    scored = reranker.score_batch([(q, list(skills)) for q, skills in items])
    return [{s.id: float(x) for s, x in zip(skills, t.tolist())} for (_, skills), t in zip(items, scored)]


def rerank_order(hits: list[tuple], scores: dict[str, float], retrieve_k: int) -> list[tuple]:
    """The reranked head (best score first; a tie keeps the first stage's order), then head candidates the
    reranker could not score, then the first stage's tail in its own order. `hits` are tuples whose first item
    is the skill id."""
    if not scores:
        return list(hits)
    head, tail = hits[:retrieve_k], hits[retrieve_k:]
    scored = sorted((h for h in head if h[0] in scores), key=lambda h: -scores[h[0]])
    return scored + [h for h in head if h[0] not in scores] + tail
