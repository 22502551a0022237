"""Training: schedule, data batching, the trainable modules, export/reload, and real Ray Train + DeepSpeed runs."""

import json
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from transformers import AutoModel

from skillrouter.config import PipelineConfig, load_config
from skillrouter.corpus.skill import Skill
from skillrouter.models.encoder import Encoder, EncoderSpec
from skillrouter.models.reranker import Reranker, RerankerSpec
from skillrouter.training.data import (
    group_skills,
    length_grouped,
    micro_batches_per_epoch,
    sample_groups,
    tokenized_dataset,
)
from skillrouter.training.flops import flops_per_token, non_embedding_parameters
from skillrouter.training.job import finished_export, prune_finished_run, resolve_deepspeed, run_training
from skillrouter.training.loop import lr_lambda
from skillrouter.training.modules import EXPORT_INFO, build_module

# A learnable toy task: each skill's request shares its distinctive words, random-weight models can fit it.
WORDS = ["pdf", "kubernetes", "postgres", "invoice", "spreadsheet", "docker", "release", "budget", "terraform",
         "latency", "calendar", "translation", "password", "backup", "graph", "email"]
TOY = [Skill(f"toy/{w}", f"{w}-helper", f"Everything about {w}.", f"Steps for {w} work: {w} {w} and more {w}.")
       for w in WORDS]


def toy_groups(n_queries: int = 64, negatives: int = 3, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_queries):
        pos = TOY[i % len(TOY)]
        others = [s for s in TOY if s.id != pos.id]
        negs = [others[j] for j in rng.choice(len(others), negatives, replace=False)]
        rows.append({"query_id": f"q{i:03d}", "query": f"please help with my {pos.id.split('/')[1]} task {i}",
                     "positive_id": pos.id,
                     "negatives": [{"skill_id": s.id, "source": "random", "score": 0.0} for s in negs]})
    return pa.Table.from_pylist(rows)


def toy_config(tmp_path, model: str, kind: str = "encoder", **train) -> PipelineConfig:
    section = {"model": model, "max_length": 48, "negatives": 3, "batch_size": 8, "grad_accum_steps": 1,
               "learning_rate": 3e-3, "warmup_ratio": 0.0, "schedule": "constant", "gradient_checkpointing": False,
               "num_workers": 1, "cpus_per_worker": 1, "log_every": 1, "checkpoint_every": 4,
               "storage_path": str(tmp_path / "storage"), **train}
    if kind == "encoder":
        section["temperature"] = 0.1
    # every toy group trains: no skill is held out for the main job's validation
    return PipelineConfig.model_validate({"run_dir": str(tmp_path / "run"), kind: section,
                                          "routing": {"validation_share": 0.0}})


def read_log(tmp_path, kind: str = "encoder") -> list[dict]:
    path = tmp_path / "run" / "models" / f"{kind}_train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------- pure parts


def test_schedule_warms_up_then_decays():
    f = lr_lambda(total_steps=10, warmup_steps=2, schedule="linear")
    assert [round(f(s), 3) for s in range(4)] == [0.5, 1.0, 1.0, 0.875]
    assert f(10) == 0.0
    cos = lr_lambda(10, 0, "cosine")
    assert cos(0) == 1.0 and abs(cos(5) - 0.5) < 1e-9 and abs(cos(10)) < 1e-9
    assert lr_lambda(10, 0, "constant")(7) == 1.0


def test_deepspeed_config_fills_auto_values(repo_root, tmp_path):
    t = load_config(repo_root / "configs" / "qwen3-8b.yaml").encoder
    ds = resolve_deepspeed(repo_root / t.deepspeed, t, use_gpu=True)
    assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"]["enabled"] is True
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (8, 4)
    cpu = resolve_deepspeed(repo_root / "configs/deepspeed/zero2.json", t, use_gpu=False)
    assert cpu["bf16"]["enabled"] is False and cpu["zero_optimization"]["stage"] == 2
    (tmp_path / "bad.json").write_text('{"train_batch_size": "auto", "zero_optimization": {"stage": 2}}')
    with pytest.raises(ValueError, match="cannot fill 'auto' for train_batch_size"):
        resolve_deepspeed(tmp_path / "bad.json", t, use_gpu=False)
    with pytest.raises(ValueError, match="does not exist"):
        resolve_deepspeed(tmp_path / "missing.json", t, use_gpu=False)


