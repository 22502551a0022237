"""Where an index build's embedding time goes on one GPU, without Ray: the pool's texts as `skillrouter index build`
formats them, the Qwen3-0.6B architecture (random weights, bf16, drawn on the GPU), each way of batching timed on
the same sample of skills:

    python benchmarks/index_embed_gpu.py --pool POOL.parquet --tokenizer BPE_DIR [--sample 8000] [--out DIR]

- tokenization of the whole pool (the fast tokenizer, batched), and the pool's token count;
- padded, length-sorted batches (`Encoder.encode`), eager, at several token budgets;
- packed rows (`models.packing`, varlen FlashAttention), eager, then with each layer compiled;
- padded with each layer compiled, and the whole model compiled (`torch.compile(dynamic=True)`);
each with its compile and warm-up seconds, tokens/s, MFU and the compiler's graph and recompile counts. Writes
`OUT/index_embed_gpu-TIME.json`. `--size tiny --device cpu` checks the script.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from _common import PEAK_TFLOPS, flops_per_token, git_commit
from skillrouter.corpus.skill import Skill
from skillrouter.models import packing
from skillrouter.models.encoder import Encoder, EncoderSpec
from skillrouter.testing.tiny_models import qwen3_config


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def compiler_counts() -> dict:
    from torch._dynamo.utils import counters

    return {"unique_graphs": counters["stats"]["unique_graphs"],
            "recompiles": sum(counters["recompiles"].values()), "graph_breaks": sum(counters["graph_break"].values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pool", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--size", default="0.6b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--sample", type=int, default=8000)
    p.add_argument("--budgets", default="65536,131072,262144")
    p.add_argument("--skip", default="", help="comma-separated steps to leave out (whole_compiled, ...)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    from transformers import AutoModel, AutoTokenizer

    skip = set(filter(None, args.skip.split(",")))
    table = pq.read_table(args.pool, columns=["id", "name", "description", "body"]).to_pydict()
    texts = [Skill(i, n, d, b).routing_text() for i, n, d, b in
             zip(table["id"], table["name"], table["description"], table["body"])]
    del table
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"index_embed_gpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report: dict = {"command": "python " + " ".join(__import__("sys").argv), "commit": git_commit(),
                    "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                    "torch": torch.__version__, "skills": len(texts), "runs": {}}

    def save() -> None:
        path.write_text(json.dumps(report, indent=1) + "\n")

    started = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    ids = tok(texts, truncation=True, max_length=args.max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    report["tokenize_all_s"] = round(time.perf_counter() - started, 2)
    report["tokens"], report["mean_len"] = int(lengths.sum()), round(float(lengths.mean()), 1)
    report["at_max_length"] = round(float((lengths >= args.max_length).mean()), 3)
    cfg = qwen3_config(args.size)
    per_token = flops_per_token(cfg, float(lengths.mean()))
    print(f"{len(texts):,} skills, {report['tokens']:,} tokens (mean {report['mean_len']}, "
          f"{100 * report['at_max_length']:.0f}% cut at {args.max_length}); tokenized in {report['tokenize_all_s']} s",
          flush=True)
    save()

    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    started = time.perf_counter()
    with torch.device(args.device):
        model = AutoModel.from_config(cfg, attn_implementation="sdpa", dtype=dtype).eval()
    report["model_s"] = round(time.perf_counter() - started, 1)
    enc = Encoder(model, tok, EncoderSpec(model="random", max_length=args.max_length))
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), min(args.sample, len(texts)), replace=False)]
    sample_tokens = int(sum(len(x) for x in tok(sample, truncation=True, max_length=args.max_length)["input_ids"]))
    warm = sample[:300]

    def run(name: str, budget: int, prepare=None) -> None:
        if name.split("@")[0] in skip:
            return
        started = time.perf_counter()
        if prepare:
            prepare()
        enc.encode(warm, 4096, budget)  # compile (if any), kernels chosen, memory pooled
        sync(args.device)
        warm_s = time.perf_counter() - started
        started = time.perf_counter()
        enc.encode(sample, 4096, budget)
        sync(args.device)
        seconds = time.perf_counter() - started
        r = report["runs"][name] = {"budget": budget, "warm_s": round(warm_s, 1), "seconds": round(seconds, 2),
                                    "tokens_per_s": round(sample_tokens / seconds),
                                    "mfu": round(sample_tokens / seconds * per_token / (PEAK_TFLOPS * 1e12), 3),
                                    "pool_estimate_s": round(report["tokens"] / sample_tokens * seconds, 1),
                                    **compiler_counts()}
        print(f"{name:<28} {r['tokens_per_s']:>9,} tok/s  MFU {100 * r['mfu']:5.1f}%  warm {r['warm_s']:6.1f} s  "
              f"pool ~{r['pool_estimate_s']:.0f} s  graphs {r['unique_graphs']} recompiles {r['recompiles']} "
              f"breaks {r['graph_breaks']}", flush=True)
        save()

    budgets = [int(b) for b in args.budgets.split(",")]
    started = time.perf_counter()  # the CPU's share of a padded encode: tokenize, cut into batches, pad
    enc.batches(sample, 4096, budgets[0])
    report["sample_prepare_s"] = round(time.perf_counter() - started, 2)
    print(f"sample: {len(sample):,} skills, {sample_tokens:,} tokens; tokenized and padded in "
          f"{report['sample_prepare_s']} s", flush=True)
    for budget in budgets:
        run(f"padded_eager@{budget}", budget)
    best = max(budgets, key=lambda b: report["runs"].get(f"padded_eager@{b}", {}).get("tokens_per_s", 0))
    run(f"packed_eager@{best}", best, lambda: packing.enable(model))

    def compile_layers() -> None:
        for layer in enc.model.layers:
            layer.compile(dynamic=True)
    run(f"packed_layers_compiled@{best}", best, compile_layers)
    run(f"padded_layers_compiled@{best}", best, lambda: model.set_attn_implementation("sdpa"))
    if "whole_compiled" not in skip:
        torch._dynamo.reset()
        with torch.device(args.device):
            fresh = AutoModel.from_config(cfg, attn_implementation="sdpa", dtype=dtype).eval()
        enc.model = fresh
        run(f"whole_compiled@{best}", best, lambda: setattr(enc, "model", torch.compile(fresh, dynamic=True)))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
