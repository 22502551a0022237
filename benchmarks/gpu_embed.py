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

from skillrouter.models.encoder import Encoder, EncoderSpec
from skillrouter.models.loading import dtype_kwargs
from skillrouter.testing.tiny_models import qwen3_config

PEAK_BF16 = 790e12  # measured dense bf16 matmul on this machine


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


def plain_batches(enc: Encoder, texts: list[str], batch_size: int):
    """The naive loop: input order, fixed batch size, padding to each batch's longest text."""
    return [(np.arange(s, min(s + batch_size, len(texts))), enc.tokenize(texts[s:s + batch_size]))
            for s in range(0, len(texts), batch_size)]


def flops_per_token(cfg, mean_len: float) -> float:
    d, L, ff = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    qdim, kvdim = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    dense = L * (d * qdim * 2 + d * kvdim * 2 + 3 * d * ff)  # q, o, k, v, gate/up/down
    attn = L * 2 * mean_len * qdim  # QK^T and AV, averaged over positions of a causal sequence
    return 2 * (dense + attn)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--texts", nargs="+", required=True)
    p.add_argument("--minilm", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--budgets", default="65536,131072,262144")
    p.add_argument("--plain-batch", type=int, default=32)
    args = p.parse_args()
    from transformers import AutoModel, AutoTokenizer

    out = Path(args.out)
    texts = [t for f in args.texts for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]
    report = {"skills": len(texts), "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    print(f"{len(texts):,} texts on {report['gpu']}", flush=True)

    # 1. MiniLM (real weights) over the pool: the embeddings the CPU mining benchmark uses.
    model = AutoModel.from_pretrained(args.minilm, **dtype_kwargs(torch.float16)).cuda()
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
    del model, enc

    # 2. Qwen3-0.6B architecture, random weights, bf16: our length-sorted, token-budget batches against the
    #    plain loop, for tokens/s and MFU.
    torch.manual_seed(0)
    cfg = qwen3_config("0.6b")
    model = AutoModel.from_config(cfg, attn_implementation="sdpa", **dtype_kwargs(torch.bfloat16)).cuda().eval()
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    enc = Encoder(model, tok, EncoderSpec(model="qwen3-0.6b-random", max_length=args.max_length))
    started = time.perf_counter()
    ids = tok(texts, truncation=True, max_length=args.max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    report["qwen3_tokenize_s"] = round(time.perf_counter() - started, 2)
    report["qwen3_tokens"] = int(lengths.sum())
    report["qwen3_mean_len"] = round(float(lengths.mean()), 1)
    warm = enc.batches(texts[:2000], 64, 65536)
    timed_encode(enc, warm)
    runs = {}
    sample = texts[:12000]  # the plain loop is slow: time it on a slice, the same for every variant
    plain = timed_encode(enc, plain_batches(enc, sample, args.plain_batch))
    sorted_sample = timed_encode(enc, enc.batches(sample, 4096, 131072))
    for name, (s, real, padded, _) in (("plain_sample", plain), ("sorted_sample", sorted_sample)):
        runs[name] = {"texts": len(sample), "seconds": round(s, 2), "tokens_per_s": round(real / s),
                      "padding_share": round(1 - real / padded, 4)}
    for budget in (int(b) for b in args.budgets.split(",")):
        s, real, padded, _ = timed_encode(enc, enc.batches(texts, 4096, budget))
        runs[f"pool_budget_{budget}"] = {"seconds": round(s, 2), "tokens_per_s": round(real / s),
                                         "padding_share": round(1 - real / padded, 4)}
    fpt = flops_per_token(cfg, report["qwen3_mean_len"])
    for r in runs.values():
        r["mfu"] = round(r["tokens_per_s"] * fpt / PEAK_BF16, 3)
    report["qwen3_runs"] = runs
    report["qwen3_gflop_per_token"] = round(fpt / 1e9, 3)
    print(json.dumps(report, indent=1), flush=True)
    (out / "gpu_embed.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