def test_profiles_inherit_and_state_the_paper_settings(repo_root):
    small, gpu, big = (load_config(repo_root / "configs" / f) for f in ("minilm.yaml", "qwen3-0.6b.yaml",
                                                                         "qwen3-8b.yaml"))
    assert small.encoder.model == small.reranker.model == "minilm" and small.encoder.num_workers == 1
    assert (gpu.encoder.temperature, gpu.encoder.learning_rate, gpu.encoder.batch_size,
            gpu.encoder.grad_accum_steps, gpu.encoder.max_length) == (0.05, 2e-5, 8, 4, 2048)
    assert (gpu.reranker.temperature, gpu.reranker.learning_rate, gpu.reranker.max_length) == (1.0, 1e-5, 4096)
    assert gpu.encoder.max_groups is None and gpu.examples == small.examples  # inherited unless restated
    assert big.encoder.model == "Qwen/Qwen3-Embedding-8B" and big.encoder.num_workers >= 4
    assert big.reranker.deepspeed.endswith("zero3.json") and big.run_dir == "runs/qwen3-8b"
    # the measured fast path on one GPU; the CPU default and the 8B (not measured with them) keep plain settings
    assert gpu.encoder.compile and gpu.encoder.checkpoint_share < 1 and gpu.reranker.compile
    assert not small.encoder.compile and not big.encoder.compile and big.reranker.checkpoint_share == 1.0


def test_length_grouped_batches_are_deterministic_and_cover_every_row():
    rows = [{"i": i, "tokens": int(t)} for i, t in enumerate(np.random.default_rng(0).integers(1, 500, 300))]
    first = list(length_grouped(iter(rows), batch_size=8, seed=3, window_batches=4))
    again = list(length_grouped(iter(rows), batch_size=8, seed=3, window_batches=4))
    other = list(length_grouped(iter(rows), batch_size=8, seed=4, window_batches=4))
    assert [[r["i"] for r in b] for b in first] == [[r["i"] for r in b] for b in again]
    assert [[r["i"] for r in b] for b in first] != [[r["i"] for r in b] for b in other]
    assert sorted(r["i"] for b in first for r in b) == list(range(300))
    assert len(first) == micro_batches_per_epoch(300, 8, window_batches=4)
    # sorting inside windows of 32 rows: batches are far tighter in length than random ones
    spread = np.mean([max(r["tokens"] for r in b) - min(r["tokens"] for r in b) for b in first])
    assert spread < 150


def test_groups_sample_and_shape():
    table = toy_groups(20)
    empty = pa.Table.from_pylist([{"query_id": "x", "query": "q", "positive_id": TOY[0].id, "negatives": []}],
                                 schema=table.schema)
    sampled = sample_groups(pa.concat_tables([table, empty]), max_groups=None, seed=0)
    assert sampled.num_rows == 20 and "x" not in sampled.column("query_id").to_pylist()
    assert sample_groups(table, 5, seed=0).column("query_id").to_pylist() == \
        sample_groups(table, 5, seed=0).column("query_id").to_pylist()
    negs = [{"skill_id": "a"}, {"skill_id": "b"}]
    assert group_skills("p", negs, 5) == ["p", "a", "b", "a", "b", "a"]  # cycled to a fixed shape


def test_tokenized_groups_keep_their_order_whatever_actor_finishes_first(ray_cluster, tiny_qwen3):
    """Two runs train alike, and a resumed run skips exactly what it trained, only if the rows reach the workers in
    the groups' order (`length_grouped` is deterministic for a given order): two tokenizer actors, blocks of 2."""
    groups = toy_groups(40)
    spec = EncoderSpec(model=str(tiny_qwen3), max_length=48)
    dataset = tokenized_dataset("encoder", groups, TOY, spec, 3, actors=2, rows_per_block=2)
    # asked of Ray Data, not left to luck: tokenizing is so even here that actors seldom overtake each other
    assert dataset.context.execution_options.preserve_order
    order = [row["query_id"] for row in dataset.materialize().iter_rows()]
    assert order == groups.column("query_id").to_pylist()


# ---------------------------------------------------------------------------------------------- modules


def _ids(module, kind):
    wrapped = module.wrapped
    if kind == "encoder":
        q = wrapped.tokenize([wrapped.format_query("help with my pdf task"), wrapped.format_query("docker")])
        docs = [wrapped.tokenize([wrapped.format_skill(s) for s in TOY[i:i + 4]]) for i in (0, 4)]
        return q, docs
    return [[], []], [wrapped.pair_ids([wrapped.format_pair("pdf task", s) for s in TOY[i:i + 4]]) for i in (0, 4)]


