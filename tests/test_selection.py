"""Choosing the served system on validation queries: the fusion weight, the tie rule, and a reranker that does not
beat its first stage is not served."""

import pyarrow as pa
import pytest

from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import read_skills
from skillrouter.evaluation.selection import Row, best_row, fusion_rows, select_system, served_config, served_row
from skillrouter.training.data import held_out_skills, sample_groups


def test_fusion_rows_score_the_first_stage_alone_and_every_weight():
    hits = [[("a", 3.0), ("b", 2.0), ("c", 1.0)], [("a", 3.0), ("b", 2.9), ("c", 1.0)]]
    wanted = [{"b"}, {"a"}]  # the first stage misses the first; the reranker is sure of it, unsure on the second
    scores = [{"a": 0.0, "b": 5.0, "c": 0.0}, {"a": 0.1, "b": 0.0, "c": 0.2}]
    rows = fusion_rows("bm25", hits, scores, wanted, [0.0, 0.5, 1.0], retrieve_k=3)
    assert [r.weight for r in rows] == [None, 0.5, 1.0] and [r.system for r in rows] == \
        ["bm25", "bm25+reranker@0.5", "bm25+reranker"]
    alone, half, full = rows
    assert alone.hit1 == 0.5 and alone.mrr10 == 0.75
    assert half.hit1 == 1.0 and full.hit1 == 0.5  # fused, the confident pick wins and the noisy one does not
    assert fusion_rows("bm25", hits, None, wanted, [0.5], 3) == [alone]  # no reranker: the first stage only


def test_best_row_prefers_the_simpler_system_on_a_tie():
    plain, fused, other = Row("bm25", None, 0.5, 0.6), Row("bm25", 0.3, 0.5, 0.6), Row("finetuned", None, 0.5, 0.6)
    assert best_row([fused, plain]) is plain  # no reranker beats an equal reranked row
    assert best_row([fused, other, plain]) is other  # and among equals the earlier candidate
    better = Row("bm25", 0.3, 0.5, 0.61)
    assert best_row([plain, better, other]) is better


def test_a_reranker_is_served_only_on_a_clear_gain_over_its_own_first_stage():
    bm25, hybrid = Row("bm25", None, 0.80, 0.85), Row("hybrid:finetuned", None, 0.836, 0.892)
    hair = Row("hybrid:finetuned", 0.1, 0.836, 0.893)  # the tie that once served a reranker 2 points under its base
    assert best_row([bm25, hybrid, hair]) is hair and served_row([bm25, hybrid, hair], 0.02) is hybrid
    clear = Row("hybrid:finetuned", 0.3, 0.86, 0.90)
    assert served_row([bm25, hybrid, hair, clear], 0.02) is clear
    dearer = Row("hybrid:finetuned", 0.5, 0.87, 0.88)  # more Hit@1 but a lower MRR@10: not clearly better
    assert served_row([bm25, hybrid, dearer], 0.02) is hybrid
    strong = Row("bm25", 0.2, 0.95, 0.97)  # a weaker first stage may win through its reranker
    assert served_row([bm25, hybrid, strong], 0.02) is strong
    assert served_row([bm25, hybrid, hair], 0.0) is hair  # no margin asked: the best row


def test_held_out_skills_never_reach_training():
    groups = pa.Table.from_pylist([{"query_id": f"q{i}", "query": f"query {i}", "positive_id": f"s{i % 20}",
                                    "negatives": [{"skill_id": "x", "source": "random", "score": 0.0}]}
                                   for i in range(60)])
    held = held_out_skills(groups, 0.15, seed=0)
    assert len(held) == 3 and held == held_out_skills(groups, 0.15, seed=0) != held_out_skills(groups, 0.15, seed=1)
    trained_on = set(sample_groups(groups, None, 0, held).column("positive_id").to_pylist())
    assert trained_on and not trained_on & held and len(trained_on) == 17


@pytest.fixture(scope="module")
def bundled():
    return read_skills("bundled")


def _groups(skills):
    """One validation-style query per skill: words of its description (lexical, as offline queries are)."""
    return pa.Table.from_pylist([{"query_id": f"q{i}", "query": s.description, "positive_id": s.id,
                                  "negatives": [{"skill_id": skills[i - 1].id, "source": "random", "score": 0.0}]}
                                 for i, s in enumerate(skills)])


def test_a_reranker_that_does_not_beat_its_first_stage_is_not_served(bundled, tmp_path):
    import torch

    from skillrouter.models.loading import resolve_model_path

    torch.manual_seed(0)  # MiniLM with a fresh classification head: a cross-encoder that ranks at random
    config = PipelineConfig.model_validate({
        "run_dir": str(tmp_path), "reranker": {"output_dir": resolve_model_path("minilm"), "max_length": 96},
        "routing": {"candidates": ["bm25"], "validation_queries": 12, "fusion_weights": [0.0, 0.5, 1.0]}})
    selection = select_system(bundled, _groups(bundled), config, log=lambda *_: None)
    rows = {r["system"]: r for r in selection["rows"]}
    assert set(rows) == {"bm25", "bm25+reranker@0.5", "bm25+reranker"}
    assert rows["bm25"]["hit1"] > rows["bm25+reranker"]["hit1"]  # a random reranker is worse than BM25 here
    assert selection["system"] == "bm25" and selection["rerank"] is False and "not served" in selection["why"]
    assert selection["validation"]["queries"] == 12 and selection["chosen_on"] == "validation"
    served = served_config(config, selection)
    assert served.serving.first_stage == "bm25" and served.serving.rerank is False
    assert served_config(config, None) is config


def test_the_served_system_is_chosen_on_a_benchmark_when_one_is_named(bundled, tmp_path):
    """With `routing.selection_benchmark`, the first stages compete on its requests (here the realistic set's
    development split, which the reports leave out), each at the weight fitted on the validation queries."""
    config = PipelineConfig.model_validate({
        "run_dir": str(tmp_path), "routing": {"candidates": ["bm25"], "validation_queries": 12,
                                              "selection_benchmark": "realistic-dev"}})
    selection = select_system(bundled, _groups(bundled), config, log=lambda *_: None)
    assert selection["chosen_on"] == "realistic-easy-dev" and selection["system"] == "bm25"
    (row,) = selection["chosen_rows"]  # no reranker trained: the first stage alone
    assert 0.5 < row["hit1"] < 1.0 and selection["rows"][0]["hit1"] == 1.0  # words of a description: easy
