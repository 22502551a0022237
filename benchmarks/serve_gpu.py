"""The paper's serving shape on one GPU, end to end in one command, with its own anchor measured in the same run.

    python benchmarks/serve_gpu.py --pool POOL.parquet --tokenizer BPE_DIR [--size 0.6b] [--out benchmarks/results]
        [--concurrency 1,16,32,64] [--requests 300] [--rerank-requests 300] [key=value ...]

1. Encoder and reranker of the Qwen3 architecture `--size` with random weights (right for speed, not for quality),
   drawn on the GPU in bf16 and saved (`testing.tiny_models.save_qwen3`).
2. `skillrouter ingest` of POOL (the pool cut as in the paper: `stage_gpu_inputs.py`), then `skillrouter index
   build` (timed): packed, length-sorted, compiled embedding on the GPU, Milvus Lite.
3. The Serve application (`serving.app.start`): dense first stage, the reranker packed and compiled, replicas
   sharing the GPU; the realistic benchmark's requests, closed loop at each concurrency, first stage alone and with
   the reranker (`serve_load.closed_loop`).
4. The anchor, on the same inputs: each request's 20 candidates (as the served first stage returns them) scored by
   a plain Hugging Face forward of the same reranker (bf16, sdpa, left padding with a mask, last-position logits
   only, no Ray, no Serve), one request at a time and 8 requests a batch.
Writes `OUT/serve_gpu-SIZE-TIME.json` (QPS, p50/p95/p99, stage times, non-2xx, tokens/s, MFU, anchor QPS, index
build seconds, the command and the commit). On a CPU host `--size tiny` checks the recipe end to end.
"""

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import PEAK_TFLOPS, flops_per_token, git_commit
from serve_load import aiohttp_get, closed_loop
from skillrouter.config import load_config
from skillrouter.corpus.ingest import read_skills
from skillrouter.evaluation.benchmark import load_benchmark
from skillrouter.models.reranker import RerankerInputs, RerankerSpec
from skillrouter.serving.app import post_json, start, stop

PROFILE = "configs/qwen3-0.6b.yaml"


def make_models(tokenizer_dir: str, out: Path, size: str, device: str) -> float:
    from transformers import AutoTokenizer

    from skillrouter.testing.tiny_models import save_qwen3

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    save_qwen3(out / "encoder", tokenizer, size=size, device=device, dtype=dtype)
    save_qwen3(out / "reranker", tokenizer, size=size, causal_lm=True, seed=1, device=device, dtype=dtype)
    return time.perf_counter() - started


def cli(*args: str) -> tuple[float, str]:
    """Run `skillrouter ARGS` in its own process (as a user would); (seconds, its output)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "skillrouter.cli", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"skillrouter {' '.join(args[:2])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout + done.stderr


def candidates(url: str, queries: list[str], k: int) -> list[list[str]]:
    """The served first stage's top k for each query: what the reranker scores, so what the anchor scores."""
    out = []
    for query in queries:
        status, answer = post_json(f"{url}/v1/route", {"query": query, "top_k": k, "first_stage": "dense",
                                                       "rerank": False})
        assert status == 200, answer
        out.append([r["skill_id"] for r in answer["results"]])
    return out


