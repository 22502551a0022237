"""Stage the GPU serving benchmark's inputs here, for the offline H200 host (`device`, 64 MiB a call):

    .venv/bin/python benchmarks/stage_gpu_inputs.py [--out .gpu] [--small 3000]

- `OUT/pool.parquet`: the real pool (`_common.POOL`) cut as in the paper (description 500 characters, body 2,500),
  zstd Parquet in the corpus's own columns, so `skillrouter ingest` reads it as it is;
- `OUT/pool-small.parquet`: the first `--small` rows of it, for a dry run;
- `OUT/bpe`: a byte-level BPE with Qwen3's special tokens trained on a sample of the pool (Qwen3's own tokenizer
  cannot be downloaded; it gives the pool's texts realistic token counts).
The pool is third-party text: `OUT` must be an ignored folder (`.gpu/` is), never committed.
"""

import argparse
import gzip
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from _common import POOL
from skillrouter.testing.tiny_models import train_tokenizer

COLUMNS = ("id", "name", "description", "body", "source", "license")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=".gpu")
    p.add_argument("--small", type=int, default=3000, help="rows of the dry run's pool")
    p.add_argument("--vocab", type=int, default=65_536)
    p.add_argument("--tokenizer-sample", type=int, default=20_000, help="skills the BPE is trained on")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {c: [] for c in COLUMNS}
    with gzip.open(POOL, "rt") as f:
        for line in f:
            record = json.loads(line)
            record["description"] = (record.get("description") or "")[:500]
            record["body"] = (record.get("body") or "")[:2500]
            for c in COLUMNS:
                rows[c].append(record.get(c) or "")
    table = pa.table(rows)
    pq.write_table(table, out / "pool.parquet", compression="zstd", compression_level=19)
    pq.write_table(table.slice(0, args.small), out / "pool-small.parquet", compression="zstd")
    sample = random.Random(0).sample(range(len(table)), min(args.tokenizer_sample, len(table)))
    texts = (f"{rows['name'][i]} | {rows['description'][i]} | {rows['body'][i]}" for i in sample)
    train_tokenizer(texts, out / "bpe", vocab_size=args.vocab)
    sizes = {f.name: f"{f.stat().st_size / 2**20:.1f} MiB" for f in out.glob("*.parquet")}
    print(f"{len(table):,} skills -> {out}: {sizes}, tokenizer {out / 'bpe'}")


if __name__ == "__main__":
    main()
