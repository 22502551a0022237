"""Mine hard negatives for generated queries and filter false negatives, on Ray Data.

    python jobs/mine_negatives.py --config configs/minilm.yaml [--corpus DIR] [--queries FILE] [--out DIR] [k=v ...]
    ray job submit --working-dir . -- python jobs/mine_negatives.py --config configs/minilm.yaml \
        mining.encoder=Qwen/Qwen3-Embedding-0.6B mining.embed_actors=4
"""

import sys

from skillrouter.cli import main

if __name__ == "__main__":
    sys.exit(main(["mine", *sys.argv[1:]]))
