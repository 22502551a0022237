"""Reciprocal rank fusion: one ranking from several first stages, by rank alone."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

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
