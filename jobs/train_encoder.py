"""Fine-tune the bi-encoder with InfoNCE on mined groups: Ray Train workers running DeepSpeed.

    python jobs/train_encoder.py --config configs/minilm.yaml [--corpus DIR] [--groups FILE] [k=v ...]
    ray job submit --working-dir . -- python jobs/train_encoder.py --config configs/qwen3-0.6b.yaml
    ray job submit --working-dir . -- python jobs/train_encoder.py --config configs/qwen3-8b.yaml

Rerunning the same command resumes from the latest checkpoint; the model is exported in Hugging Face format to
encoder.output_dir (default RUN_DIR/models/encoder).
"""

import sys

from skillrouter.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "encoder", *sys.argv[1:]]))
