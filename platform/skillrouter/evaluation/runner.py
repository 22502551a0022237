"""Run a named system on a benchmark: predictions (top-k ids per task), metrics, and the files that hold them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from skillrouter.config import PipelineConfig
from skillrouter.evaluation.benchmark import Benchmark
from skillrouter.evaluation.metrics import SUBSETS, aggregate, task_metrics
from skillrouter.routing import Router
from skillrouter.tables import format_table

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

    def to_json(self) -> dict:
        return {"system": self.system, "benchmark": self.benchmark, "metrics": self.metrics,
                "missing_relevance_ids": self.missing_ids, "seconds": round(self.seconds, 3)}


def evaluate_system(system: str, bench: Benchmark, config: PipelineConfig | None = None,
                    top_k: int | None = None, router: Router | None = None) -> EvalResult:
    """Route every task's request with `system` over the benchmark's pool and score the rankings."""
    config = config or PipelineConfig()
    top_k = top_k or config.eval.top_k
    started = time.perf_counter()
    router = router or Router(bench.skills, system, config)
    routes = router.route_batch([t.query for t in bench.tasks], min(top_k, len(bench.skills)))
    predictions = {t.task_id: [r.skill_id for r in ranked] for t, ranked in zip(bench.tasks, routes)}
    per_task = {t.task_id: task_metrics(predictions[t.task_id], set(t.gt_skill_ids), t.relevance)
                for t in bench.tasks}
    metrics = aggregate(per_task, {t.task_id: t.task_type for t in bench.tasks})
    return EvalResult(system, bench.name, predictions, metrics, bench.missing_ids, time.perf_counter() - started)


def write_result(result: EvalResult, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.json").write_text(json.dumps(result.predictions, indent=1) + "\n")
    (out / "metrics.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return out


def read_result(out_dir: str | Path) -> EvalResult:
    """A result written by `write_result`."""
    out = Path(out_dir)
    saved = json.loads((out / "metrics.json").read_text())
    return EvalResult(saved["system"], saved["benchmark"], json.loads((out / "predictions.json").read_text()),
                      saved["metrics"], saved.get("missing_relevance_ids", {}), saved.get("seconds", 0.0))


def metrics_table(results: list[EvalResult], metrics: tuple[str, ...] = TABLE_METRICS) -> str:
    """One row per (system, task subset), one column per metric, as percentages."""
    rows = []
    for r in results:
        for subset in SUBSETS:
            m = r.metrics[subset]
            rows.append([r.system, subset, int(m["n"]), *(100 * m[name] for name in metrics)])
    return format_table(["system", "tasks", "n", *metrics], rows, floatfmt=".1f")

