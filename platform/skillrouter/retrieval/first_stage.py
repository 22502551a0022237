"""The first stage of retrieve-then-rerank, the one copy that serving and the evaluation both run.

`FirstStage`: candidates for a batch of queries, `dense` (a query encoder and a dense search backend), `bm25`
(over whatever text the BM25 index was built on), or `hybrid` (the two fused: retrieval/fusion.py). The dense backend is
Milvus in serving (`serving.stages`) or `dense.VectorSearch`, an exact in-memory product (the evaluation's, and a
replica's copy of a pinned index version): the same ranking as a FLAT index.

No Ray, no Milvus and no torch are imported here: the encoder and the backend are passed in.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from skillrouter.retrieval.bm25 import BM25Index, top_k
from skillrouter.retrieval.dense import DenseSearch, QueryEncoder
from skillrouter.retrieval.filters import Catalogue, FilterValue, UnsafeValue, value_problem
from skillrouter.retrieval.fusion import DEFAULT_FUSION, Fusion


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


class FirstStage:
    """Candidates for a batch of queries from one corpus.

    `dense`: the query encoder and the dense backend's top-k (one search per distinct filter in the batch);
    `bm25`: BM25 scores (filters mask them); `hybrid`: both fused as `fusion` says (retrieval/fusion.py), each
    contributing its top `fusion.depth`. A stage built without an encoder or without BM25 answers only the kinds it
    has.
    """

    def __init__(self, catalogue: Catalogue, encoder: QueryEncoder | None = None, dense: DenseSearch | None = None,
                 bm25: BM25Index | None = None, fusion: Fusion = DEFAULT_FUSION):
        self.catalogue, self.encoder, self.dense, self.bm25, self.fusion = catalogue, encoder, dense, bm25, fusion

    def depth(self, query: RetrieveQuery) -> int:
        return max(query.k, self.fusion.depth) if query.first_stage == "hybrid" else query.k

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
                hits = self.fusion.fuse(dense[i], sparse[i])
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