@pytest.mark.parametrize("kind", ["encoder", "reranker"])
def test_chunked_forward_gives_the_same_loss_and_gradients(kind, tiny_qwen3, tiny_qwen3_reranker):
    model = str(tiny_qwen3 if kind == "encoder" else tiny_qwen3_reranker)
    losses, grads = [], []
    for budget, packed in ((None, False), (64, False), (None, True), (64, True)):
        module = build_module(kind, model, 64, 0.05 if kind == "encoder" else 1.0, device="cpu",
                              max_batch_tokens=budget, packed=packed)
        q, docs = _ids(module, kind)
        loss = module(q, docs)
        loss.backward()
        losses.append(loss.item())
        grads.append(module.backbone.get_input_embeddings().weight.grad.clone())
        if packed:  # no padding is computed
            assert module.padded_tokens == module.tokens == sum(map(len, q)) + sum(len(d) for g in docs for d in g)
        else:
            assert module.padded_tokens >= module.tokens > 0
    for loss, grad in zip(losses[1:], grads[1:]):
        assert loss == pytest.approx(losses[0], rel=1e-5)
        torch.testing.assert_close(grad, grads[0], atol=1e-5, rtol=1e-3)  # fp32, other summation orders


@pytest.mark.parametrize("kind", ["encoder", "reranker"])
def test_bf16_autocast_runs_the_forward_in_bf16_and_the_loss_in_fp32(kind, tiny_qwen3, tiny_qwen3_reranker):
    model = str(tiny_qwen3 if kind == "encoder" else tiny_qwen3_reranker)
    module = build_module(kind, model, 64, 0.05 if kind == "encoder" else 1.0, device="cpu")
    q, docs = _ids(module, kind)
    exact = module(q, docs).item()
    outputs = []
    linear = next(m for m in module.backbone.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda _m, _i, out: outputs.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module(q, docs)
    assert outputs and set(outputs) == {torch.bfloat16}  # the layers' matmuls ran in bf16
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(exact, rel=0.05)
    loss.backward()
    assert module.backbone.get_input_embeddings().weight.grad.dtype == torch.float32  # fp32 weights, fp32 grads


def _forwards_per_rank(rank: int, model: str, port: int, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2, init_method=f"tcp://127.0.0.1:{port}")
    module = build_module("encoder", model, 64, 0.05, device="cpu", max_batch_tokens=40, packed=True)
    length = (30, 5)[rank]  # rank 0's texts fill one row each, rank 1's share one
    q, docs = [[7] * 6, [8] * 6], [[[9 + i] * length for i in range(3)], [[20 + i] * length for i in range(3)]]
    calls = []
    module.backbone.register_forward_hook(lambda *_: calls.append(1))
    plain = module(q, docs).item()
    alone = len(calls)
    module.sync_chunks, calls[:] = True, []
    synced = module(q, docs)
    synced.backward()
    Path(out_dir, f"{rank}.json").write_text(json.dumps([alone, len(calls), plain, synced.item()]))
    torch.distributed.destroy_process_group()


def test_zero3_ranks_run_as_many_forwards_whatever_their_lengths(tiny_qwen3, tmp_path):
    """Under ZeRO-3 each layer's forward is a collective: a rank with fewer chunks runs one-token fillers, which
    leave the loss as it was."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_forwards_per_rank, args=(str(tiny_qwen3), port, str(tmp_path)), nprocs=2)
    (alone0, synced0, plain0, loss0), (alone1, synced1, plain1, loss1) = (
        json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert alone0 > alone1  # without syncing, the ranks disagree
    assert synced0 == synced1 == alone0
    assert loss0 == pytest.approx(plain0, rel=1e-6) and loss1 == pytest.approx(plain1, rel=1e-6)


def test_export_then_reload_scores_identically(tiny_qwen3, tiny_qwen3_reranker, tmp_path):
    query = "merge my pdf files"
    enc = build_module("encoder", str(tiny_qwen3), 64, 0.05, device="cpu", packed=True)
    enc.backbone.eval()
    with torch.no_grad():
        before = enc.wrapped.encode_skills(TOY[:5])
    enc.export(tmp_path / "enc", None, {"kind": "encoder"})
    # trained packed, saved plain: transformers alone reloads it (the packing attention is not in its config)
    assert "skillrouter" not in (tmp_path / "enc" / "config.json").read_text()
    AutoModel.from_pretrained(str(tmp_path / "enc"))
    after = Encoder.load(EncoderSpec(model=str(tmp_path / "enc"), max_length=64), device="cpu").encode_skills(TOY[:5])
    np.testing.assert_allclose(before, after, atol=1e-6)  # trained packed, reloaded padded: float rounding
    assert json.loads((tmp_path / "enc" / EXPORT_INFO).read_text())["kind"] == "encoder"

    for name, model in (("qwen", str(tiny_qwen3_reranker)), ("minilm", "minilm")):
        rr = build_module("reranker", model, 64, 1.0, device="cpu", packed=True)
        rr.backbone.eval()
        before = rr.wrapped.score(query, TOY[:5])
        rr.export(tmp_path / name, None, {"kind": "reranker"})
        after = Reranker.load(RerankerSpec(model=str(tmp_path / name), max_length=64), device="cpu").score(
            query, TOY[:5])
        torch.testing.assert_close(before, after, atol=1e-6, rtol=0)  # same weights; kernels may round apart


def test_flops_count_the_non_embedding_weights(tiny_qwen3):
    module = build_module("encoder", str(tiny_qwen3), 64, 0.05, device="cpu")
    model = module.backbone
    n = non_embedding_parameters(model)
    assert n == sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    c = model.config
    assert flops_per_token(model, 100) == 6 * n + 12 * c.num_hidden_layers * c.head_dim * c.num_attention_heads * 100


# ---------------------------------------------------------------------------------------------- Ray Train


@pytest.mark.slow
def test_two_worker_zero2_run_learns_the_toy_task_and_exports(ray_cluster, tiny_qwen3, tmp_path):
    # in bf16 autocast, as "auto" trains on a CPU that computes in bf16 (the killed-worker test below: fp32)
    config = toy_config(tmp_path, str(tiny_qwen3), num_workers=2, epochs=6, checkpoint_every=100,
                        precision="bf16-autocast")
    lines = []
    summary = run_training("encoder", TOY, toy_groups(64), config, log=lines.append)
    log = read_log(tmp_path)
    assert summary["world_size"] == 2 and summary["steps"] == 24 and log[-1]["step"] == 24
    assert all(row["world_size"] == 2 for row in log)
    first, last = np.mean([r["loss"] for r in log[:3]]), np.mean([r["loss"] for r in log[-3:]])
    assert last < 0.6 * first, (first, last)
    assert any("step    24/24" in line and "[exported]" in line for line in lines)
    encoder = Encoder.load(EncoderSpec(model=summary["output_dir"], max_length=48), device="cpu")
    q = encoder.encode_queries(["please help with my kubernetes task 99"])
    assert TOY[int(np.argmax(q @ encoder.encode_skills(TOY).T))].id == "toy/kubernetes"
    again = run_training("encoder", TOY, toy_groups(64), config, log=lines.append)
    assert again["skipped"] and "up to date" in lines[-1]
    # a driver stopped after the last step but before publishing leaves the run's export and no models/ folder:
    # the rerun publishes that export (restoring it would hand DeepSpeed a folder without its state)
    rows = len(read_log(tmp_path))
    shutil.rmtree(summary["output_dir"])
    published = run_training("encoder", TOY, toy_groups(64), config, log=lines.append)
    assert not published["skipped"] and "finished before it was stopped" in " ".join(lines[-2:])
    assert len(read_log(tmp_path)) == rows and published["steps"] == 24  # nothing trained again
    assert published["final"] == summary["final"] and published["fingerprint"] == summary["fingerprint"]
    again = Encoder.load(EncoderSpec(model=published["output_dir"], max_length=48), device="cpu")
    np.testing.assert_array_equal(again.encode_skills(TOY), encoder.encode_skills(TOY))


def test_a_finished_run_keeps_only_its_last_checkpoint_and_a_consistent_snapshot(tmp_path):
    run = tmp_path / "encoder-abc"
    for name, size in (("step-0000010", 300), ("step-0000020", 200), ("export", 50)):
        (run / name / "deepspeed").mkdir(parents=True)
        (run / name / "deepspeed" / "states.pt").write_bytes(b"x" * size)
    results = [{"checkpoint_dir_name": n, "metrics": {"step": s}}
               for n, s in (("step-0000010", 10), ("step-0000020", 20), ("export", 24))]
    snapshot = {"checkpoint_results": results, "checkpoint_report_indices": [1, 2, 3],
                "latest_checkpoint_result": results[-1]}
    (run / "checkpoint_manager_snapshot.json").write_text(json.dumps(snapshot))
    assert prune_finished_run(run, "export") == 500
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint_manager_snapshot.json", "export"]
    after = json.loads((run / "checkpoint_manager_snapshot.json").read_text())
    # Ray Train's restore asserts that every listed checkpoint exists and pairs results with report indices
    assert [r["checkpoint_dir_name"] for r in after["checkpoint_results"]] == ["export"]
    assert after["checkpoint_report_indices"] == [3] and after["latest_checkpoint_result"] == results[-1]
    assert prune_finished_run(run, "export") == 0 and prune_finished_run(tmp_path / "absent", "export") == 0


def test_an_export_cut_short_is_dropped_so_the_run_resumes_from_its_last_deepspeed_checkpoint(tmp_path):
    run = tmp_path / "encoder-abc"
    (run / "step-0000020" / "deepspeed").mkdir(parents=True)
    (run / "export").mkdir()
    (run / "export" / "config.json").write_text("{}")  # the weights and skillrouter.json never arrived
    results = [{"checkpoint_dir_name": n, "metrics": {"step": s}} for n, s in (("step-0000020", 20), ("export", 24))]
    snapshot = {"checkpoint_results": results, "checkpoint_report_indices": [1, 2],
                "latest_checkpoint_result": results[-1], "pending_training_results": [results[-1]],
                "pending_validation_specs": [False]}
    (run / "checkpoint_manager_snapshot.json").write_text(json.dumps(snapshot))
    assert finished_export(run) is None and not (run / "export").exists()
    after = json.loads((run / "checkpoint_manager_snapshot.json").read_text())
    assert after["checkpoint_results"] == results[:1] and after["checkpoint_report_indices"] == [1]
    assert after["latest_checkpoint_result"] == results[0]
    assert after["pending_training_results"] == [] and after["pending_validation_specs"] == []
    # a whole export is the run's result; a run that never got that far has none
    (run / "export").mkdir()
    (run / "export" / "config.json").write_text("{}")
    (run / "export" / EXPORT_INFO).write_text("{}")
    assert finished_export(run) is None  # not listed: Ray Train had not registered it
    snapshot["pending_training_results"], snapshot["pending_validation_specs"] = [], []
    (run / "checkpoint_manager_snapshot.json").write_text(json.dumps(snapshot))
    assert finished_export(run) == run / "export"
    assert finished_export(tmp_path / "absent") is None


def _kill_a_worker_after_the_first_checkpoint(storage, stop: threading.Event, killed: list) -> None:
    """SIGKILL a Ray Train worker process of this test's own cluster (a descendant of this process: its raylet
    forked it; never a process of anyone else on the machine) once Ray Train has registered a checkpoint (listed
    in its snapshot, not merely being uploaded)."""
    import psutil

    me = psutil.Process()
    while not stop.is_set():
        if any("step-" in f.read_text() for f in storage.glob("*/checkpoint_manager_snapshot.json")):
            for proc in me.children(recursive=True):
                try:
                    if any("RayTrainWorker" in part for part in proc.cmdline()):
                        proc.send_signal(signal.SIGKILL)
                        killed.append(proc.pid)
                        return
                except psutil.Error:  # gone, or a zombie, meanwhile
                    continue
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_worker_resumes_from_the_checkpoint_step(ray_cluster, tiny_qwen3, tmp_path):
    config = toy_config(tmp_path, str(tiny_qwen3), epochs=6, checkpoint_every=4, max_failures=2,
                        schedule="linear", precision="fp32")
    earlier = {"run": "an-earlier-run", "step": 7, "loss": 1.0}  # what an earlier, killed driver logged
    log_path = tmp_path / "run" / "models" / "encoder_train_log.jsonl"
    log_path.parent.mkdir(parents=True)
    log_path.write_text(json.dumps(earlier) + "\n")
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_a_worker_after_the_first_checkpoint,
                              args=(tmp_path / "storage", stop, killed), daemon=True)
    killer.start()
    try:
        summary = run_training("encoder", TOY, toy_groups(64), config, log=lambda _: None)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was killed"
    log = read_log(tmp_path)
    assert log[0] == earlier  # appended to, never truncated
    log = [row for row in log if row["run"] != earlier["run"]]
    resumed = [r for r in log if r["resumed_from_step"] > 0]
    assert resumed, "training did not resume from a checkpoint"
    start = resumed[0]["resumed_from_step"]
    assert start % 4 == 0 and resumed[0]["step"] > start  # continues after the checkpoint's step, not from 0
    assert summary["steps"] == 48 and log[-1]["step"] == 48
    # the finished run keeps its last checkpoint (the export, hard-linked into models/) and no DeepSpeed states
    run_path = Path(summary["run"])
    assert not list(run_path.glob("step-*")) and (run_path / "export").is_dir()
    assert (Path(summary["output_dir"]) / "config.json").stat().st_nlink == 2
    # the scheduler's state came back too: every step, before and after the restart, has its scheduled rate
    schedule = lr_lambda(48, 0, "linear")
    assert all(r["lr"] == pytest.approx(3e-3 * schedule(r["step"])) for r in log)
