"""One ranking from a dense and a lexical first stage: a convex combination of their normalised scores (the
default), or reciprocal rank fusion.

Bruch, Gai and Ingber ("An Analysis of Fusion Functions for Hybrid Retrieval", TOIS 2023) find that a convex
combination of min-max normalised scores beats RRF in and out of domain, and that RRF's k flattens the top ranks:
at k = 60 the first ranks of two lists score 1/61, 1/62, ... Here the trained MiniLM's hybrid with RRF sent the
main command's Postgres example to the wrong skill by 0.0003, ranked first by BM25 alone. Held-out Hit@1 with this
repository's realistic requests (configs/minilm.yaml, analyzer english): RRF 85.1 / 84.4 (dev / test), convex 0.5
89.6 / 86.7; the bundled set 92.3 -> 98.2.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

RRF_K = 60  # Cormack et al. (2009): the constant that damps the weight of the very first ranks
FUSION_DEPTH = 100  # candidates each fused first stage contributes

Item = TypeVar("Item", bound=Hashable)


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


Hits = Sequence[tuple[Item, float]]  # (item, score), best first


def convex_combination(hits: Sequence[Hits], weights: Sequence[float]) -> list[tuple[Item, float]]:
    """score(d) = sum over lists of weight * (s - min) / (max - min), each list's scores min-max normalised over
    its own candidates (best first); a candidate missing from a list gets that list's 0, and a list whose scores
    are all equal gives each of its candidates 1. Ties go to the item met first, list by list."""
    if len(hits) != len(weights):
        raise ValueError(f"{len(hits)} lists of hits but {len(weights)} weights")
    scores: dict[Item, float] = {}
    for ranking, weight in zip(hits, weights):
        if not ranking:
            continue
        values = [s for _, s in ranking]
        low, span = min(values), max(values) - min(values)
        for item, s in ranking:
            scores[item] = scores.get(item, 0.0) + weight * ((s - low) / span if span > 0 else 1.0)
    return sorted(scores.items(), key=lambda kv: -kv[1])


@dataclass(frozen=True)
class Fusion:
    """How `hybrid` fuses the dense and BM25 candidates (serving.fusion, .dense_weight, .rrf_k, .fusion_depth)."""

    method: Literal["convex", "rrf"] = "convex"
    dense_weight: float = 0.5
    rrf_k: int = RRF_K
    depth: int = FUSION_DEPTH

    @classmethod
    def of(cls, serving) -> Fusion:
        """The fusion a `ServingConfig` describes."""
        return cls(serving.fusion, serving.dense_weight, serving.rrf_k, serving.fusion_depth)

    def fuse(self, dense: Hits, sparse: Hits) -> list[tuple[Item, float]]:
        if self.method == "rrf":
            return reciprocal_rank_fusion([[i for i, _ in dense], [i for i, _ in sparse]], self.rrf_k)
        return convex_combination([dense, sparse], [self.dense_weight, 1 - self.dense_weight])


DEFAULT_FUSION = Fusion()
