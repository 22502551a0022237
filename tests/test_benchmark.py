import json

import pytest

from conftest import write_jsonl
from skillrouter.evaluation.benchmark import BenchmarkError, export_eval_core, load_eval_core
from skillrouter.evaluation.runner import evaluate_system, write_result


@pytest.fixture
def eval_core_dir(tmp_path):
    root = tmp_path / "bench"
    (root / "pool").mkdir(parents=True)
    rows = [
        {"skill_id": "pdf", "name": "pdf-tools", "description": "Merge and split PDF files.",
         "body": "Use qpdf to merge PDF documents and split pages."},
        {"skill_id": "xlsx", "name": "spreadsheet", "description": "Build Excel workbooks.",
         "body": "Use openpyxl to write xlsx files with charts."},
        {"skill_id": "git", "name": "git-helper", "description": "Fix git history.",
         "body": "Rebase, squash and rewrite commits safely."},
    ]
    write_jsonl(root / "pool" / "part-0.jsonl.gz", rows, gz=True)
    write_jsonl(root / "tasks.jsonl", [
        {"task_id": "t1", "instruction_text": "merge these two PDF files", "extra": 1},
        {"task_id": "t2", "instruction_text": "an Excel workbook with charts from this PDF"},
        {"task_id": "t3", "instruction_text": "squash my commits"},
        {"task_id": "t4", "instruction_text": "anything generic"},
        {"task_id": "t5", "instruction_text": "unlabelled"},
    ])
    (root / "relevance.json").write_text(json.dumps({
        "t1": {"gt_skill_ids": ["pdf"], "relevance": {"pdf": 3}, "task_type": "single"},
        "t2": {"gt_skill_ids": ["xlsx", "pdf"], "relevance": {"xlsx": 3, "pdf": 3}, "task_type": "multi"},
        "t3": {"gt_skill_ids": ["git", "gone"], "relevance": {"git": 3, "gone": 2}},
        "t4": {"gt_skill_ids": ["pdf"], "relevance": {"pdf": 1}, "task_type": "generic_only"},
    }))
    return root


def test_load_eval_core(eval_core_dir):
    bench = load_eval_core(eval_core_dir)
    assert [t.task_id for t in bench.tasks] == ["t1", "t2", "t3"]
    assert bench.skipped == {"generic_only": 1, "no_relevance": 1}
    assert [t.task_type for t in bench.tasks] == ["single", "multi", "multi"]  # t3 inferred from two gt ids
    assert bench.missing_ids == {"t3": ["gone"]}
    assert {s.id for s in bench.skills} == {"pdf", "xlsx", "git"}


