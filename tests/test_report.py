"""The evaluation report and the paper's ablations: the page and its plots from real results, the evaluation
running serving's first stage, the ablation plan, and a cheap ablation run end to end."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from skillrouter.config import PipelineConfig, load_config
from skillrouter.corpus.ingest import write_skills
from skillrouter.evaluation.benchmark import export_eval_core, load_benchmark, load_eval_core
from skillrouter.evaluation.report import Ablation, paper_comparisons, read_run, reranker_warnings, write_report
from skillrouter.evaluation.runner import EvalResult, eval_dir, evaluate_system, read_result, tie_order, write_result

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    """Eight skills in look-alike pairs (names and descriptions alike, bodies not) and seven tasks, two of them
    needing two skills: BM25 on the full text beats BM25 on name + description here, as in the paper."""
    root = tmp_path_factory.mktemp("bench")
    (root / "pool").mkdir()
    pairs = [("pdf", "documents", "Work with PDF documents.",
              ("Merge PDF files with qpdf and number the pages.", "Fill PDF forms and sign them with pdftk.")),
             ("sheet", "spreadsheets", "Work with spreadsheets.",
              ("Pivot tables and charts in openpyxl workbooks.", "Import CSV exports into a pandas dataframe.")),
             ("git", "git", "Work with git repositories.",
              ("Squash and rebase commits before a merge.", "Bisect a regression to the commit that caused it.")),
             ("ci", "pipelines", "Work with CI pipelines.",
              ("Cache dependencies in GitHub Actions workflows.", "Shard the test suite across parallel runners."))]
    rows = []
    for prefix, name, description, bodies in pairs:
        for i, body in enumerate(bodies):
            rows.append({"id": f"{prefix}-{i}", "name": f"{name}-helper", "description": description, "body": body})
    write_jsonl(root / "pool" / "skills.jsonl", rows)
    tasks = {"t1": ("number the pages after merging two PDF files with qpdf", ["pdf-0"]),
             "t2": ("sign this PDF form", ["pdf-1"]),
             "t3": ("a pivot chart from the workbook", ["sheet-0"]),
             "t4": ("find which commit caused the regression with bisect", ["git-1"]),
             "t5": ("squash commits then cache dependencies in the workflow", ["git-0", "ci-0"]),
             "t6": ("import the CSV into pandas and shard the tests across runners", ["sheet-1", "ci-1"]),
             "t7": ("spreadsheets", ["sheet-0"])}
    write_jsonl(root / "tasks.jsonl", [{"task_id": t, "instruction_text": q} for t, (q, _) in tasks.items()])
    (root / "relevance.json").write_text(json.dumps({
        t: {"gt_skill_ids": gt, "relevance": {s: 3 for s in gt}} for t, (_, gt) in tasks.items()}))
    return root


@pytest.fixture(scope="module")
def results(bench_dir, tiny_qwen3_reranker):
    bench = load_eval_core(bench_dir)
    return [evaluate_system(s, bench, top_k=8) for s in ("bm25", "bm25-nd", f"bm25+rerank:{tiny_qwen3_reranker}")]


def test_hit_at_k_from_predictions_is_monotone_and_matches_the_metrics(results):
    for r in results:
        for subset in ("all", "single", "multi"):
            curve = r.hit_at_k[subset]
            assert len(curve) == 8 and all(a <= b for a, b in zip(curve, curve[1:]))
            assert curve[0] == pytest.approx(r.metrics[subset]["Hit@1"])
        assert r.hit_at_k["all"][-1] == 1.0  # the whole pool of 8 is ranked: every task is hit by k = 8
    bm25, nd, _ = results
    assert bm25.metrics["all"]["Hit@1"] > nd.metrics["all"]["Hit@1"]  # the bodies tell the look-alikes apart


def test_report_has_every_system_and_its_numbers(results, tmp_path):
    path = write_report(results, tmp_path / "report", title="Tiny report", notes=["a note"])
    text = path.read_text()
    assert path.name == "report.md" and text.startswith("# Tiny report") and "- a note" in text
    assert "7 tasks (5 single-skill, 2 multi-skill), 8 skills in the pool" in text
    for r in results:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{r.system}` | "))
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
        assert cells[1:3] == [f"{100 * r.metrics['all'][m]:.1f}" for m in ("Hit@1", "MRR@10")]
        assert f"| `{r.system}` | multi | 2 |" in text  # the by-type table
    bm25, nd, reranked = results
    delta = 100 * (nd.metrics["all"]["Hit@1"] - bm25.metrics["all"]["Hit@1"])
    assert f"| name + description instead of the full text (BM25) | `bm25` | `bm25-nd` | {delta:+.1f} |" in text
    assert f"| reranking the top 20 with {reranked.system.split(':', 1)[1]} | `bm25` | `{reranked.system}` |" in text
    assert "skillrouter ablations --config" in text  # no ablations yet: how to add them
    for name in ("metrics.png", "hit_at_k.png"):
        data = (tmp_path / "report" / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000 and f"]({name})" in text
    assert not (tmp_path / "report" / "ablations.png").exists()


def test_report_ablation_section_and_plot(results, tmp_path):
    bm25, nd, reranked = results
    ablations = [Ablation("text-bm25", "BM25 over the full text or name + description",
                          [("full text", bm25), ("name + description", nd)], ["a note on training"]),
                 Ablation("rerank", "Reranked or not", [("first stage", bm25), ("reranked", reranked)])]
    text = write_report(results, tmp_path, ablations=ablations).read_text()
    section = text[text.index("## Ablations"):]
    assert "### BM25 over the full text or name + description" in section and "- a note on training" in section
    delta = 100 * (nd.metrics["all"]["Hit@1"] - bm25.metrics["all"]["Hit@1"])
    assert f"| name + description | `bm25-nd` | {100 * nd.metrics['all']['Hit@1']:.1f} |" in section
    assert f"| {delta:+.1f} |" in section and "skillrouter ablations --config" not in section
    assert (tmp_path / "ablations.png").read_bytes()[:8] == PNG_MAGIC

    # rows compared with another row than the first name it
    paired = Ablation("pairs", "Two pairs", [("a", bm25), ("a changed", nd), ("b", reranked), ("b changed", bm25)],
                      against=[None, 0, None, 2])
    text = write_report(results, tmp_path, ablations=[paired]).read_text()
    back = 100 * (bm25.metrics["all"]["Hit@1"] - reranked.metrics["all"]["Hit@1"])
    assert "| Δ Hit@1 | Δ MRR@10 | Δ against |" in text
    assert f"| b changed | `bm25` | {100 * bm25.metrics['all']['Hit@1']:.1f} |" in text
    assert f"| {back:+.1f} |" in text and text.rstrip().splitlines()[-3].endswith("| b |")


def test_paper_comparisons_pair_what_was_evaluated():
    pairs = paper_comparisons(["bm25", "bm25-nd", "minilm", "finetuned", "hybrid:finetuned", "finetuned+reranker",
                               "hybrid:finetuned+reranker"])
    assert [(a, b) for _, a, b in pairs] == [
        ("bm25", "bm25-nd"), ("minilm", "finetuned"), ("finetuned", "hybrid:finetuned"),
        ("bm25", "hybrid:finetuned"), ("finetuned", "finetuned+reranker"),
        ("finetuned+reranker", "hybrid:finetuned+reranker"), ("hybrid:finetuned", "hybrid:finetuned+reranker")]
    assert paper_comparisons(["minilm-nd", "bm25"]) == []


def test_provenance_versions_the_models_a_system_names(bench_dir, tmp_path):
    """A saved result of `dense:PATH` or `+rerank:PATH` stands in for a new one only while the weights at PATH are
    the same files: retrained in place, the model is another computation."""
    import os

    from skillrouter.evaluation.runner import provenance
    from skillrouter.retrieval.systems import named_models

    assert named_models("hybrid:dense:/m/enc+rerank:/m/rr") == ["/m/enc", "/m/rr"]
    assert named_models("dense-nd:/m/enc") == ["/m/enc"] and named_models("finetuned+reranker") == []
    model = tmp_path / "reranker"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    bench, config = load_eval_core(bench_dir), PipelineConfig()
    before = provenance(f"bm25+rerank:{model}", bench, config, 8)
    assert "named_models" not in provenance("bm25", bench, config, 8)
    os.utime(model / "model.safetensors", ns=(1, 1))  # rewritten in place
    assert provenance(f"bm25+rerank:{model}", bench, config, 8) != before


def test_report_warns_of_a_reranker_below_its_first_stage(tmp_path):
    def result(system: str, hit1: float, curve: list[float]) -> EvalResult:
        return EvalResult(system, "dev", {}, {"all": {"Hit@1": hit1, "n": 10}, "single": {"n": 10},
                                              "multi": {"n": 0}}, {}, 0.0, hit_at_k={"all": curve})

    # Hit@20 = 1.0, which reranking the top 20 keeps: a random order of the top 20 scores 5% at Hit@1
    first = result("bm25", 0.9, [0.9] + [0.96] * 18 + [1.0])
    at_chance, learned, better = (result("bm25+reranker", h, [h] + [0.96] * 18 + [1.0]) for h in (0.04, 0.5, 0.95))
    [warning] = reranker_warnings([first, at_chance], retrieve_k=20)
    assert "Hit@1 4.0 against 90.0" in warning and "about 5.0" in warning and "ranks at chance" in warning
    assert "learned something" in reranker_warnings([first, learned], retrieve_k=20)[0]
    assert reranker_warnings([first, better], retrieve_k=20) == []
    assert reranker_warnings([at_chance], retrieve_k=20) == []  # no first stage to compare with
    ablation = Ablation("reranker-loss", "listwise or pointwise", [("listwise", at_chance), ("pointwise", learned)])
    page = write_report([first, at_chance], tmp_path, ablations=[ablation]).read_text()
    assert "**Warning.**" in page and "`bm25+reranker` ranks below its first stage" in page
    assert "- listwise: `bm25+reranker` ranks at about chance (a random order of its top 20 scores 5.0" in page
    assert "- pointwise:" not in page  # 50% is above chance


def test_saved_results_round_trip_and_old_ones_get_their_curve(results, bench_dir, tmp_path):
    for r in results:
        write_result(r, tmp_path / "eval" / r.system)
    back = read_result(tmp_path / "eval" / "bm25")
    assert back.metrics == results[0].metrics and back.hit_at_k == results[0].hit_at_k
    assert back.provenance == results[0].provenance and back.provenance["top_k"] == 8
    old = json.loads((tmp_path / "eval" / "bm25" / "metrics.json").read_text())
    del old["hit_at_k"]  # as written before the report existed
    (tmp_path / "eval" / "bm25" / "metrics.json").write_text(json.dumps(old))
    export_eval_core(load_eval_core(bench_dir), tmp_path / "benchmark")
    loaded = read_run(tmp_path, ["bm25-nd"])
    assert loaded[0].system == "bm25-nd" and [r.system for r in loaded[1:]] == ["bm25", results[2].system]
    assert loaded[1].hit_at_k == results[0].hit_at_k  # recomputed from predictions.json and the benchmark


def test_eval_runs_servings_first_stage_with_the_same_rankings(tmp_path):
    """On the bundled dev set: the evaluation's bm25 and hybrid equal the reference computations (BM25 top 50;
    equal weights of exact MiniLM's and BM25's min-max normalised top 100s) and serving's first stage over Milvus
    Lite."""
    from skillrouter.index.build import build_index, open_index
    from skillrouter.retrieval.bm25 import build_bm25, top_k
    from skillrouter.retrieval.filters import Catalogue
    from skillrouter.retrieval.first_stage import RetrieveQuery
    from skillrouter.retrieval.fusion import convex_combination
    from skillrouter.retrieval.router import Router
    from skillrouter.serving.stages import FirstStage

    bench = load_benchmark("bundled")
    config = PipelineConfig(run_dir=str(tmp_path))
    queries = [t.query for t in bench.tasks]
    pool = tie_order(bench.skills, config.eval.tie_seed)  # the order the evaluation ranks the pool in
    ids = [s.id for s in pool]
    hybrid = Router(pool, "hybrid", config)  # embeds the pool once: the index below reuses it
    stage = hybrid.retriever.stage
    evaluated = {"bm25": evaluate_system("bm25", bench, config).predictions,
                 "hybrid": evaluate_system("hybrid", bench, config, router=hybrid).predictions}

    bm25 = build_bm25(pool, config.bm25)
    bm25_top = bm25.search(queries, 100)[0]
    bm25_scores = bm25.search(queries, 100)[1]
    cosines = stage.encoder.encode_queries(queries) @ stage.dense.matrix.T
    dense_top = top_k(cosines, 100)[0]
    for q, (t, b, d) in enumerate(zip(bench.tasks, bm25_top, dense_top)):
        assert evaluated["bm25"][t.task_id] == [ids[i] for i in b[:50]]
        fused = convex_combination([[(ids[i], cosines[q, i]) for i in d],
                                    [(ids[i], s) for i, s in zip(b, bm25_scores[q])]], [0.5, 0.5])
        assert evaluated["hybrid"][t.task_id] == [s for s, _ in fused[:50]]

    config.mining.cache_dir = str(tmp_path / "cache")
    build_index(pool, config, embeddings=stage.dense.matrix, log=lambda _: None)
    with open_index(config) as index:
        serving = FirstStage(Catalogue(pool), index, stage.encoder, bm25)
        for kind in ("bm25", "hybrid"):
            served = serving.search([RetrieveQuery(q, 50, kind) for q in queries])
            assert {t.task_id: [s for s, _ in r.hits] for t, r in zip(bench.tasks, served)} == evaluated[kind]


# -- ablations ---------------------------------------------------------------------------------------------------


def test_ablation_plan_and_variant_settings(tmp_path):
    from skillrouter.evaluation.ablation_results import BASELINE
    from skillrouter.pipeline.ablations import plan, variant_config

    questions, variants, borrowed = plan()
    assert [v.name for v in variants] == [BASELINE, "encoder-nd", "reranker-pointwise", "no-fn-filter"]
    assert borrowed == {"encoder-nd": set(), "reranker-pointwise": {"encoder"}, "no-fn-filter": set()}
    by_name = {v.name: v for v in variants}
    assert [v.name for v in variants if v.mines] == ["no-fn-filter"]

    config = PipelineConfig(run_dir=str(tmp_path))
    main = {k: config.model_dir(k) for k in ("encoder", "reranker")}
    nd = variant_config(config, by_name["encoder-nd"], tmp_path, {"reranker": main["reranker"]})
    assert nd.encoder.skill_text == "name_description" and nd.reranker.loss == "listwise"
    assert nd.model_dir("encoder") == tmp_path / "ablations" / "encoder-nd" / "models" / "encoder"
    assert nd.model_dir("reranker") == main["reranker"] and nd.mining.filter_false_negatives
    pointwise = variant_config(config, by_name["reranker-pointwise"], tmp_path, {"encoder": main["encoder"]})
    assert pointwise.reranker.loss == "pointwise" and pointwise.encoder.skill_text == "full"
    assert pointwise.model_dir("encoder") == main["encoder"]
    assert pointwise.model_dir("reranker") == tmp_path / "ablations" / "reranker-pointwise" / "models" / "reranker"
    unfiltered = variant_config(config, by_name["no-fn-filter"], tmp_path)
    assert not unfiltered.mining.filter_false_negatives and unfiltered.mining.dense_negatives == 4
    baseline = variant_config(config, by_name[BASELINE], tmp_path)  # trains what the run lacks, in its own folder
    assert baseline.model_dir("encoder") == tmp_path / "ablations" / "baseline" / "models" / "encoder"

    questions, variants, borrowed = plan(["reranker-loss"])
    assert [q.name for q in questions] == ["reranker-loss"]
    assert [v.name for v in variants] == [BASELINE, "reranker-pointwise"]
    assert borrowed == {"reranker-pointwise": {"encoder"}}
    assert [v.name for v in plan(["text-bm25"])[1]] == [BASELINE]  # nothing to train
    with pytest.raises(ValueError, match="unknown ablation nope; available: text-bm25"):
        plan(["nope"])


def test_training_fingerprint_covers_the_negatives_and_the_skill_text():
    from skillrouter.corpus.skill import Skill
    from skillrouter.training.job import fingerprint

    skills = [Skill("a", "a", "a", "a")]
    groups = pa.table({"query_id": ["q"], "positive_id": ["a"],
                       "negatives": [[{"skill_id": "b", "source": "dense", "score": 0.5}]]})
    other = groups.set_column(2, "negatives", pa.array([[{"skill_id": "c", "source": "dense", "score": 0.5}]]))
    config = PipelineConfig()
    base = fingerprint("encoder", config.encoder, groups, skills, 0)
    assert fingerprint("encoder", config.encoder, other, skills, 0) != base
    nd = load_config(None, ["encoder.skill_text=name_description"]).encoder
    assert fingerprint("encoder", nd, groups, skills, 0) != base


def test_changed_negatives_counts_what_training_reads():
    from skillrouter.pipeline.ablations import changed_negatives

    def groups(negatives):
        return pa.table({"query_id": [f"q{i}" for i in range(len(negatives))], "positive_id": ["p"] * len(negatives),
                         "negatives": [[{"skill_id": s, "source": "dense", "score": 0.0} for s in n]
                                       for n in negatives]})

    base = groups([["a", "b", "c", "d"], ["a", "b", "c", "d"]])
    other = groups([["a", "x", "c", "y"], ["a", "b", "c", "d"]])  # y is beyond the 3 negatives trained on
    config = load_config(None, ["encoder.negatives=3"])
    assert changed_negatives(base, other, config, "encoder") == (1, 6)
    assert changed_negatives(base, base, config, "encoder") == (0, 6)


@pytest.fixture
def finished_run(tmp_path, bench_dir):
    """What the main job leaves in a run directory, minus trained models: corpus, queries, groups, benchmark,
    and the evaluation of bm25."""
    bench = load_eval_core(bench_dir)
    run = tmp_path / "run"
    (run / "corpus").mkdir(parents=True)
    write_skills(bench.skills, run / "corpus" / "skills.parquet")
    (run / "queries").mkdir()
    pq.write_table(pa.table({"query_id": ["q1"], "skill_id": ["pdf-0"], "query": ["merge pdf"]}),
                   run / "queries" / "queries.parquet")
    (run / "mined").mkdir()
    pq.write_table(pa.table({"query_id": ["q1"], "query": ["merge pdf"], "positive_id": ["pdf-0"],
                             "negatives": [[{"skill_id": "pdf-1", "source": "dense", "score": 0.9}]]}),
                   run / "mined" / "groups.parquet")
    export_eval_core(bench, run / "benchmark")
    config = PipelineConfig(run_dir=str(run))
    saved = load_eval_core(run / "benchmark")
    write_result(evaluate_system("bm25", saved, config), eval_dir(run, saved.name) / "bm25")
    return config


def test_ablations_end_to_end_without_training(finished_run, capsys):
    """`skillrouter ablations --only text-bm25`: reuses the run's own bm25 result (same provenance), evaluates
    bm25-nd under ablations/baseline, saves the outcome and adds it to the report; a rerun computes nothing."""
    from skillrouter.cli import main

    run = finished_run.run_dir
    assert main(["ablations", "--only", "text-bm25", f"run_dir={run}"]) == 0
    out = capsys.readouterr().out
    assert "[baseline] bm25: up to date" in out and "[baseline] bm25-nd: Hit@1" in out
    summary = json.loads((Path(run) / "ablations" / "ablations.json").read_text())
    (question,) = summary["questions"]
    # the run's own bm25 result is copied: the ablations stay as computed when the run is evaluated again
    assert [r["result"] for r in question["rows"]] == [f"ablations/baseline/eval/{s}" for s in ("bm25", "bm25-nd")]
    report = (Path(run) / "report" / "report.md").read_text()
    assert "### BM25 over the full text or over name + description" in report and "| full text | `bm25` |" in report
    assert main(["ablations", "--only", "text-bm25", f"run_dir={run}"]) == 0
    assert capsys.readouterr().out.count("up to date") == 2

    # the run trains its encoder again after the ablations: the report says they are out of date
    model = Path(run) / "models" / "encoder"
    model.mkdir(parents=True)
    (model / "skillrouter.json").write_text(json.dumps({"fingerprint": "new"}))
    summary["models"] = {"encoder": {"path": str(model), "fingerprint": "old"}}
    (Path(run) / "ablations" / "ablations.json").write_text(json.dumps(summary))
    assert main(["report", "--run", run, "--out", f"{run}/again", "--title", "Again"]) == 0
    assert "wrote" in capsys.readouterr().out
    again = (Path(run) / "again" / "report.md").read_text()
    assert again.startswith("# Again") and "### BM25 over the full text" in again
    assert "The ablations below predate the run's current encoder" in again


def test_ablations_need_a_finished_run(tmp_path, capsys):
    from skillrouter.cli import main

    assert main(["ablations", "--run", str(tmp_path / "nothing")]) == 2
    assert "lacks corpus" in capsys.readouterr().err


def test_eval_cli_runs_a_runs_models_and_writes_a_report(bench_dir, tiny_qwen3, tiny_qwen3_reranker, tmp_path,
                                                        capsys):
    """`finetuned` and `+reranker` read the models a profile points at (`--config`, overrides)."""
    from skillrouter.cli import main

    args = ["eval", "--benchmark", str(bench_dir), "--system", "finetuned", "--system", "finetuned+reranker",
            "--system", "hybrid:finetuned", "--out", str(tmp_path / "eval"), "--report",
            f"encoder.output_dir={tiny_qwen3}", f"reranker.output_dir={tiny_qwen3_reranker}", "encoder.max_length=64",
            "reranker.max_length=96", "routing.retrieve_k=5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "finetuned+reranker  all" in out and "hybrid:finetuned    all" in out
    saved = json.loads((tmp_path / "eval" / "finetuned+reranker" / "metrics.json").read_text())
    # models without a training fingerprint (not trained by `skillrouter train`), the settings they ran with
    assert saved["provenance"]["models"] == {"encoder": None, "reranker": None}
    assert saved["provenance"]["settings"]["retrieve_k"] == 5 and saved["hit_at_k"]["all"][-1] == 1.0
    ranked = json.loads((tmp_path / "eval" / "finetuned+reranker" / "predictions.json").read_text())
    first = json.loads((tmp_path / "eval" / "finetuned" / "predictions.json").read_text())
    for task, ids in ranked.items():  # the reranker reorders the top 5 only; the tail keeps the first stage's order
        assert sorted(ids[:5]) == sorted(first[task][:5]) and ids[5:] == first[task][5:]
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "| `finetuned+reranker` |" in text and "| reranking the top 5 with the trained reranker |" in text
