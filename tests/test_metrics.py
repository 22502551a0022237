import math

import pytest

from skillrouter.evaluation.metrics import (
    METRICS,
    aggregate,
    full_coverage_at_k,
    hit_at_k,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    task_metrics,
)

RANKED = ["a", "x", "b", "y", "c"]
GT = {"a", "b"}
REL = {"a": 2, "b": 2, "c": 1}


def test_hand_computed_values():
    assert hit_at_k(RANKED, GT, 1) == 1.0 and hit_at_k(["x", "a"], GT, 1) == 0.0
    assert mrr_at_k(["x", "y", "b"], GT, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(["x"] * 10 + ["a"], GT, 10) == 0.0  # beyond the cut-off
    assert recall_at_k(["x", "y", "b"], GT, 10) == 0.5 and recall_at_k(RANKED, GT, 2) == 0.5
    assert full_coverage_at_k(RANKED, GT, 3) == 1.0 and full_coverage_at_k(RANKED, GT, 2) == 0.0
    ideal3 = 2 / 1 + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(RANKED, REL, 1) == 1.0
    assert ndcg_at_k(RANKED, REL, 3) == pytest.approx((2 + 2 / math.log2(4)) / ideal3)  # 0.7975
    assert ndcg_at_k(RANKED, REL, 10) == pytest.approx((2 + 1 + 1 / math.log2(6)) / ideal3)  # 0.9003
    assert ndcg_at_k(["c", "a"], REL, 1) == pytest.approx(1 / 2)  # graded: a partial answer earns part


def test_edge_cases():
    assert ndcg_at_k(["a"], {}, 10) == 0.0 and recall_at_k(["a"], set(), 10) == 0.0
    assert full_coverage_at_k(["a"], set(), 10) == 0.0
    assert task_metrics([], GT, REL) == {name: 0.0 for name in METRICS}


def test_metric_names_match_the_release():
    assert list(METRICS) == ["Hit@1", "MRR@10", "nDCG@1", "nDCG@3", "nDCG@10", "Recall@10", "Recall@20",
                             "Recall@50", "FullCoverage@3", "FullCoverage@5", "FullCoverage@10"]


def test_aggregate_by_task_type():
    per_task = {"t1": task_metrics(["a"], {"a"}, {"a": 2}), "t2": task_metrics(["x", "a"], {"a", "b"}, REL),
                "t3": task_metrics(["b", "a"], {"a", "b"}, REL)}
    agg = aggregate(per_task, {"t1": "single", "t2": "multi", "t3": "multi"})
    assert agg["all"]["n"] == 3 and agg["single"]["n"] == 1 and agg["multi"]["n"] == 2
    assert agg["all"]["Hit@1"] == pytest.approx(2 / 3) and agg["multi"]["Hit@1"] == 0.5
    assert agg["multi"]["FullCoverage@3"] == 0.5 and agg["single"]["MRR@10"] == 1.0
    assert agg["multi"]["MRR@10"] == pytest.approx((1 / 2 + 1) / 2)
    empty = aggregate(per_task, {"t1": "multi", "t2": "multi", "t3": "multi"})
    assert empty["single"]["n"] == 0 and math.isnan(empty["single"]["Hit@1"])