def test_evaluate_writes_predictions_and_metrics(eval_core_dir, tmp_path):
    bench = load_eval_core(eval_core_dir)
    result = evaluate_system("bm25", bench)
    out = write_result(result, tmp_path / "out")
    preds = json.loads((out / "predictions.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(preds) == {"t1", "t2", "t3"} and preds["t1"][0] == "pdf" and len(preds["t1"]) == 3
    assert preds["t3"][0] == "git"
    # t3 needs a skill absent from the pool: it can never be fully covered, and counts as a miss.
    assert metrics["metrics"]["multi"]["FullCoverage@10"] == 0.5
    assert metrics["metrics"]["all"]["Hit@1"] == 1.0 and metrics["metrics"]["all"]["n"] == 3
    assert metrics["missing_relevance_ids"] == {"t3": ["gone"]} and metrics["system"] == "bm25"


def test_export_round_trip(eval_core_dir, tmp_path):
    bench = load_eval_core(eval_core_dir)
    again = load_eval_core(export_eval_core(bench, tmp_path / "copy"))
    assert [(t.task_id, t.query, t.gt_skill_ids, t.relevance, t.task_type) for t in again.tasks] == \
           [(t.task_id, t.query, t.gt_skill_ids, t.relevance, t.task_type) for t in bench.tasks]
    assert [s.id for s in again.skills] == [s.id for s in bench.skills]


def test_layout_errors(tmp_path, eval_core_dir):
    with pytest.raises(BenchmarkError, match="missing 'tasks.jsonl'"):
        load_eval_core(tmp_path)
    (eval_core_dir / "relevance.json").write_text("{broken")
    with pytest.raises(BenchmarkError, match="relevance.json: invalid JSON"):
        load_eval_core(eval_core_dir)
    (eval_core_dir / "relevance.json").write_text("{}")
    with pytest.raises(BenchmarkError, match="no task left"):
        load_eval_core(eval_core_dir)


def test_router_api_validates_input(eval_core_dir):
    from skillrouter import Router

    router = Router(load_eval_core(eval_core_dir).skills, "bm25")
    routes = router.route("split a PDF into pages", top_k=2)
    assert [r.rank for r in routes] == [1, 2] and routes[0].skill_id == "pdf" and routes[0].score > routes[1].score
    with pytest.raises(ValueError, match="query is empty"):
        router.route("   ")
    with pytest.raises(ValueError, match="top_k must be between"):
        router.route("pdf", top_k=0)
    with pytest.raises(ValueError, match="unknown system 'nope'"):
        Router(load_eval_core(eval_core_dir).skills, "nope")


def test_distractors_grow_the_pool_and_keep_labels(eval_core_dir, tmp_path):
    from skillrouter.evaluation.benchmark import add_distractors

    extra = write_jsonl(tmp_path / "extra.jsonl", [
        {"id": "pdf", "name": "shadow", "description": "same id as a pool skill", "body": "ignored"},
        {"id": "pdf2", "name": "pdf-merge", "description": "Merge PDF files.", "body": "merge two PDF files"},
    ])
    bench = add_distractors(load_eval_core(eval_core_dir), [str(extra)])
    assert [s.id for s in bench.skills] == ["pdf", "xlsx", "git", "pdf2"]
    assert next(s for s in bench.skills if s.id == "pdf").name == "pdf-tools"
    assert bench.name.endswith("+1-distractors") and len(bench.tasks) == 3
    # an unlabelled distractor that matches better pushes the labelled skill down: a miss at Hit@1
    result = evaluate_system("bm25", bench)
    assert result.predictions["t1"][0] == "pdf2" and "pdf" in result.predictions["t1"]
    assert result.metrics["single"]["Hit@1"] == 0.0


def test_dense_systems(eval_core_dir):
    from skillrouter import Router

    skills = load_eval_core(eval_core_dir).skills
    for name in ("minilm", "dense:minilm"):
        routes = Router(skills, name).route("combine two PDF documents into one file", top_k=3)
        assert routes[0].skill_id == "pdf" and -1.0 <= routes[-1].score <= routes[0].score <= 1.0
    with pytest.raises(ValueError, match="or dense:MODEL"):
        Router(skills, "dense")


def test_exported_models_read_the_length_they_were_trained_at(eval_core_dir, tmp_path, monkeypatch):
    """`dense:PATH` and `+rerank:PATH` of a training job's export use its recorded max_length and windows, not the
    profile's (a reranker trained on 128-token pairs and fed 512, or the reverse, ranks worse than either)."""
    import skillrouter.retrieval.systems as systems
    from skillrouter.config import PipelineConfig
    from skillrouter.models.loading import EXPORT_INFO, export_info

    export = tmp_path / "reranker"
    export.mkdir()
    (export / EXPORT_INFO).write_text(json.dumps({"kind": "reranker", "max_length": 96, "windows": 3}))
    config = PipelineConfig.model_validate({"mining": {"encoder_windows": 2}, "reranker": {"windows": 5}})
    assert export_info(str(export))["max_length"] == 96 and export_info(str(tmp_path)) == {}
    spec = systems.get_system(f"dense:{export}").dense.spec(config)
    assert (spec.model, spec.max_length, spec.windows) == (str(export), 96, 3)
    spec = systems.get_system("dense:minilm").dense.spec(config)  # no export info: the profile's mining settings
    assert (spec.model, spec.max_length, spec.windows) == ("minilm", config.mining.encoder_max_length, 2)

    built = {}
    monkeypatch.setattr(systems, "RerankRetriever", lambda first, skills, spec, *rest: built.update(spec=spec))
    skills = load_eval_core(eval_core_dir).skills
    systems.get_system(f"bm25+rerank:{export}").build(skills, config)
    assert (built["spec"].model, built["spec"].max_length, built["spec"].windows) == (str(export), 96, 3)
    systems.get_system(f"bm25+rerank:{tmp_path}").build(skills, config)  # no export info: the profile's settings
    assert (built["spec"].max_length, built["spec"].windows) == (config.reranker.max_length, 5)


def test_reciprocal_rank_fusion():
    from skillrouter.retrieval.fusion import reciprocal_rank_fusion

    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60)
    assert [i for i, _ in fused] == ["b", "a", "d", "c"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61) and fused[1][1] == pytest.approx(1 / 61)
    assert reciprocal_rank_fusion([["x", "y"], ["y", "x"]])[0][0] == "x"  # a tie: the first met wins
    assert reciprocal_rank_fusion([[], []]) == [] and reciprocal_rank_fusion([]) == []


def test_convex_combination_weighs_min_max_normalised_scores():
    from skillrouter.retrieval.fusion import Fusion, convex_combination

    dense, sparse = [("a", 0.9), ("b", 0.7), ("c", 0.5)], [("c", 30.0), ("d", 20.0), ("a", 10.0)]
    fused = dict(convex_combination([dense, sparse], [0.5, 0.5]))
    # each list scaled to [0, 1] over its own candidates; one missing from a list gets that list's 0
    assert fused == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.5, "d": 0.25})
    assert [i for i, _ in convex_combination([dense, sparse], [0.5, 0.5])][:2] == ["a", "c"]  # a tie: first met
    assert [i for i, _ in convex_combination([dense, sparse], [1.0, 0.0])][0] == "a"
    assert [i for i, _ in convex_combination([dense, sparse], [0.0, 1.0])][:2] == ["c", "d"]
    # a scale of 1,000 or an offset changes nothing: only each list's own spread counts
    assert dict(convex_combination([dense, [(i, 1000 * s + 7) for i, s in sparse]], [0.3, 0.7])) == \
        pytest.approx(dict(convex_combination([dense, sparse], [0.3, 0.7])))
    assert dict(convex_combination([[("x", 2.0), ("y", 2.0)], []], [0.5, 0.5])) == {"x": 0.5, "y": 0.5}
    with pytest.raises(ValueError, match="2 lists of hits but 1 weights"):
        convex_combination([dense, sparse], [1.0])
    # the RRF of the same lists ranks by rank alone: c (3rd and 1st) beats a (1st and 3rd) only by order met
    assert [i for i, _ in Fusion("rrf").fuse(dense, sparse)] == ["a", "c", "b", "d"]
    assert [i for i, _ in Fusion(dense_weight=0.8).fuse(dense, sparse)] == ["a", "b", "c", "d"]