@torch.inference_mode()
def anchor(model_dir: Path, pair_ids: list[list[list[int]]], yes_no: torch.Tensor, pad_id: int,
           per_batch: int, device: str) -> dict:
    """The plain loop: `per_batch` requests' pairs in one left-padded, masked batch; logits of the last position
    only (`logits_to_keep=1`), yes minus no. Queries per second over every request, after a warm-up."""
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    yes_no = yes_no.to(device)

    def forward(requests: list[list[list[int]]]) -> torch.Tensor:
        seqs = [ids for request in requests for ids in request]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):], mask[i, width - len(s):] = torch.tensor(s), 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=1).logits[:, -1]
        return (logits[:, yes_no[0]] - logits[:, yes_no[1]]).float().cpu()

    batches = [pair_ids[i:i + per_batch] for i in range(0, len(pair_ids), per_batch)]
    forward(batches[0])  # warm-up: kernels chosen, memory pooled
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for batch in batches:
        forward(batch)
    seconds = time.perf_counter() - started
    return {"queries": len(pair_ids), "per_batch": per_batch, "seconds": round(seconds, 2),
            "qps": round(len(pair_ids) / seconds, 2), "ms_per_batch": round(1000 * seconds / len(batches), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pool", required=True, help="skills table cut as in the paper (stage_gpu_inputs.py)")
    p.add_argument("--tokenizer", required=True, help="a tokenizer with single 'yes' and 'no' tokens")
    p.add_argument("--size", default="0.6b", choices=["tiny", "0.6b", "8b"])
    p.add_argument("--work", default="/tmp/serve_gpu", help="models, corpus, index (scratch)")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--concurrency", default="1,16,32,64")
    p.add_argument("--requests", type=int, default=300, help="requests per level, first stage alone")
    p.add_argument("--rerank-requests", type=int, default=300, help="requests per level with the reranker")
    p.add_argument("--anchor-queries", type=int, default=96)
    p.add_argument("--skip-first-stage-alone", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value profile overrides (serving.*, index.*)")
    args = p.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"command": " ".join(["python", *sys.argv]), "commit": git_commit(), "size": args.size,
                    "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                    "torch": torch.__version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = out / f"serve_gpu-{args.size}-{time.strftime('%Y%m%d-%H%M%S')}.json"

    def save() -> None:  # after every step: a run cut short still reports what it measured
        path.write_text(json.dumps(result, indent=1) + "\n")

    result["models_s"] = round(make_models(args.tokenizer, work / "models", args.size, device), 1)
    print(f"models ({args.size}, random, {device}): {result['models_s']} s", flush=True)
    gpu = device == "cuda"
    settings = [f"run_dir={work / 'run'}", f"index.encoder={work / 'models/encoder'}", "index.max_length=1024",
                "index.batch_size=256", "index.max_batch_tokens=131072", f"index.compile_encoder={gpu}",
                f"serving.reranker={work / 'models/reranker'}", "serving.first_stage=dense",
                "serving.use_selection=false", "serving.max_in_flight=512", "serving.retrieve_batch_size=64",
                # two of each model deployment share the GPU; two ingress replicas (Python per request)
                f"serving.retriever.num_gpus={0.1 if gpu else 0}", "serving.retriever.num_replicas=2",
                f"serving.reranker_deployment.num_gpus={0.4 if gpu else 0}",
                "serving.reranker_deployment.num_replicas=2", "serving.ingress.num_replicas=2",
                "serving.rerank_batch_pairs=320",
                "serving.rerank_batch_tokens=131072", f"serving.rerank_compile={gpu}", *args.overrides]
    seconds, _ = cli("ingest", args.pool, "--out", str(work / "run/corpus"), "--quiet")
    print(f"ingest: {seconds:.1f} s", flush=True)
    seconds, log = cli("index", "build", "--config", PROFILE, *settings)
    result["index_build_s"] = round(seconds, 1)
    result["index_build_log"] = [x for x in log.splitlines() if re.search(r"index|embedd|second| s\b", x)][-12:]
    print(f"index build: {seconds:.1f} s (process start to alias switch)", flush=True)
    save()

    config = load_config(PROFILE, [*settings, "serving.port=0"])
    tasks = load_benchmark("realistic").tasks
    queries = [t.query for t in tasks]
    skills = {s.id: s for s in read_skills(work / "run/corpus/skills.parquet")}
    inputs = RerankerInputs.from_spec(RerankerSpec(model=str(work / "models/reranker"),
                                                   max_length=config.reranker.max_length))
    url = start(config)
    try:
        result["ready"] = json.loads(aiohttp_get(f"{url}/readyz"))
        heads = candidates(url, queries[:args.anchor_queries], config.routing.retrieve_k)
        pair_ids = [inputs.pair_ids([inputs.format_pair(q, skills[i]) for i in head])
                    for q, head in zip(queries, heads)]
        tokens_per_query = float(np.mean([sum(map(len, p)) for p in pair_ids]))
        mean_len = tokens_per_query / config.routing.retrieve_k
        per_token = flops_per_token(inputs_config(work / "models/reranker"), mean_len)
        result["pairs"] = {"per_query": config.routing.retrieve_k, "mean_tokens": round(mean_len, 1),
                           "tokens_per_query": round(tokens_per_query), "gflop_per_token": round(per_token / 1e9, 3)}
        print(f"pairs: {config.routing.retrieve_k} a request, {mean_len:.0f} tokens each", flush=True)
        pad = inputs.tokenizer.pad_token_id
        result["anchor"] = {f"batch{n}": anchor(work / "models/reranker", pair_ids, inputs.yes_no, pad, n, device)
                            for n in (1, 8)}
        if device == "cuda":
            torch.cuda.empty_cache()  # the anchor's activations, before the load test
        print(f"anchor (plain HF forward): {result['anchor']}", flush=True)
        save()
        runs = result["runs"] = []
        levels = [int(c) for c in args.concurrency.split(",")]
        for rerank in ([] if args.skip_first_stage_alone else [False]) + [True]:
            bodies = [{"query": q[:2000], "top_k": 10, "first_stage": "dense", "rerank": rerank} for q in queries]
            asyncio.run(closed_loop(url, bodies, 8, 32))  # warm-up
            for c in levels:
                r = asyncio.run(closed_loop(url, bodies, c, args.rerank_requests if rerank else args.requests))
                if rerank:
                    r["tokens_per_s"] = round(r["qps"] * tokens_per_query)
                    r["mfu"] = round(r["tokens_per_s"] * per_token / (PEAK_TFLOPS * 1e12), 4)
                    r["x_anchor"] = round(r["qps"] / result["anchor"]["batch8"]["qps"], 2)
                runs.append({"first_stage": "dense", "rerank": rerank, **r})
                s = r["server_mean_ms"]
                print(f"rerank {'on ' if rerank else 'off'} c={c:<3} {r['qps']:>6.1f} QPS  p50 {r['p50_ms']:.0f} "
                      f"p95 {r['p95_ms']:.0f} p99 {r['p99_ms']:.0f} ms  server embed {s['embed']} search "
                      f"{s['search']} rerank {s['rerank']} total {s['total']} ms  non-2xx {r['non_2xx'] or 0}"
                      + (f"  {r['tokens_per_s']:,} tok/s  MFU {100 * r['mfu']:.1f}%  x{r['x_anchor']} anchor"
                         if rerank else ""), flush=True)
                save()
    finally:
        stop()
    save()
    print(f"wrote {path}")


def inputs_config(model_dir: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir)


if __name__ == "__main__":
    main()
