"""Where a training step's time goes: the training module's forward + backward + AdamW on one GPU, without Ray or
DeepSpeed, under variants of the same step (padded or packed, gradient checkpointing, torch.compile per layer,
micro-batch size). Prints tokens/s, MFU and peak memory per variant, and a kernel profile of one of them.

    python benchmarks/train_step_gpu.py --size 0.6b --kind encoder --out $OUT \\
        --variants padded+ckpt,packed+ckpt,packed+ckpt+compile,packed+ckpt50+compile

A variant is `+`-joined: `padded` or `packed`, then optional `ckpt` (gradient checkpointing; `ckpt50` for half the
layers), `compile` (each layer through torch.compile), `b<N>` (N groups per micro-batch; default the profile's).
Random weights and random token ids: a speed figure only. The job path (`train_gpu.py`) measures the same module
under DeepSpeed.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from skillrouter.config import PipelineConfig
from skillrouter.training.flops import device_peak_tflops, flops_per_token, non_embedding_parameters
from skillrouter.training.modules import build_module
from train_gpu import build_model


def lengths(rng, n: int, max_length: int) -> list[int]:
    # skill texts of 300-3,000 words, about 1.3 tokens a word: the spread of the real pool, capped like training
    return [min(max_length, int(w * 1.3)) for w in rng.integers(300, 3000, n)]


def micro_batch(rng, kind: str, groups: int, max_length: int, vocab: int):
    def ids(n):
        return rng.integers(1000, vocab, n).tolist()

    docs = [[ids(n) for n in lengths(rng, 11, max_length)] for _ in range(groups)]
    queries = [ids(int(rng.integers(20, 120))) for _ in range(groups)] if kind == "encoder" else [[]] * groups
    return queries, docs


def run(variant: str, kind: str, model: Path, max_length: int, max_batch_tokens: int, default_groups: int,
        steps: int, accum: int, profile_dir: Path | None) -> dict:
    parts = set(variant.split("+"))
    groups = next((int(p[1:]) for p in parts if p.startswith("b") and p[1:].isdigit()), default_groups)
    ckpt = next((int(p[4:] or 100) / 100 for p in parts if p.startswith("ckpt")), None)
    torch.cuda.reset_peak_memory_stats()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    module = build_module(kind, str(model), max_length, 0.05 if kind == "encoder" else 1.0, device="cuda",
                          max_batch_tokens=max_batch_tokens, gradient_checkpointing=ckpt is not None,
                          checkpoint_share=ckpt or 1.0, packed="packed" in parts, compile="compile" in parts)
    module.to(torch.bfloat16)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-5, fused=True)
    vocab = module.backbone.get_input_embeddings().weight.shape[0]
    rng = np.random.default_rng(0)
    n_params = non_embedding_parameters(module.backbone)
    warmup = 2 * accum if "compile" in parts else accum
    tokens = seqs = 0
    started = time.perf_counter()
    for micro in range(warmup + steps * accum):
        if micro == warmup:
            torch.cuda.synchronize()
            tokens = seqs = 0
            started = time.perf_counter()
        q, docs = micro_batch(rng, kind, groups, max_length, vocab)
        module.tokens = module.padded_tokens = 0
        if profile_dir and micro == warmup + accum:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                module(q, docs).backward()
                torch.cuda.synchronize()
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=90)
            (profile_dir / f"profile-{variant.replace('+', '-')}.txt").write_text(table)
            print(table, flush=True)
        else:
            module(q, docs).backward()
        if (micro + 1) % accum == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        tokens += module.tokens
        seqs += sum(len(g) for g in docs) + (kind == "encoder") * len(q)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    rate = tokens / elapsed
    mfu = flops_per_token(module.backbone, tokens / seqs, n_params) * rate / (device_peak_tflops(None) * 1e12)
    result = {"variant": variant, "kind": kind, "groups": groups, "accum": accum, "tokens_per_s": round(rate),
              "mfu": round(mfu, 4), "mean_len": round(tokens / seqs), "gpu_peak_gib":
              round(torch.cuda.max_memory_allocated() / 2**30, 1), "seconds": round(elapsed, 1),
              "graph_breaks": sum(torch._dynamo.utils.counters["graph_break"].values())}
    del module, optimizer
    torch.cuda.empty_cache()
    return result


def check_packing(kind: str, model: Path, max_length: int) -> float:
    """Loss of one micro-batch padded and packed, in bf16 on the GPU (the varlen kernel's own check)."""
    losses = []
    for packed in (False, True):
        module = build_module(kind, str(model), max_length, 0.05 if kind == "encoder" else 1.0, device="cuda",
                              max_batch_tokens=65536, packed=packed).to(torch.bfloat16)
        vocab = module.backbone.get_input_embeddings().weight.shape[0]
        q, docs = micro_batch(np.random.default_rng(1), kind, 2, max_length, vocab)
        with torch.no_grad():
            losses.append(float(module(q, docs)))
        del module
    return abs(losses[0] - losses[1]) / abs(losses[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="0.6b", choices=["tiny", "0.6b", "8b"])
    p.add_argument("--kind", default="encoder", choices=["encoder", "reranker"])
    p.add_argument("--variants", default="padded,packed")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps measured per variant")
    p.add_argument("--accum", type=int, default=2, help="micro-batches per optimizer step")
    p.add_argument("--max-batch-tokens", type=int, default=65536)
    p.add_argument("--profile", default="", help="variant whose second step is profiled")
    p.add_argument("--model", help="a checkpoint built by an earlier run")
    p.add_argument("--work", default="/tmp/train_step_gpu", help="where the random checkpoint is written")
    p.add_argument("--out", required=True, help="results: train_step_gpu.jsonl and kernel profiles")
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else build_model(args.size, args.kind, Path(args.work) / args.kind)
    section = getattr(PipelineConfig(), args.kind)
    check = {"packed_vs_padded_loss_rel_diff": check_packing(args.kind, model, section.max_length)}
    print(json.dumps(check), flush=True)
    with (out / "train_step_gpu.jsonl").open("a") as fh:
        fh.write(json.dumps(check) + "\n")
    for variant in args.variants.split(","):
        try:
            result = run(variant, args.kind, model, section.max_length, args.max_batch_tokens, section.batch_size,
                         args.steps, args.accum, out if variant == args.profile else None)
        except torch.OutOfMemoryError as exc:
            result = {"variant": variant, "error": f"out of memory: {str(exc)[:120]}"}
            torch.cuda.empty_cache()
        print(json.dumps(result), flush=True)
        with (out / "train_step_gpu.jsonl").open("a") as fh:
            fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