def test_hybrid_system_fuses_minilm_and_bm25(eval_core_dir):
    from skillrouter import Router
    from skillrouter.retrieval.systems import get_system

    skills = load_eval_core(eval_core_dir).skills
    routes = Router(skills, "hybrid").route("combine two PDF documents into one file", top_k=3)
    assert routes[0].skill_id == "pdf" and len({r.skill_id for r in routes}) == 3
    # equal weights of min-max normalised scores: the top of both lists scores 1
    assert routes[0].score == pytest.approx(1.0) and 1 >= routes[1].score >= routes[2].score >= 0
    assert get_system("hybrid:minilm").name == "hybrid" and get_system("hybrid:finetuned").name == "hybrid:finetuned"
    assert get_system("hybrid:finetuned+reranker").name == "hybrid:finetuned+reranker"
    with pytest.raises(ValueError, match="hybrid fuses a dense system"):
        get_system("hybrid:bm25")


def _tied_benchmark():
    """Ten skills, each followed in the pool by two look-alikes with its name and description and another body;
    each task asks for the original in words of its name."""
    from skillrouter.corpus.skill import Skill
    from skillrouter.evaluation.benchmark import Benchmark, Task

    topics = ["pdf merge", "excel chart", "git rebase", "docker image", "dns lookup", "cron schedule",
              "kafka consumer", "redis cache", "nginx proxy", "terraform plan"]
    skills, tasks = [], []
    for i, topic in enumerate(topics):
        name, description = topic.replace(" ", "-"), f"Help with {topic} work."
        skills += [Skill(f"s{i}", name, description, f"The real steps for {topic}, version {j}.") if j == 0 else
                   Skill(f"s{i}~lookalike-{j}", name, description, f"Broken steps {j} for {topic}.")
                   for j in range(3)]
        tasks.append(Task(f"t{i}", f"{topic} please", (f"s{i}",), {f"s{i}": 2.0}, "single"))
    return Benchmark("tied", tasks, skills)


def test_ties_fall_in_a_seeded_random_order_not_the_pools(monkeypatch):
    import numpy as np

    import skillrouter.retrieval.systems as systems
    from skillrouter.config import PipelineConfig

    bench = _tied_benchmark()  # every original comes before its look-alikes: pool order would win each tie
    hits = [evaluate_system("bm25-nd", bench, PipelineConfig.model_validate({"eval": {"tie_seed": seed}}))
            .metrics["all"]["Hit@1"] for seed in range(5)]
    assert all(h < 0.8 for h in hits) and 0.15 < np.mean(hits) < 0.55  # a third of ties, not all of them

    class Constant:  # a system that scores every skill the same
        def __init__(self, skills):
            self.n = len(skills)

        def search(self, queries, k):
            return np.tile(np.arange(k), (len(queries), 1)), np.zeros((len(queries), k))

    monkeypatch.setitem(systems.SYSTEMS, "constant", systems.System("constant", "ties", lambda s, c: Constant(s)))
    result = evaluate_system("constant", bench)
    assert result.metrics["all"]["Hit@1"] <= 0.1  # one task at most: chance, not the pool's order
    assert result.provenance["tie_seed"] == 0


