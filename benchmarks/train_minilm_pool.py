"""Real data: fine-tune the MiniLM encoder and reranker on groups mined from the 69K-skill pool (offline queries)
through the training jobs' path (Ray Data, Ray Train, DeepSpeed), then evaluate on the dev set, alone and among
the pool's skills as distractors, against zero-shot MiniLM and BM25.

    python benchmarks/train_minilm_pool.py --corpus POOL/skills.parquet --groups MINED/groups.parquet \
        --minilm PATH --out OUT [--encoder-groups N] [--reranker-groups N]

The GPU host has no internet: `--minilm` is a local copy of all-MiniLM-L6-v2 (fp16 weights, loaded as fp32).
Pool bodies may be cut (1,500 characters were shipped to the GPU host): MiniLM reads 256 tokens of them at most.
"""

import argparse
import itertools
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
    p.add_argument("--reranker-max-length", type=int, default=320, help="MiniLM reads 512 tokens at most")
    p.add_argument("--reranker-lr", type=float, default=3e-5)
    p.add_argument("--new-head-lr", type=float, default=1e-3, help="learning rate of the fresh classification head")
    p.add_argument("--reranker-epochs", type=int, default=1)
    p.add_argument("--reranker-data", nargs=2, metavar=("CORPUS", "GROUPS"),
                   help="train the reranker on other groups (the bundled corpus's own, say) than the encoder")
    p.add_argument("--tag", default="", help="a name for this reranker: runs sharing --out reuse the encoder")
    p.add_argument("--dev-only", action="store_true", help="skip the evaluation among the pool's distractors")
    p.add_argument("--windows", type=int, default=1,
                   help="evaluate with skills read in up to this many windows too (models/windows.py)")
    p.add_argument("--seed", type=int, default=0, help="the training runs' seed (sampling, order, heads)")
    p.add_argument("--encoder-only", action="store_true", help="train and evaluate the encoder alone")
    p.add_argument("--scores", action="store_true",
                   help="save every dev task's bm25, dense and reranker scores (dev_scores.npz) for fusion analysis")
    args = p.parse_args()

    out, suffix = Path(args.out), f"-{args.tag}" if args.tag else ""
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
        "reranker": {**common, "max_length": args.reranker_max_length, "batch_size": args.reranker_batch,
                     "learning_rate": args.reranker_lr, "new_head_lr": args.new_head_lr,
                     "epochs": args.reranker_epochs, "max_groups": args.reranker_groups,
                     "output_dir": str(out / "run" / "models" / f"reranker{suffix}")},
        "mining": {"encoder_max_length": 256},
        "routing": {"retrieve_k": 20},
        "seed": args.seed,
    })
    print(f"{len(skills):,} skills, {groups.num_rows:,} groups, read in {time.perf_counter() - started:.1f} s",
          flush=True)
    rerank_skills, rerank_groups = skills, groups
    if args.reranker_data:
        rerank_skills = read_skills(args.reranker_data[0])
        rerank_groups = pq.read_table(args.reranker_data[1])
    kinds = [("encoder", skills, groups)] + ([] if args.encoder_only else [("reranker", rerank_skills, rerank_groups)])
    summaries = [run_training(kind, data_skills, data_groups, config, log=lambda line: print(line, flush=True))
                 for kind, data_skills, data_groups in kinds]
    print_training_summary(summaries)

    systems = ["bm25", f"dense:{args.minilm}", "finetuned", "finetuned+reranker", "bm25+reranker",
               "hybrid:finetuned", "hybrid:finetuned+reranker"]
    systems = [s for s in systems if not (args.encoder_only and "reranker" in s)]
    dev = load_benchmark("bundled")
    report = {"training": summaries}
    benches = [("dev", dev)] + ([] if args.dev_only else [("dev+pool", add_distractors(dev, [args.corpus]))])
    for (name, bench), windows in itertools.product(benches, sorted({1, args.windows})):  # the small dev set first
        for section in (config.mining, config.encoder, config.reranker):
            setattr(section, "encoder_windows" if section is config.mining else "windows", windows)
        name, results = name + (f" windows={windows}" if windows > 1 else ""), []
        for system in systems:
            t0 = time.perf_counter()
            results.append(evaluate_system(system, bench, config))
            print(f"{name} {system}: {time.perf_counter() - t0:.1f} s", flush=True)
            report.setdefault(name, {})[system] = results[-1].metrics  # saved as it goes: a cut run keeps it
            (out / f"minilm_pool_eval{suffix}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"\n{name}: {len(bench.tasks)} tasks, {len(bench.skills):,} skills\n{metrics_table(results)}\n",
              flush=True)
    if args.scores and not args.encoder_only:
        dev_scores(dev, config, args.minilm, args.windows, out / f"dev_scores{suffix}.npz")


def dev_scores(bench, config: PipelineConfig, minilm: str, windows: int, path: Path) -> None:
    """Every (task, skill) score of bm25, zero-shot and fine-tuned encoders, and the reranker's over the union of
    the bm25 and fine-tuned top 30 (-inf elsewhere), truncated and windowed: what a fusion study needs."""
    import numpy as np

    from skillrouter.models.encoder import Encoder, EncoderSpec
    from skillrouter.models.reranker import Reranker, RerankerSpec
    from skillrouter.retrieval.bm25 import build_bm25

    queries, skills = [t.query for t in bench.tasks], list(bench.skills)
    out = {"bm25": build_bm25(skills, config.bm25).scores(queries)}
    for w in sorted({1, windows}):
        for name, model, length in (("minilm", minilm, config.mining.encoder_max_length),
                                    ("finetuned", str(config.model_dir("encoder")), config.encoder.max_length)):
            enc = Encoder.load(EncoderSpec(model, length, windows=w))
            out[f"{name}_w{w}"] = enc.encode_queries(queries) @ enc.encode_skills(skills).T
    heads = np.argsort(-out["bm25"], axis=1)[:, :30], np.argsort(-out["finetuned_w1"], axis=1)[:, :30]
    candidates = [sorted(set(a) | set(b)) for a, b in zip(*heads)]
    for w in sorted({1, windows}):
        reranker = Reranker.load(RerankerSpec(str(config.model_dir("reranker")), config.reranker.max_length, windows=w))
        scored = reranker.score_batch([(q, [skills[i] for i in c]) for q, c in zip(queries, candidates)], 64)
        matrix = np.full((len(queries), len(skills)), -np.inf)
        for row, (c, s) in enumerate(zip(candidates, scored)):
            matrix[row, c] = s.numpy()
        out[f"reranker_w{w}"] = matrix
    gold = np.zeros((len(queries), len(skills)), dtype=np.int8)
    index = {s.id: i for i, s in enumerate(skills)}
    for row, task in enumerate(bench.tasks):
        gold[row, [index[g] for g in task.gt_skill_ids]] = 1
    np.savez_compressed(path, gold=gold, **out)
    print(f"dev scores -> {path}: {sorted(out)}", flush=True)


if __name__ == "__main__":
    main()
