#!/usr/bin/env bash
# The paper's serving shape on one GPU: Qwen3-0.6B-architecture encoder and reranker (random weights: right for
# speed, not for quality) over a skill pool, through the real path: `skillrouter ingest`, `skillrouter index build`
# (timed), then the Serve load test (benchmarks/serve_load.py) with the dense first stage and the reranker.
#
#   bash benchmarks/serve_gpu.sh POOL.parquet TOKENIZER_DIR OUT_DIR [SIZE] [key=value ...]
#
# POOL is a skills table with the paper's truncation (description 500 chars, body 2,500); TOKENIZER_DIR a
# tokenizer with "yes" and "no" tokens (benchmarks/README.md says how ours was made); SIZE tiny|0.6b|8b (0.6b).
# The two model deployments share the GPU (half each). On a CPU host, `tiny` checks the recipe end to end.
set -euo pipefail
pool=$1 tokenizer=$2 out=$3 size=${4:-0.6b}
shift $(( $# < 4 ? $# : 4 ))
mkdir -p "$out"
run=$out/run models=$out/models

python - "$tokenizer" "$models" "$size" <<'EOF'
import sys
from transformers import AutoTokenizer
from skillrouter.testing.tiny_models import save_qwen3

tokenizer, models, size = AutoTokenizer.from_pretrained(sys.argv[1]), sys.argv[2], sys.argv[3]
save_qwen3(f"{models}/encoder", tokenizer, size=size)
save_qwen3(f"{models}/reranker", tokenizer, size=size, causal_lm=True)
EOF

settings=(run_dir="$run" "corpus.sources=[$pool]" index.encoder="$models/encoder" index.max_length=1024
          index.batch_size=256 serving.reranker="$models/reranker" serving.first_stage=dense
          serving.retriever.num_gpus=0.5 serving.reranker_deployment.num_gpus=0.5 serving.rerank_batch_pairs=160
          serving.retrieve_batch_size=32 serving.max_in_flight=256 "$@")
python -m skillrouter.cli ingest "$pool" --out "$run/corpus" --quiet | tail -2
SECONDS=0
python -m skillrouter.cli index build --config configs/qwen3-0.6b.yaml "${settings[@]}"
echo "index build: $SECONDS s" | tee "$out/index_build.txt"
python benchmarks/serve_load.py --config configs/qwen3-0.6b.yaml --run-dir "$run" --first-stage dense \
    --rerank off,on --concurrency "${CONCURRENCY:-1,8,32}" --requests "${REQUESTS:-400}" \
    --rerank-requests "${RERANK_REQUESTS:-200}" --out "$out/load.json" "${settings[@]:1}"
