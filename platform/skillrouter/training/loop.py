"""The per-worker training function that Ray Train's `TorchTrainer` runs: DeepSpeed engine, data shard, schedule,
metrics, checkpoints and the final Hugging Face export.

Resuming: every checkpoint holds DeepSpeed's full state (weights, optimizer shards, scheduler, step) and the count
of micro-batches consumed. A restarted worker group loads the latest one and skips that many micro-batches of the
epoch's seeded order, so it continues at the checkpoint's step with the learning rate it had.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import torch

from skillrouter.models.loading import inference_dtype
from skillrouter.training.data import length_grouped
from skillrouter.training.flops import device_peak_tflops, flops_per_token, non_embedding_parameters
from skillrouter.training.job import FINAL
from skillrouter.training.modules import build_module

DS_TAG = "deepspeed"  # DeepSpeed's tag inside each Ray checkpoint directory


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str):
    """Linear warm-up to the peak learning rate, then linear or cosine decay to zero (or constant)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(progress, 1.0)
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return factor


def param_groups(module: torch.nn.Module, lr: float, weight_decay: float, new_head_lr: float | None = None,
                 new: set[str] = frozenset()) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms (the usual practice), and `new_head_lr` for the weights
    the base checkpoint lacked (a fresh classification head learns from zero while the backbone only adapts)."""
    groups: dict[tuple[float, float], list] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        decay = 0.0 if p.ndim < 2 or "norm" in name.lower() else weight_decay
        rate = new_head_lr if new_head_lr and name.removeprefix("backbone.") in new else lr
        groups.setdefault((rate, decay), []).append(p)
    return [{"params": ps, "lr": rate, "weight_decay": decay} for (rate, decay), ps in groups.items()]


def train_func(args: dict) -> None:
    """Run by each Ray Train worker. `args` is built by `training.job.run_training`."""
    import deepspeed
    import ray.train
    import ray.train.torch

    t = args["train"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(args["seed"])
    if device.type == "cpu":  # two DeepSpeed workers on one small machine should not fight over cores
        torch.set_num_threads(max(1, t["cpus_per_worker"]))
    else:
        # packed rows of every length, near the memory limit when few layers are recomputed: without expandable
        # segments the allocator fragments and stalls on frees (an H200 step ran 30% slower at 109 of 139 GiB)
        torch.cuda.memory._set_allocator_settings("expandable_segments:True")

    module = build_module(args["kind"], t["model"], t["max_length"], t["temperature"], device=str(device),
                          max_batch_tokens=t["max_batch_tokens"], gradient_checkpointing=t["gradient_checkpointing"],
                          mask_margin=t.get("mask_margin"), loss=t.get("loss", "listwise"),
                          packed=t["packing"], checkpoint_share=t["checkpoint_share"], compile=t["compile"])
    n_params = non_embedding_parameters(module.backbone)
    ds_config = args["deepspeed"]
    zero3 = ds_config["zero_optimization"]["stage"] == 3
    module.sync_chunks = zero3 and world > 1
    if zero3 and args["kind"] == "reranker" and module.wrapped.decoder:
        # the yes/no head reads two rows of lm_head outside lm_head's forward: ZeRO-3 must gather it for us
        deepspeed.zero.register_external_parameter(module, module.backbone.lm_head.weight)
    groups = param_groups(module, t["learning_rate"], t["weight_decay"], t.get("new_head_lr"),
                          getattr(module.wrapped, "new_parameters", set()))
    optimizer = torch.optim.AdamW(groups, lr=t["learning_rate"], fused=device.type == "cuda")
    total = args["total_steps"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total, int(t["warmup_ratio"] * total), t["schedule"]))
    engine, _, _, scheduler = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler,
                                                   config=ds_config, dist_init_required=False)

    # DeepSpeed's bf16 is off then (training.job.resolve_deepspeed); "auto" decides here, on the worker's own CPU
    autocast = t["precision"] == "bf16-autocast" or (
        t["precision"] == "auto" and device.type == "cpu" and inference_dtype("cpu") == torch.bfloat16)
    micro = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as path:
            _, client = engine.load_checkpoint(path, tag=DS_TAG)
        micro = client["micro_step"]
    resumed_from = engine.global_steps

    peak = device_peak_tflops(t["peak_tflops"])
    shard = ray.train.get_dataset_shard("train")
    per_epoch = args["micro_batches_per_epoch"]
    window = {"loss": 0.0, "micro": 0, "tokens": 0, "padded": 0, "seq": 0.0, "started": time.perf_counter()}

    def metrics(step: int) -> dict:
        elapsed = time.perf_counter() - window["started"]
        tokens_per_s = window["tokens"] / elapsed
        mean_seq = window["seq"] / max(1, window["micro"])
        out = {"step": step, "epoch": micro / per_epoch, "loss": window["loss"] / max(1, window["micro"]),
               "lr": scheduler.get_last_lr()[0], "tokens_per_s": tokens_per_s,
               "padding": 1 - window["tokens"] / max(1, window["padded"]), "seconds": elapsed,
               "resumed_from_step": resumed_from, "world_size": world, "rank": rank,
               "gpu_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
               "mfu": (flops_per_token(module.backbone, mean_seq, n_params) * tokens_per_s / (peak * 1e12))
               if peak else None}
        window.update(loss=0.0, micro=0, tokens=0, padded=0, seq=0.0, started=time.perf_counter())
        return out

    while engine.global_steps < total:
        epoch, skip = divmod(micro, per_epoch)
        batches = length_grouped(shard.iter_rows(), t["batch_size"], seed=args["seed"] + epoch)
        for i, batch in enumerate(batches):
            if i < skip:
                continue
            module.tokens = module.padded_tokens = 0
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = engine([r["query_ids"] for r in batch], [r["doc_ids"] for r in batch])
            engine.backward(loss)
            engine.step()
            micro += 1
            window["loss"] += float(loss.detach())
            window["micro"] += 1
            window["tokens"] += module.tokens
            window["padded"] += module.padded_tokens
            window["seq"] += module.tokens / max(1, sum(len(r["doc_ids"]) + bool(r["query_ids"]) for r in batch))
            if micro % t["grad_accum_steps"]:  # checkpoints fall on optimizer steps, so this counter agrees
                continue
            step = engine.global_steps
            if step % t["checkpoint_every"] == 0 and step < total:
                with tempfile.TemporaryDirectory() as tmp:
                    engine.save_checkpoint(tmp, tag=DS_TAG, client_state={"micro_step": micro})
                    ray.train.report(metrics(step), checkpoint=ray.train.Checkpoint.from_directory(tmp),
                                     checkpoint_dir_name=f"step-{step:07d}")
            elif step % t["log_every"] == 0 and step < total:
                ray.train.report(metrics(step))
            if step >= total:
                break

    final = {**metrics(engine.global_steps), "final": True}
    state = engine._zero3_consolidated_16bit_state_dict() if zero3 else None
    with tempfile.TemporaryDirectory() as tmp:
        exported = None
        if rank == 0:
            info = {"kind": args["kind"], "base_model": t["model"], "max_length": t["max_length"],
                    "windows": t["windows"], "steps": engine.global_steps, "world_size": world, "final": final}
            exported = ray.train.Checkpoint.from_directory(str(module.export(Path(tmp), state, info)))
        ray.train.report(final, checkpoint=exported, checkpoint_dir_name=FINAL)
