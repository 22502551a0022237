"""Training speed on GPUs through the real job path (`run_training`: Ray Data tokenizing, Ray Train workers,
DeepSpeed ZeRO-2/3, bf16): tokens/s and MFU for Qwen3 architectures with random weights (right for speed figures,
not quality). Submit it to a Ray cluster like any job:

    ray job submit --working-dir . --runtime-env-json '{"env_vars": {"PYTHONPATH": "platform"}}' -- \
        python benchmarks/train_gpu.py --size 0.6b --kind encoder --steps 12 --out /tmp/out

Skills are built from the bundled corpus's own text, bodies of 300 to 3,000 words, so lengths spread like the real
pool's (mean about 1,300 tokens); groups are 1 positive + 10 random negatives. A byte-level BPE trained on the
bundled corpus stands in for Qwen3's tokenizer (the embedding matrix keeps Qwen3's 151,669 rows).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import read_skills
from skillrouter.corpus.skill import Skill
from skillrouter.training.job import run_training


def synthetic_skills(n: int, seed: int = 0, min_words: int = 300) -> list[Skill]:
    rng = np.random.default_rng(seed)
    words = " ".join(s.text() for s in read_skills("bundled")).split()
    out = []
    for i in range(n):
        start, length = int(rng.integers(0, len(words) - 3000)), int(rng.integers(min_words, 3001))
        out.append(Skill(f"syn/{i}", f"skill-{i}", " ".join(words[start:start + 30]),
                         " ".join(words[start:start + length])))
    return out


def synthetic_groups(skills: list[Skill], n: int, negatives: int = 10, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pos, *negs = rng.choice(len(skills), negatives + 1, replace=False)
        rows.append({"query_id": f"q{i}", "query": " ".join(skills[pos].body.split()[5:40]),
                     "positive_id": skills[pos].id,
                     "negatives": [{"skill_id": skills[j].id, "source": "random", "score": 0.0} for j in negs]})
    return pa.Table.from_pylist(rows)


def build_model(size: str, kind: str, out: Path) -> Path:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from skillrouter.testing.tiny_models import qwen3_config, train_tokenizer

    tok = train_tokenizer((s.text() for s in read_skills("bundled")), out / "tokenizer", vocab_size=8192)
    # Random weights drawn on the GPU and saved in bf16: drawing 8B normals on the host's CPU and writing them in
    # fp32 took 252 s, more than the training steps measured after it.
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = (AutoModelForCausalLM if kind == "reranker" else AutoModel).from_config(qwen3_config(size))
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(str(out / "model"))
    del model
    torch.cuda.empty_cache()
    tok.save_pretrained(str(out / "model"))
    return out / "model"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="0.6b", choices=["tiny", "0.6b", "8b"])
    p.add_argument("--kind", default="encoder", choices=["encoder", "reranker"])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--zero", type=int, default=2, choices=[2, 3])
    p.add_argument("--batch-size", type=int, help="groups per micro-batch (default: the profile's)")
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--max-batch-tokens", type=int, default=65536)
    p.add_argument("--no-gradient-checkpointing", action="store_true")
    p.add_argument("--checkpoint-share", type=float, default=1.0, help="share of layers recomputed in backward")
    p.add_argument("--compile", action="store_true", help="torch.compile each layer")
    p.add_argument("--no-packing", action="store_true", help="pad length-sorted chunks instead of packing")
    p.add_argument("--min-words", type=int, default=300, help="3000: every skill at max_length, the worst case "
                   "for memory")
    p.add_argument("--model", help="a checkpoint built by an earlier run (a causal LM serves both kinds)")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = Path(args.model) if args.model else build_model(args.size, args.kind, out / f"{args.size}-{args.kind}")
    skills = synthetic_skills(4000, min_words=args.min_words)
    base = PipelineConfig()
    section = getattr(base, args.kind)
    batch = args.batch_size or section.batch_size
    accum = args.grad_accum or section.grad_accum_steps
    groups = synthetic_groups(skills, batch * accum * args.workers * (args.steps + 1))
    train = {"model": str(model), "max_steps": args.steps, "batch_size": batch, "grad_accum_steps": accum,
             "num_workers": args.workers, "cpus_per_worker": 1 if args.size == "tiny" else 4, "log_every": 2,
             "checkpoint_every": 10_000, "deepspeed": f"configs/deepspeed/zero{args.zero}.json",
             "max_batch_tokens": args.max_batch_tokens,
             "gradient_checkpointing": not args.no_gradient_checkpointing,
             "checkpoint_share": args.checkpoint_share, "compile": args.compile, "packing": not args.no_packing,
             "storage_path": str(out / "storage"), "output_dir": str(out / "export")}
    config = PipelineConfig.model_validate({"run_dir": str(out / "run"), args.kind: train})
    print(f"setup {time.perf_counter() - started:.1f} s", flush=True)
    summary = run_training(args.kind, skills, groups, config, log=lambda line: print(line, flush=True))
    log = [json.loads(line) for line in Path(summary["log"]).read_text().splitlines()]
    steady = log[1:] or log  # the first window holds compilation and allocator warm-up
    import torch

    result = {"size": args.size, "kind": args.kind, "min_words": args.min_words, "workers": args.workers,
              "zero": args.zero,
              "batch_size": batch, "grad_accum": accum, "max_length": section.max_length,
              "gradient_checkpointing": train["gradient_checkpointing"], "steps": summary["steps"],
              **{k: train[k] for k in ("checkpoint_share", "compile", "packing")},
              "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in steady])),
              "mfu": float(np.mean([r["mfu"] for r in steady if r["mfu"] is not None] or [0.0])),
              "padding": float(np.mean([r["padding"] for r in steady])),
              "gpu_peak_gib": max((r["gpu_peak_gib"] or 0.0 for r in log), default=None),
              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "train_seconds": summary["train_seconds"]}
    print(json.dumps(result), flush=True)
    with (out / "train_gpu.jsonl").open("a") as fh:
        fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
