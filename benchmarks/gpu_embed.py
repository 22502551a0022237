"""Corpus embedding on a GPU: the bundled MiniLM over the real pool (its embeddings come back for the CPU mining
benchmark) and the Qwen3-0.6B architecture with random weights (tokens/s and MFU; random weights are right for
speed, not quality). Runs on the GPU host with its own torch and transformers, without Ray:

    python3 benchmarks/gpu_embed.py --texts /tmp/gpu/texts-a.parquet /tmp/gpu/texts-b.parquet \
        --minilm /tmp/gpu/minilm16 --tokenizer /tmp/gpu/bpe --out $OUT

The Qwen3 tokenizer cannot be downloaded here: a byte-level BPE trained on the pool (65K merges) stands in, so
token counts are close to, not equal to, Qwen3's. `EmbedWorker` in `mining/embeddings.py` runs this same
`Encoder.encode` inside a Ray Data actor.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from _common import PEAK_TFLOPS, flops_per_token
from skillrouter.models.encoder import Encoder, EncoderSpec
from skillrouter.models.loading import dtype_kwargs
from skillrouter.testing.tiny_models import qwen3_config


def timed_encode(enc: Encoder, batches) -> tuple[float, int, int, np.ndarray]:
    out = []
    torch.cuda.synchronize()
    started = time.perf_counter()
    real = padded = 0
    with torch.inference_mode():
        for idx, batch in batches:
            mask = batch["attention_mask"]
            real += int(mask.sum())
            padded += mask.numel()
            out.append((idx, enc.forward(batch).to(torch.float16)))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    n = sum(len(i) for i, _ in out)
    emb = np.empty((n, out[0][1].shape[1]), dtype=np.float16)
    for idx, e in out:
        emb[idx] = e.cpu().numpy()
    return seconds, real, padded, emb


def plain_encode(enc: Encoder, texts: list[str], batch_size: int) -> tuple[float, int, int, None]:
    """The reference loop: input order, fixed batch size, left padding with an attention mask."""
    tok = enc.tokenizer
    tok.padding_side = "left"
    batches = [tok(texts[s:s + batch_size], padding=True, truncation=True, max_length=enc.spec.max_length,
                   return_tensors="pt") for s in range(0, len(texts), batch_size)]
    tok.padding_side = "right"
    torch.cuda.synchronize()
    started = time.perf_counter()
    real = padded = 0
    with torch.inference_mode():
        for batch in batches:
            batch = {k: v.to(enc.device) for k, v in batch.items()}
            real += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()
            hidden = enc.model(**batch).last_hidden_state[:, -1]
            torch.nn.functional.normalize(hidden.float(), dim=-1)
    torch.cuda.synchronize()
    return time.perf_counter() - started, real, padded, None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--texts", nargs="+", required=True)
    p.add_argument("--minilm", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--budgets", default="65536,131072,262144")
    p.add_argument("--plain-batch", type=int, default=32)
    p.add_argument("--qwen-size", default="0.6b", help="tiny for a CPU smoke run")
    p.add_argument("--limit", type=int, default=None, help="use the first N texts (smoke runs)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--skip-minilm", action="store_true")
    p.add_argument("--sample", type=int, default=6000, help="texts for the plain-versus-sorted comparison")
    p.add_argument("--variants", action="store_true",
                   help="also time SDPA backends and torch.compile on the sample (budget 131072)")
    args = p.parse_args()
    if args.device == "cpu":  # smoke runs: make the CUDA calls no-ops
        torch.cuda.synchronize = lambda: None
        torch.cuda.get_device_name = lambda: "cpu"

    out = Path(args.out)
    texts = [t for f in args.texts for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]
    texts = texts[: args.limit]
    report = {"skills": len(texts), "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    print(f"{len(texts):,} texts on {report['gpu']}", flush=True)

    def save() -> None:  # after every step: a run cut short still reports what it measured
        (out / "gpu_embed.json").write_text(json.dumps(report, indent=1) + "\n")

    # 1. MiniLM (real weights) over the pool: the embeddings the CPU mining benchmark uses.
    if not args.skip_minilm:
        minilm(args, texts, out, report)
        save()
    qwen3(args, texts, report, save)


def minilm(args, texts: list[str], out: Path, report: dict) -> None:
    from transformers import AutoModel, AutoTokenizer

    half = torch.float16 if args.device == "cuda" else torch.float32
    model = AutoModel.from_pretrained(args.minilm, **dtype_kwargs(half)).to(args.device)
    enc = Encoder(model, AutoTokenizer.from_pretrained(args.minilm), EncoderSpec(model="minilm", max_length=256))
    started = time.perf_counter()
    batches = enc.batches(texts, batch_size=1024, max_batch_tokens=256 * 1024)
    tok_s = time.perf_counter() - started
    seconds, real, padded, emb = timed_encode(enc, batches)
    report["minilm"] = {"tokenize_s": round(tok_s, 2), "encode_s": round(seconds, 2), "tokens": real,
                        "tokens_per_s": round(real / seconds), "padding_share": round(1 - real / padded, 4)}
    print("minilm", report["minilm"], flush=True)
    for k, part in enumerate(np.array_split(emb, 4)):
        np.save(out / f"minilm-{k}.npy", part)


def qwen3(args, texts: list[str], report: dict, save) -> None:
    """Qwen3-0.6B architecture, random weights, bf16: our length-sorted, token-budget batches against the plain
    loop on a sample, then the whole pool with each budget, for tokens/s and MFU."""
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    cfg = qwen3_config(args.qwen_size)
    bf16 = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = AutoModel.from_config(cfg, attn_implementation="sdpa", **dtype_kwargs(bf16)).to(args.device).eval()
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    enc = Encoder(model, tok, EncoderSpec(model="qwen3-0.6b-random", max_length=args.max_length))
    started = time.perf_counter()
    ids = tok(texts, truncation=True, max_length=args.max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    report["qwen3_tokenize_s"] = round(time.perf_counter() - started, 2)
    report["qwen3_tokens"] = int(lengths.sum())
    report["qwen3_mean_len"] = round(float(lengths.mean()), 1)
    fpt = flops_per_token(cfg, report["qwen3_mean_len"])
    report["qwen3_gflop_per_token"] = round(fpt / 1e9, 3)
    runs = report["qwen3_runs"] = {}

    def record(name: str, result, n: int) -> None:
        s, real, padded, _ = result
        runs[name] = {"texts": n, "seconds": round(s, 2), "tokens_per_s": round(real / s),
                      "padding_share": round(1 - real / padded, 4),
                      "mfu": round(real / s * fpt / (PEAK_TFLOPS * 1e12), 3)}
        print(name, runs[name], flush=True)
        save()

    timed_encode(enc, enc.batches(texts[:1000], 64, 65536))  # warm-up
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), min(args.sample, len(texts)), replace=False)]
    record("plain_sample", plain_encode(enc, sample, args.plain_batch), len(sample))
    budgets = [int(b) for b in args.budgets.split(",")]
    for budget in budgets:
        record(f"sorted_sample_{budget}", timed_encode(enc, enc.batches(sample, 4096, budget)), len(sample))
    if args.variants:
        variants(enc, sample, record)
        return
    best = max(budgets, key=lambda b: runs[f"sorted_sample_{b}"]["tokens_per_s"])
    record(f"all_{best}", timed_encode(enc, enc.batches(texts, 4096, best)), len(texts))


def variants(enc: Encoder, sample: list[str], record) -> None:
    """Which attention kernel serves the mask-free batches, and what compiling the model adds."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    batches = enc.batches(sample, 4096, 131072)
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel([backend]):
                record(f"sdpa_{name}", timed_encode(enc, batches), len(sample))
        except RuntimeError as exc:
            print(f"sdpa_{name}: not usable: {str(exc).splitlines()[0][:200]}", flush=True)
    started = time.perf_counter()
    enc.model = torch.compile(enc.model, dynamic=True)
    timed_encode(enc, enc.batches(sample[:500], 4096, 131072))
    print(f"compile + warm-up {time.perf_counter() - started:.0f} s", flush=True)
    record("compiled", timed_encode(enc, batches), len(sample))


if __name__ == "__main__":
    main()
