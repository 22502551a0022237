"""The main job: one profile drives every stage, each writing plain files under the run directory.

Stages so far: ingest the corpus, generate training queries, mine hard negatives, fine-tune the encoder and the
reranker, answer the example requests, evaluate the configured systems on the benchmark.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq

from skillrouter.config import PipelineConfig
from skillrouter.corpus.categories import load_categories
from skillrouter.corpus.ingest import SKILLS_FILE, ingest, read_skills
from skillrouter.evaluation.benchmark import add_distractors, export_eval_core, load_benchmark
from skillrouter.evaluation.runner import evaluate_system, metrics_table, write_result
from skillrouter.mining.job import GROUPS_FILE, print_mining_summary, run_mining
from skillrouter.querygen.job import QUERIES_FILE, print_query_summary, run_query_generation
from skillrouter.routing import Route, Router
from skillrouter.tables import format_table, shorten
from skillrouter.training.job import KINDS, print_training_summary, run_training


def routes_table(routes: list[Route], width: int = 60) -> str:
    return format_table(["rank", "skill", "score", "description"],
                        [[r.rank, r.skill_id, r.score, shorten(r.description, width)] for r in routes],
                        floatfmt=".2f")


def run_pipeline(config: PipelineConfig, log=print) -> dict[str, Path]:
    """Run every stage of `config`; returns what was written, by name."""
    started = time.perf_counter()
    run_dir = Path(config.run_dir)
    outputs: dict[str, Path] = {}

    def indent(line: str) -> None:
        log("   " + line)

    log(f"== ingest {', '.join(config.corpus.sources)} -> {run_dir / 'corpus'}")
    summary = ingest(config.corpus.sources, run_dir / "corpus", config.corpus, progress=False)
    for line in summary.lines():
        indent(line)
    outputs["corpus"] = run_dir / "corpus" / SKILLS_FILE
    skills = read_skills(outputs["corpus"])

    log(f"\n== generate queries -> {run_dir / 'queries'}")
    summary = run_query_generation(skills, config, run_dir / "queries", log=indent)
    if summary.get("dry_run"):
        return outputs
    print_query_summary(summary, run_dir / "queries", log=indent)
    outputs["queries"] = run_dir / "queries" / QUERIES_FILE

    log(f"\n== mine hard negatives -> {run_dir / 'mined'}")
    categories = load_categories(run_dir / "queries" / "categories.json", skills)
    mined = run_mining(skills, pq.read_table(outputs["queries"]), config, run_dir / "mined", categories, indent)
    print_mining_summary(mined, run_dir / "mined", indent)
    outputs["groups"] = run_dir / "mined" / GROUPS_FILE

    trained = []
    for kind in KINDS:
        log(f"\n== train the {kind} (Ray Train + DeepSpeed) -> {run_dir / 'models' / kind}")
        trained.append(run_training(kind, skills, pq.read_table(outputs["groups"]), config, log=indent))
        outputs[kind] = Path(trained[-1]["output_dir"])
    print_training_summary(trained, indent)

    if config.examples:
        router = Router(skills, config.routing.system, config)
        log(f"\n== route {len(config.examples)} example requests with '{config.routing.system}'")
        for query, routes in zip(config.examples, router.route_batch(config.examples, top_k=3)):
            log(f"\n> {query}\n{routes_table(routes)}")

    bench = add_distractors(load_benchmark(config.eval.benchmark), config.eval.distractors)
    outputs["benchmark"] = export_eval_core(bench, run_dir / "benchmark")
    log(f"\n== evaluate {', '.join(config.eval.systems)} on {bench.name} ({len(bench.tasks)} tasks, "
        f"{len(bench.skills)} skills)")
    results = []
    for system in config.eval.systems:
        result = evaluate_system(system, bench, config)
        outputs[f"eval/{system}"] = write_result(result, run_dir / "eval" / system)
        results.append(result)
    log(metrics_table(results))
    if bench.missing_ids:
        log(f"note: {len(bench.missing_ids)} tasks name skills absent from the pool (counted as misses)")

    log(f"\n== done in {time.perf_counter() - started:.1f} s; outputs:")
    for name, path in outputs.items():
        log(f"   {name:<16} {path}")
    return outputs
