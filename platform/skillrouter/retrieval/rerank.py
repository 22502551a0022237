"""The second stage: a cross-encoder's scores for a first stage's head, and the final order serving and the
evaluation both give. No torch here: the reranker is passed in."""

from __future__ import annotations

from collections.abc import Sequence

from skillrouter.corpus.skill import Skill


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
