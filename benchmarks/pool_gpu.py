"""Pool scale in one command (issue 19): the main job on the bundled corpus plus the 69K pool, on one GPU host.

    python benchmarks/pool_gpu.py --pool .gpu/pool.parquet [--benchmark EVAL_CORE_DIR ...] [--out DIR] [key=value ...]

Runs `skillrouter pipeline` with `configs/pool-h200.yaml` (offline queries, mining, encoder and reranker training,
index, selection, evaluation) with the corpus `bundled + POOL`, every benchmark evaluated among the run's whole
corpus as distractors: the realistic test split, easy and hard tiers, and each `--benchmark` (an eval_core
directory). Overrides are the profile's `key=value`. Prints each section's wall time and every system's metrics
per benchmark, and writes both to `OUT/pool_gpu-<time>.json` (OUT: the run directory by default). A stage whose
inputs are unchanged is not run again, so a run cut by a time limit resumes where it stopped.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from _common import git_commit
from skillrouter.common.console import filtered_stderr
from skillrouter.config import load_config
from skillrouter.corpus.ingest import SKILLS_FILE
from skillrouter.evaluation.runner import read_result
from skillrouter.pipeline.run import run_pipeline

PROFILE = Path(__file__).resolve().parents[1] / "configs" / "pool-h200.yaml"
METRICS = ("Hit@1", "MRR@10", "nDCG@10", "Recall@10", "Recall@50", "FullCoverage@10")


class Sections:
    """The pipeline's log, printed as it comes, with the wall time of each `== ` section it opens."""

    def __init__(self):
        self.started = self.last = time.perf_counter()
        self.title, self.seconds = None, []

    def __call__(self, line: str) -> None:
        if line.lstrip("\n").startswith("== "):
            self.close()
            self.title = line.strip()[3:]
        print(line, flush=True)

    def close(self) -> None:
        now = time.perf_counter()
        if self.title is not None:
            self.seconds.append({"section": self.title, "seconds": round(now - self.last, 1)})
        self.title, self.last = None, now


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pool", required=True, help="the pool: a Parquet file or any source `skillrouter ingest` reads")
    p.add_argument("--benchmark", action="append", default=[], help="an eval_core directory to evaluate too")
    p.add_argument("--config", default=str(PROFILE))
    p.add_argument("--out", help="where the JSON goes (default: the run directory)")
    p.add_argument("--skip", default="", help="stages to skip, as the pipeline's --skip")
    p.add_argument("--rerun", default="", help="stages to run again, as the pipeline's --rerun")
    p.add_argument("overrides", nargs="*", help="key=value, as the pipeline's")
    args = p.parse_args()

    config = load_config(args.config, [f"corpus.sources=[bundled, {args.pool}]", *args.overrides])
    config.eval.benchmark = config.eval.benchmarks + args.benchmark
    config.eval.distractors = [str(Path(config.run_dir) / "corpus" / SKILLS_FILE)]  # the run's own corpus
    log = Sections()
    with filtered_stderr(Path(config.run_dir) / "logs" / "stderr.log"):
        out = run_pipeline(config, log=log, skip=args.skip.split(","), rerun=args.rerun.split(","))
    log.close()

    results = {}
    for name, path in out.items():
        if name.startswith("eval/"):
            r = read_result(path)
            results.setdefault(r.benchmark, {})[r.system] = {"pool_size": r.pool_size, "seconds": r.seconds,
                                                            "metrics": r.metrics}
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": git_commit(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "pool": args.pool, "run_dir": config.run_dir,
              "seconds": round(time.perf_counter() - log.started, 1), "sections": log.seconds,
              "config": config.model_dump(mode="json"), "results": results}
    dest = Path(args.out or config.run_dir) / f"pool_gpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(report, indent=1) + "\n")

    print(f"\n== {report['seconds']:.0f} s in all; per section:")
    for s in log.seconds:
        print(f"   {s['seconds']:>7.1f} s  {s['section']}")
    for bench, systems in results.items():
        print(f"\n{bench} (all tasks, %): " + " | ".join(METRICS))
        for system, r in systems.items():
            overall = r["metrics"].get("all", {})
            print(f"   {system:<40} " + "  ".join(f"{100 * overall.get(m, float('nan')):6.1f}" for m in METRICS)
                  + f"   ({r['pool_size']:,} skills, {r['seconds']:.0f} s)")
    print(f"\nwrote {dest}")


if __name__ == "__main__":
    main()
