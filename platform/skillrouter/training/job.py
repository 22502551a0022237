"""The training jobs' driver: tokenized groups on Ray Data, a Ray Train `TorchTrainer` running DeepSpeed, the
progress log, and the exported Hugging Face model.

A run is named by a fingerprint of its inputs (settings, groups, corpus). Rerunning the same job resumes its Ray
Train run from the latest checkpoint, and returns at once when the export is already there; a changed setting
starts a new run beside the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from skillrouter.common.raycluster import ensure_ray
from skillrouter.common.tables import format_table
from skillrouter.config import PipelineConfig, TrainConfig
from skillrouter.corpus.skill import Skill, corpus_version
from skillrouter.models.loading import EXPORT_INFO, export_info
from skillrouter.training.data import held_out_skills, micro_batches_per_epoch, sample_groups, tokenized_dataset

KINDS = ("encoder", "reranker")
FINAL = "export"  # the name of a run's last checkpoint: the worker's Hugging Face export (training.loop)
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's list of a run's checkpoints, read when it resumes


def resolve_deepspeed(path: str | Path, t: TrainConfig, use_gpu: bool) -> dict:
    """The DeepSpeed JSON of `path` with its "auto" values filled from the training section."""
    try:
        ds = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"DeepSpeed config {path} does not exist (set encoder/reranker.deepspeed)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"DeepSpeed config {path} is not valid JSON: {exc}") from None
    bf16 = t.precision == "bf16" or (t.precision == "auto" and use_gpu)
    fills = {"train_micro_batch_size_per_gpu": t.batch_size, "gradient_accumulation_steps": t.grad_accum_steps,
             "gradient_clipping": t.max_grad_norm}
    for key, value in fills.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    ds.setdefault("bf16", {})
    if ds["bf16"].get("enabled", "auto") == "auto":
        ds["bf16"]["enabled"] = bf16
    if "stage" not in ds.get("zero_optimization", {}):
        raise ValueError(f"DeepSpeed config {path} sets no zero_optimization.stage")
    left = [k for k, v in ds.items() if v == "auto"]
    if left:
        raise ValueError(f"DeepSpeed config {path}: cannot fill 'auto' for {', '.join(left)}")
    return ds


# settings that change how fast a model trains, not what it learns: changing them does not retrain it
EXECUTION_ONLY = {"output_dir", "storage_path", "log_every", "packing", "compile", "checkpoint_share", "windows",
                  "keep_finished_checkpoints"}


def fingerprint(kind: str, t: TrainConfig, groups: pa.Table, skills: Sequence[Skill], seed: int) -> str:
    h = hashlib.sha256(f"{kind}\n{t.model_dump_json(exclude=EXECUTION_ONLY)}\n"
                       f"{seed}\n{corpus_version(skills)}\n".encode())
    # the negatives too: groups mined again with other settings (the false-negative filter off) are other data
    for qid, pos, negs in zip(*(groups.column(c).to_pylist() for c in ("query_id", "positive_id", "negatives"))):
        h.update(f"{qid}\t{pos}\t{','.join(n['skill_id'] for n in negs)}\n".encode())
    return h.hexdigest()[:16]


def _metrics_callback(path: Path, run: str):
    """A Ray Train callback (it runs in the controller) appending one JSON line per report, all workers merged:
    loss and MFU averaged, throughput summed; `run` (the inputs' fingerprint) tells the runs of one log apart."""
    from ray.train import UserCallback

    class MetricsLog(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            rows = [m for m in metrics if m]
            if not rows:
                return
            mfu = [m["mfu"] for m in rows if m.get("mfu") is not None]
            merged = {**rows[0], "loss": sum(m["loss"] for m in rows) / len(rows),
                      "tokens_per_s": sum(m["tokens_per_s"] for m in rows),
                      "mfu": sum(mfu) / len(mfu) if mfu else None, "checkpoint": checkpoint is not None,
                      "time": time.time(), "run": run}
            merged.pop("rank", None)
            with path.open("a") as fh:
                fh.write(json.dumps(merged) + "\n")

    return MetricsLog()


def format_progress(m: dict, total: int) -> str:
    mfu = f"  MFU {m['mfu']:.1%}" if m.get("mfu") is not None else ""
    mark = "  [exported]" if m.get("final") else "  [checkpoint]" if m.get("checkpoint") else ""
    return (f"step {m['step']:>5}/{total}  epoch {m['epoch']:.2f}  loss {m['loss']:.4f}  lr {m['lr']:.2e}  "
            f"{m['tokens_per_s']:,.0f} tok/s{mfu}{mark}")


def _follow(path: Path, total: int, log, stop: threading.Event, seen: int) -> None:
    """Print the progress lines the callback appends while `fit()` blocks the driver (after the first `seen`)."""
    while True:
        done = stop.is_set()
        if path.exists():
            lines = path.read_text().splitlines()
            for line in lines[seen:]:
                log(format_progress(json.loads(line), total))
            seen = len(lines)
        if done:
            return
        stop.wait(1.0)


def up_to_date_export(out_dir: Path, fp: str) -> dict | None:
    """The export info at `out_dir` when it was trained from inputs with fingerprint `fp`, else None."""
    summary = export_info(str(out_dir))
    return summary if summary.get("fingerprint") == fp else None


def training_groups(groups: pa.Table, config: PipelineConfig, kind: str) -> pa.Table:
    """The groups a `kind` run trains on: the profile's sample, without the queries of the skills held out for
    validation (`routing.validation_share`)."""
    held_out = held_out_skills(groups, config.routing.validation_share, config.seed)
    return sample_groups(groups, config.train(kind).max_groups, config.seed, held_out)


def training_data(groups: pa.Table, skills: Sequence[Skill], config: PipelineConfig, kind: str,
                  log=print) -> pa.Table:
    """`training_groups`, with a reranker's negatives taken from its first stage when `reranker.negatives_from`
    names one (mining.rerank_negatives)."""
    groups = training_groups(groups, config, kind)
    source = getattr(config.train(kind), "negatives_from", "mined")
    if source == "mined":
        return groups
    from skillrouter.mining.rerank_negatives import first_stage_negatives
    from skillrouter.retrieval.systems import get_system

    try:
        get_system(source)
    except ValueError as exc:
        raise ValueError(f"{kind}.negatives_from: {exc}") from None
    return first_stage_negatives(groups, skills, config, source, log)


def is_up_to_date(kind: str, skills: Sequence[Skill], groups: pa.Table, config: PipelineConfig,
                  out_dir: str | Path | None = None) -> bool:
    """Whether `run_training(kind, skills, groups, config)` would skip because the export at `out_dir` (default:
    the profile's) was trained from these very inputs and settings."""
    t = config.train(kind)
    fp = fingerprint(kind, t, training_data(groups, skills, config, kind, log=lambda _: None), skills, config.seed)
    return up_to_date_export(Path(out_dir or config.model_dir(kind)).resolve(), fp) is not None


def run_training(kind: str, skills: Sequence[Skill], groups: pa.Table, config: PipelineConfig,
                 log=print, force: bool = False) -> dict:
    """Fine-tune the `kind` model of `config` on mined `groups`; returns a summary with the export path. `force`
    trains from the initial weights again even when the export is up to date (`--rerun KIND`)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from skillrouter.models.encoder import EncoderSpec
    from skillrouter.models.reranker import RerankerSpec
    from skillrouter.training.loop import train_func

    t = config.train(kind)
    run_dir = Path(config.run_dir)
    out_dir = config.model_dir(kind).resolve()
    storage = t.storage_path or str((run_dir / "train").resolve())
    groups = training_data(groups, skills, config, kind, log)
    fp = fingerprint(kind, t, groups, skills, config.seed)
    summary = None if force else up_to_date_export(out_dir, fp)
    if force and "://" not in storage:  # the same run name would restore its final checkpoint: start afresh
        shutil.rmtree(Path(storage) / f"{kind}-{fp}", ignore_errors=True)
    if summary is not None:
        log(f"{kind}: up to date ({out_dir}, {summary['steps']} steps); --rerun {kind} trains it again")
        return {**summary, "output_dir": str(out_dir), "skipped": True}
    log_path = run_dir.resolve() / "models" / f"{kind}_train_log.jsonl"
    run_path = Path(storage) / f"{kind}-{fp}"
    finished = None if "://" in storage else finished_export(run_path)
    if finished is not None:  # trained to the end, then stopped before publishing: publish, do not train again
        log(f"{kind}: the run {run_path} finished before it was stopped; publishing its export")
        info = _publish(finished, run_path, out_dir, t, log_path, fp, {"groups": groups.num_rows}, log)
        return {**info, "output_dir": str(out_dir), "skipped": False}

    ensure_ray()
    import ray

    have = ray.cluster_resources()
    use_gpu = t.use_gpu if t.use_gpu is not None else have.get("GPU", 0) > 0
    wanted = {"CPU": t.num_workers * t.cpus_per_worker, "GPU": t.num_workers if use_gpu else 0}
    short = [f"{v:g} {k} (the cluster has {have.get(k, 0):g})" for k, v in wanted.items() if v > have.get(k, 0)]
    if short:  # Ray Train waits for them silently; say so (an autoscaler may add nodes, so it is not an error)
        log(f"{kind}: waiting for {', '.join(short)}; lower {kind}.num_workers or {kind}.cpus_per_worker "
            "if no node will join")
    rows_per_worker = groups.num_rows // t.num_workers
    if rows_per_worker == 0:
        raise ValueError(f"{groups.num_rows} groups cannot feed {t.num_workers} workers")
    per_epoch = micro_batches_per_epoch(rows_per_worker, t.batch_size)
    total = max(1, t.epochs * per_epoch // t.grad_accum_steps)
    total = min(total, t.max_steps) if t.max_steps else total
    spec = (EncoderSpec(model=t.model, max_length=t.max_length) if kind == "encoder"
            else RerankerSpec(model=t.model, max_length=t.max_length))
    started = time.perf_counter()
    # Tokenized before the workers start: the workers hold the cluster's CPUs, and Ray Data's actors need some.
    actors = max(1, min(4, int(ray.available_resources().get("CPU", 1))))
    skill_text = getattr(t, "skill_text", "full")
    dataset = tokenized_dataset(kind, groups, skills, spec, t.negatives, actors, skill_text=skill_text).materialize()
    tokenize_s = time.perf_counter() - started
    log(f"{kind}: {t.model} on {groups.num_rows:,} groups x (1 + {t.negatives}) skills, {t.num_workers} "
        f"{'GPU' if use_gpu else 'CPU'} worker(s), {total} steps of {t.batch_size} x {t.grad_accum_steps} "
        f"groups per worker; tokenized in {tokenize_s:.1f} s")

    log_path.parent.mkdir(parents=True, exist_ok=True)
    # appended to, never truncated: a run resumed after a kill keeps the killed run's rows
    logged = len(log_path.read_text().splitlines()) if log_path.exists() else 0
    args = {"kind": kind, "train": t.model_dump(), "seed": config.seed, "total_steps": total,
            "micro_batches_per_epoch": per_epoch, "deepspeed": resolve_deepspeed(t.deepspeed, t, use_gpu)}
    trainer = TorchTrainer(
        train_func, train_loop_config=args,
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if use_gpu
                                                                                      else {})}),
        run_config=RunConfig(name=f"{kind}-{fp}", storage_path=storage,
                             failure_config=FailureConfig(max_failures=t.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
                             callbacks=[_metrics_callback(log_path, fp)]),
        datasets={"train": dataset})
    stop = threading.Event()
    follower = threading.Thread(target=_follow, args=(log_path, total, log, stop, logged), daemon=True)
    follower.start()
    try:
        result = trainer.fit()
    finally:
        stop.set()
        follower.join()
    if result.error:
        raise result.error

    info = _publish(Path(result.checkpoint.path), Path(result.path), out_dir, t, log_path, fp,
                    {"groups": groups.num_rows, "train_seconds": round(time.perf_counter() - started, 1),
                     "tokenize_seconds": round(tokenize_s, 1), "device": "GPU" if use_gpu else "CPU"}, log,
                    checkpoint=result.checkpoint)
    return {**info, "output_dir": str(out_dir), "skipped": False}


def _publish(export: Path, run_path: Path, out_dir: Path, t: TrainConfig, log_path: Path, fp: str, extra: dict,
             log, checkpoint=None) -> dict:
    """Publish a run's final checkpoint `export` (the worker's Hugging Face export) at `out_dir`, whole or not at
    all, with the run's figures in its info; then free the run's DeepSpeed states. Returns the info."""
    from skillrouter.models.exports import write_exports

    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    _export_copy(export, staging, checkpoint)
    info = json.loads((staging / EXPORT_INFO).read_text())  # the worker wrote it: its absence is an error
    reports = [row for row in map(json.loads, log_path.read_text().splitlines())
               if row.get("run") == fp] if log_path.exists() else []
    if reports:
        info["final"] = reports[-1]  # all workers merged (the worker's own figure covers rank 0 only)
    info.update(fingerprint=fp, run=str(run_path), log=str(log_path), skill_text=getattr(t, "skill_text", "full"),
                **extra)
    # a run published after its driver was stopped: its time and device from the workers' reports
    info.setdefault("train_seconds", round(sum(r.get("seconds", 0) for r in reports), 1))
    info.setdefault("device", "CPU" if info.get("final", {}).get("gpu_peak_gib") is None else "GPU")
    (staging / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
    # sentence-transformers' files (an encoder) or CrossEncoder's activation (a BERT reranker), and a model card
    write_exports(staging, info, t.model_dump(exclude=EXECUTION_ONLY | {"model", "max_length"}))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)  # the export appears whole or not at all
    if not t.keep_finished_checkpoints:
        freed = prune_finished_run(run_path, export.name)
        if freed:
            log(f"{info['kind']}: removed {freed / 2**20:,.0f} MB of intermediate checkpoints of the finished run "
                f"(train.keep_finished_checkpoints=true keeps them)")
    return info


def _export_copy(source: Path, staging: Path, checkpoint=None) -> None:
    """The final checkpoint at `source` (the worker's export) copied to `staging`: hard links when it lies on this
    machine's file system (no second copy on disk), else Ray's download of `checkpoint`."""
    if (checkpoint is None or checkpoint.filesystem.type_name == "local") and source.is_dir():
        try:
            shutil.copytree(source, staging, copy_function=os.link)
            return
        except OSError:  # another file system: copy instead
            shutil.rmtree(staging, ignore_errors=True)
            if checkpoint is None:
                shutil.copytree(source, staging)
                return
    checkpoint.to_directory(str(staging))


def finished_export(run_path: Path) -> Path | None:
    """The final export of a Ray Train run that trained to its end but whose driver was stopped before publishing
    it (a time limit, a kill, a deleted `models/` folder): Ray Train's snapshot lists it and the worker wrote it
    whole. Restoring that run would hand DeepSpeed a folder that holds no DeepSpeed state. An export listed but not
    whole is dropped, from the snapshot too, so the run resumes from its last DeepSpeed checkpoint."""
    snapshot = run_path / SNAPSHOT
    if not snapshot.is_file():
        return None
    results = json.loads(snapshot.read_text()).get("checkpoint_results") or []
    if not any(r.get("checkpoint_dir_name") == FINAL for r in results):
        return None
    export = run_path / FINAL
    if (export / EXPORT_INFO).is_file() and (export / "config.json").is_file():  # not a folder cut short
        return export
    shutil.rmtree(export, ignore_errors=True)
    _drop_from_snapshot(run_path, {FINAL})
    return None


def prune_finished_run(run_path: Path, last: str) -> int:
    """Delete the intermediate checkpoints (DeepSpeed step folders with optimizer states) of a finished Ray Train
    run, keeping its last checkpoint `last` (what a resume restores: the final export); returns the bytes freed.
    Ray Train's snapshot drops them too: its restore asserts that every listed checkpoint exists."""
    if not run_path.is_dir():
        return 0
    freed = 0
    gone = set()
    for step in run_path.glob("step-*"):
        if step.is_dir() and step.name != last:
            freed += sum(f.stat().st_size for f in step.rglob("*") if f.is_file())
            shutil.rmtree(step)
            gone.add(step.name)
    if gone:
        _drop_from_snapshot(run_path, gone)
    return freed


def _drop_from_snapshot(run_path: Path, gone: set[str]) -> None:
    """Remove the checkpoints named `gone` from Ray Train's snapshot of the run: its restore asserts that every
    listed checkpoint exists, pairs results with report indices, and resumes from the latest result."""
    snapshot = run_path / SNAPSHOT
    if not snapshot.exists():
        return
    data = json.loads(snapshot.read_text())
    results, indices = data.get("checkpoint_results"), data.get("checkpoint_report_indices")
    if not (isinstance(results, list) and isinstance(indices, list) and len(results) == len(indices)):
        return
    kept = [(r, i) for r, i in zip(results, indices) if r.get("checkpoint_dir_name") not in gone]
    data["checkpoint_results"] = [r for r, _ in kept]
    data["checkpoint_report_indices"] = [i for _, i in kept]
    if (data.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name") in gone:
        data["latest_checkpoint_result"] = kept[-1][0] if kept else None
    pending = data.get("pending_training_results") or []
    specs = data.get("pending_validation_specs") or []
    if len(pending) == len(specs):
        pairs = [(r, v) for r, v in zip(pending, specs) if r.get("checkpoint_dir_name") not in gone]
        data["pending_training_results"] = [r for r, _ in pairs]
        data["pending_validation_specs"] = [v for _, v in pairs]
    tmp = snapshot.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(snapshot)


def print_training_summary(summaries: Sequence[dict], log=print) -> None:
    rows = []
    for s in summaries:
        final = s["final"]
        mfu = f"{final['mfu']:.1%}" if final.get("mfu") is not None else "-"
        rows.append([s["kind"], s["base_model"], s["groups"], s["steps"], final["loss"],
                     f"{final['tokens_per_s']:,.0f}", mfu, f"{s['train_seconds']:.0f}", s["output_dir"]])
    log(format_table(["model", "from", "groups", "steps", "last loss", "tok/s", "MFU", "seconds", "export"], rows,
                     floatfmt=".4f"))
