"""Real data: fine-tune the MiniLM encoder and reranker on groups mined from the 69K-skill pool (offline queries)
through the training jobs' path (Ray Data, Ray Train, DeepSpeed), then evaluate on the dev set, alone and among
the pool's skills as distractors, against zero-shot MiniLM and BM25.

    python benchmarks/train_minilm_pool.py --corpus POOL/skills.parquet --groups MINED/groups.parquet \
        --minilm PATH --out OUT [--encoder-groups N] [--reranker-groups N]

The GPU host has no internet: `--minilm` is a local copy of all-MiniLM-L6-v2 (fp16 weights, loaded as fp32).
Pool bodies may be cut (1,500 characters were shipped to the GPU host): MiniLM reads 256 tokens of them at most.
"""

import argparse
import json
import time
from pathlib import Path

import pyarrow.parquet as pq

from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import read_skills
from skillrouter.evaluation.benchmark import add_distractors, load_benchmark
from skillrouter.evaluation.runner import evaluate_system, metrics_table
from skillrouter.training.job import print_training_summary, run_training


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--groups", required=True)
    p.add_argument("--minilm", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--encoder-groups", type=int, default=None)
    p.add_argument("--reranker-groups", type=int, default=16_000)
    p.add_argument("--cpus-per-worker", type=int, default=4)
    p.add_argument("--encoder-batch", type=int, default=64, help="groups per step (in-batch negatives)")
    p.add_argument("--reranker-batch", type=int, default=16)
    args = p.parse_args()

    out = Path(args.out)
    started = time.perf_counter()
    skills = read_skills(args.corpus)
    groups = pq.read_table(args.groups)
    common = {"model": args.minilm, "negatives": 10, "grad_accum_steps": 1, "gradient_checkpointing": False,
              "num_workers": 1, "cpus_per_worker": args.cpus_per_worker, "checkpoint_every": 100_000, "log_every": 50,
              "warmup_ratio": 0.05}
    config = PipelineConfig.model_validate({
        "run_dir": str(out / "run"),
        "encoder": {**common, "max_length": 256, "batch_size": args.encoder_batch, "learning_rate": 5e-5,
                    "temperature": 0.05, "max_groups": args.encoder_groups},
        "reranker": {**common, "max_length": 320, "batch_size": args.reranker_batch, "learning_rate": 3e-5,
                     "new_head_lr": 1e-3, "max_groups": args.reranker_groups},
        "mining": {"encoder_max_length": 256},
        "routing": {"retrieve_k": 20},
    })
    print(f"{len(skills):,} skills, {groups.num_rows:,} groups, read in {time.perf_counter() - started:.1f} s",
          flush=True)
    summaries = [run_training(kind, skills, groups, config, log=lambda line: print(line, flush=True))
                 for kind in ("encoder", "reranker")]
    print_training_summary(summaries)

    systems = ["bm25", f"dense:{args.minilm}", "finetuned", "finetuned+reranker", "bm25+reranker"]
    dev = load_benchmark("bundled")
    report = {"training": summaries}
    for name, bench in (("dev", dev), ("dev+pool", add_distractors(dev, [args.corpus]))):
        results = []
        for system in systems:
            t0 = time.perf_counter()
            results.append(evaluate_system(system, bench, config))
            print(f"{name} {system}: {time.perf_counter() - t0:.1f} s", flush=True)
            report.setdefault(name, {})[system] = results[-1].metrics  # saved as it goes: a cut run keeps its part
            (out / "minilm_pool_eval.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"\n{name}: {len(bench.tasks)} tasks, {len(bench.skills):,} skills\n{metrics_table(results)}\n",
              flush=True)


if __name__ == "__main__":
    main()
