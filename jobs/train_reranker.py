"""Fine-tune the cross-encoder reranker with listwise cross-entropy on mined groups: Ray Train + DeepSpeed.

    python jobs/train_reranker.py --config configs/minilm.yaml [--corpus DIR] [--groups FILE] [k=v ...]
    ray job submit --working-dir . -- python jobs/train_reranker.py --config configs/qwen3-0.6b.yaml
    ray job submit --working-dir . -- python jobs/train_reranker.py --config configs/qwen3-8b.yaml \
        reranker.loss=pointwise          # the paper's ablation

Rerunning the same command resumes from the latest checkpoint; the model is exported in Hugging Face format to
reranker.output_dir (default RUN_DIR/models/reranker).
"""

import sys

from skillrouter.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "reranker", *sys.argv[1:]]))
