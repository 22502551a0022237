"""Ranking metrics of the SkillRouter release, per task and aggregated over all, single- and multi-skill tasks.

`ranked` is a list of skill ids, best first. `gt` is the set of skills a task needs (`gt_skill_ids`); `relevance`
maps skill ids to graded relevance (gt skills at the top grade, helpful ones lower). nDCG uses linear gains,
grade / log2(rank + 1), normalised by the ideal ordering of all graded skills.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence


def hit_at_k(ranked: Sequence[str], gt: set[str], k: int) -> float:
    return float(any(s in gt for s in ranked[:k]))


def mrr_at_k(ranked: Sequence[str], gt: set[str], k: int) -> float:
    for rank, s in enumerate(ranked[:k], start=1):
        if s in gt:
            return 1.0 / rank
    return 0.0


def recall_at_k(ranked: Sequence[str], gt: set[str], k: int) -> float:
    return len(gt & set(ranked[:k])) / len(gt) if gt else 0.0


def full_coverage_at_k(ranked: Sequence[str], gt: set[str], k: int) -> float:
    """1 when every needed skill is in the top k: what a multi-skill task needs to be fully served."""
    return float(bool(gt) and gt <= set(ranked[:k]))


def ndcg_at_k(ranked: Sequence[str], relevance: Mapping[str, float], k: int) -> float:
    dcg = sum(relevance.get(s, 0.0) / math.log2(rank + 1) for rank, s in enumerate(ranked[:k], start=1))
    ideal = sorted((g for g in relevance.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg else 0.0


def _gt(fn: Callable, k: int) -> Callable:
    return lambda ranked, gt, rel: fn(ranked, gt, k)


METRICS: dict[str, Callable[[Sequence[str], set[str], Mapping[str, float]], float]] = {
    "Hit@1": _gt(hit_at_k, 1),
    "MRR@10": _gt(mrr_at_k, 10),
    "nDCG@1": lambda r, g, rel: ndcg_at_k(r, rel, 1),
    "nDCG@3": lambda r, g, rel: ndcg_at_k(r, rel, 3),
    "nDCG@10": lambda r, g, rel: ndcg_at_k(r, rel, 10),
    "Recall@10": _gt(recall_at_k, 10),
    "Recall@20": _gt(recall_at_k, 20),
    "Recall@50": _gt(recall_at_k, 50),
    "FullCoverage@3": _gt(full_coverage_at_k, 3),
    "FullCoverage@5": _gt(full_coverage_at_k, 5),
    "FullCoverage@10": _gt(full_coverage_at_k, 10),
}
SUBSETS = ("all", "single", "multi")


def task_metrics(ranked: Sequence[str], gt: set[str], relevance: Mapping[str, float]) -> dict[str, float]:
    return {name: fn(ranked, gt, relevance) for name, fn in METRICS.items()}


def aggregate(per_task: Mapping[str, Mapping[str, float]], task_types: Mapping[str, str]) -> dict[str, dict]:
    """Mean of each metric over all tasks and over each task type; `n` counts the tasks of each subset."""
    out = {}
    for subset in SUBSETS:
        ids = [t for t in per_task if subset == "all" or task_types[t] == subset]
        row: dict[str, float] = {"n": len(ids)}
        for name in METRICS:
            row[name] = sum(per_task[t][name] for t in ids) / len(ids) if ids else float("nan")
        out[subset] = row
    return out