def test_fused_rerank_order_moves_from_the_first_stage_to_the_reranker():
    from skillrouter.retrieval.rerank import rerank_order

    hits = [("a", 9.0), ("b", 8.0), ("c", 7.0), ("d", 1.0), ("tail", 0.5)]  # first stage, best first
    reranker = {"a": 0.0, "b": 0.1, "c": 3.0, "d": 0.2}  # sure of c, nearly flat on the others
    ids = [[h[0] for h in rerank_order(hits, reranker, 4, w)] for w in (0.0, 0.1, 0.5, 1.0)]
    assert ids[0] == ids[1] == ["a", "b", "c", "d", "tail"]  # weight 0 (and near it): the first stage's order
    assert ids[3] == ["c", "d", "b", "a", "tail"]  # weight 1: the reranker alone (the paper's)
    assert ids[2] == ["c", "a", "b", "d", "tail"]  # in between: its confident pick rises, its noise does not
    flat = {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5}  # ties keep the first stage's order, at every weight
    assert all([h[0] for h in rerank_order(hits, flat, 4, w)] == ["a", "b", "c", "d", "tail"] for w in (0.0, 0.5, 1.0))


def test_rerank_scores_scores_a_pair_once_per_model_and_skill_text():
    import torch

    from skillrouter.corpus.skill import Skill
    from skillrouter.retrieval.rerank import rerank_scores

    class Counting:  # a cross-encoder scoring by body length, counting the pairs it is given
        def __init__(self):
            self.pairs = 0

        def score_batch(self, items):
            self.pairs += sum(len(skills) for _, skills in items)
            return [torch.tensor([float(len(s.body)) for s in skills]) for _, skills in items]

    a, b = Skill("a", "a", "a", "one"), Skill("b", "b", "b", "three")
    model = Counting()
    first = rerank_scores(model, [("q", [a, b]), ("r", [a])])
    again = rerank_scores(model, [("q", [b, a]), ("r", [a, b])])
    assert first == [{"a": 3.0, "b": 5.0}, {"a": 3.0}] and again == [{"b": 5.0, "a": 3.0}, {"a": 3.0, "b": 5.0}]
    assert model.pairs == 4  # only (r, b) was new
    edited = Skill("a", "a", "a", "one, edited")  # the same id with another text is another pair
    assert rerank_scores(model, [("q", [edited])]) == [{"a": 11.0}] and model.pairs == 5
    other = Counting()  # another model scores for itself
    assert rerank_scores(other, [("q", [a])]) == [{"a": 3.0}] and other.pairs == 1


def test_a_score_store_lets_a_later_process_skip_the_pairs_an_earlier_one_scored(tmp_path, monkeypatch):
    import torch

    from skillrouter.corpus.skill import Skill
    from skillrouter.models.reranker import RerankerSpec
    from skillrouter.retrieval import rerank

    class Counting:
        def __init__(self, spec):
            self.spec, self.pairs = spec, 0

        def score_batch(self, items):
            self.pairs += sum(len(skills) for _, skills in items)
            return [torch.tensor([float(len(s.body)) + 0.25 for s in skills]) for _, skills in items]

    weights = tmp_path / "reranker"
    weights.mkdir()
    (weights / "model.safetensors").write_text("v1")
    spec = RerankerSpec(str(weights), 128)
    a, b = Skill("a", "a", "a", "one"), Skill("b", "b", "b", "three")
    first = Counting(spec)
    scored = rerank.rerank_scores(first, [("q", [a, b])], rerank.score_store(tmp_path / "cache", spec))
    monkeypatch.setattr(rerank, "_memo", type(rerank._memo)())  # a new process: nothing in memory
    later = Counting(spec)
    again = rerank.rerank_scores(later, [("q", [a, b]), ("r", [a])], rerank.score_store(tmp_path / "cache", spec))
    assert scored == [{"a": 3.25, "b": 5.25}] and again == [scored[0], {"a": 3.25}] and later.pairs == 1
    (weights / "model.safetensors").write_text("v2, retrained")  # new weights: a new store, scored again
    rerank._memo.clear()
    retrained = Counting(spec)
    rerank.rerank_scores(retrained, [("q", [a, b])], rerank.score_store(tmp_path / "cache", spec))
    assert retrained.pairs == 2
    assert rerank.score_store(tmp_path / "cache", RerankerSpec("minilm")) is None  # no version: never stored
    # scores in another dtype are another model's: a bf16 scorer never reads fp32 scores, nor the reverse
    bf16 = RerankerSpec(str(weights), 128, dtype="bfloat16")
    assert rerank.score_store(tmp_path / "cache", bf16).path != rerank.score_store(tmp_path / "cache", spec).path
    # serving (memo off) scores every pair it is asked, however often: what its load tests must measure
    serving = Counting(spec)
    for _ in range(2):
        assert rerank.rerank_scores(serving, [("q", [a, b])], memo=False) == [{"a": 3.25, "b": 5.25}]
    assert serving.pairs == 4
