"""Run a named system on a benchmark: predictions (top-k ids per task), metrics, and the files that hold them."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from skillrouter.common.tables import format_table, markdown_table
from skillrouter.config import PipelineConfig
from skillrouter.corpus.skill import Skill
from skillrouter.evaluation.benchmark import Benchmark, Task, benchmark_version
from skillrouter.evaluation.metrics import SUBSETS, aggregate, task_metrics
from skillrouter.retrieval.fusion import Fusion
from skillrouter.retrieval.router import Router

TABLE_METRICS = ("Hit@1", "MRR@10", "nDCG@3", "nDCG@10", "Recall@10", "Recall@50", "FullCoverage@5",
                 "FullCoverage@10")


@dataclass
class EvalResult:
    system: str
    benchmark: str
    predictions: dict[str, list[str]]
    metrics: dict[str, dict[str, float]]
    missing_ids: dict[str, list[str]]
    seconds: float
    hit_at_k: dict[str, list[float]] = field(default_factory=dict)  # subset -> Hit@k for k = 1, 2, ... top_k
    pool_size: int | None = None  # skills the system ranked
    provenance: dict = field(default_factory=dict)  # what the figures depend on besides the name (`provenance`)

    def to_json(self) -> dict:
        return {"system": self.system, "benchmark": self.benchmark, "pool_size": self.pool_size,
                "metrics": self.metrics, "hit_at_k": self.hit_at_k, "missing_relevance_ids": self.missing_ids,
                "seconds": round(self.seconds, 3), "provenance": self.provenance}


def provenance(system: str, bench: Benchmark, config: PipelineConfig, top_k: int) -> dict:
    """What a system's figures on a benchmark depend on besides its name: the benchmark's content, the training
    fingerprints of the profile's models it uses, the versions of the models it names by path, and the settings
    evaluation reads. Two results with equal provenance are the same computation, so a saved one can stand in for a
    new one."""
    from skillrouter.models.loading import export_info, model_version
    from skillrouter.retrieval.systems import named_models, trained_kinds

    models = {kind: export_info(str(config.model_dir(kind))).get("fingerprint")
              for kind in sorted(trained_kinds(system))}
    settings = {"bm25": config.bm25.model_dump(), "retrieve_k": config.routing.retrieve_k,
                "fusion": asdict(Fusion.of(config.serving)),
                "dense_max_length": config.mining.encoder_max_length, "encoder_max_length": config.encoder.max_length,
                "reranker_max_length": config.reranker.max_length,
                "windows": [config.mining.encoder_windows, config.encoder.windows, config.reranker.windows]}
    out = {"benchmark": benchmark_version(bench), "models": models, "top_k": top_k, "settings": settings,
           "tie_seed": config.eval.tie_seed}
    named = {model: model_version(model) for model in named_models(system)}
    if named:  # only then: the saved results of the profile's own systems keep their provenance
        out["named_models"] = named
    return out


def eval_dir(run_dir: str | Path, benchmark: str) -> Path:
    """Where a run keeps its results on `benchmark`: one folder per system below it."""
    return Path(run_dir) / "eval" / benchmark


def hit_curve(predictions: dict[str, list[str]], tasks: Sequence[Task], max_k: int) -> dict[str, list[float]]:
    """Hit@k for k = 1..max_k over all, single- and multi-skill tasks: the share of tasks with a needed skill in
    the top k (the curve that shows what a reranker given the top k could reach)."""
    first_hit = {}
    for t in tasks:
        gt = set(t.gt_skill_ids)
        first_hit[t.task_id] = next((r for r, s in enumerate(predictions.get(t.task_id, []), 1) if s in gt), None)
    out = {}
    for subset in SUBSETS:
        ranks = [first_hit[t.task_id] for t in tasks if subset == "all" or t.task_type == subset]
        out[subset] = [sum(r is not None and r <= k for r in ranks) / len(ranks) if ranks else float("nan")
                       for k in range(1, max_k + 1)]
    return out


def tie_order(skills: Sequence[Skill], seed: int) -> list[Skill]:
    """The pool in a seeded random order. Every first stage breaks a tie by pool position (a stable sort), so
    this makes ties fall at random: a look-alike that shares a skill's name and description ties with it under a
    metadata-only system, and in the benchmark's own order the labelled skill would win every such tie."""
    order = np.random.default_rng(seed).permutation(len(skills))
    return [skills[i] for i in order]


def evaluate_system(system: str, bench: Benchmark, config: PipelineConfig | None = None,
                    top_k: int | None = None, router: Router | None = None) -> EvalResult:
    """Route every task's request with `system` over the benchmark's pool (in `tie_order`) and score the rankings.
    `router`: one already built for `system` over `tie_order(bench.skills, config.eval.tie_seed)`, to reuse its
    models."""
    config = config or PipelineConfig()
    top_k = top_k or config.eval.top_k
    started = time.perf_counter()
    router = router or Router(tie_order(bench.skills, config.eval.tie_seed), system, config)
    routes = router.route_batch([t.query for t in bench.tasks], min(top_k, len(bench.skills)))
    predictions = {t.task_id: [r.skill_id for r in ranked] for t, ranked in zip(bench.tasks, routes)}
    per_task = {t.task_id: task_metrics(predictions[t.task_id], set(t.gt_skill_ids), t.relevance)
                for t in bench.tasks}
    metrics = aggregate(per_task, {t.task_id: t.task_type for t in bench.tasks})
    return EvalResult(system, bench.name, predictions, metrics, bench.missing_ids, time.perf_counter() - started,
                      hit_curve(predictions, bench.tasks, top_k), len(bench.skills),
                      provenance(system, bench, config, top_k))


def write_result(result: EvalResult, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.json").write_text(json.dumps(result.predictions, indent=1) + "\n")
    (out / "metrics.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return out


def read_result(directory: str | Path, bench: Benchmark | None = None) -> EvalResult:
    """An `EvalResult` from what `write_result` wrote. Results written before `metrics.json` held the Hit@k curve
    get it from the predictions and the labels of `bench`, when given."""
    root = Path(directory)
    try:
        data = json.loads((root / "metrics.json").read_text())
        predictions = json.loads((root / "predictions.json").read_text())
    except FileNotFoundError as err:
        raise ValueError(f"{root}: not an evaluation result ({err.filename} is missing)") from None
    curve = data.get("hit_at_k") or {}
    if not curve and bench is not None:
        curve = hit_curve(predictions, bench.tasks, max((len(p) for p in predictions.values()), default=1))
    return EvalResult(data["system"], data["benchmark"], predictions, data["metrics"],
                      data.get("missing_relevance_ids", {}), data.get("seconds", 0.0), curve, data.get("pool_size"),
                      data.get("provenance", {}))


def metrics_table(results: list[EvalResult], metrics: tuple[str, ...] = TABLE_METRICS, markdown: bool = False) -> str:
    """One row per (system, task subset), one column per metric, as percentages; aligned text for a console, or
    a Markdown table."""
    rows = []
    for r in results:
        for subset in SUBSETS:
            m = r.metrics[subset]
            rows.append([r.system, subset, int(m["n"]), *(100 * m[name] for name in metrics)])
    return (markdown_table if markdown else format_table)(["system", "tasks", "n", *metrics], rows, floatfmt=".1f")

