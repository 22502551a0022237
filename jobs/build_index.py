"""Embed the corpus and write a new verified version of the Milvus skill index, then switch its alias to it.

    python jobs/build_index.py --config configs/minilm.yaml [--corpus DIR] [k=v ...]
    ray job submit --working-dir . -- python jobs/build_index.py --config configs/minilm.yaml \
        index.uri=http://milvus:19530 index.encoder=Qwen/Qwen3-Embedding-0.6B index.embed_actors=4
"""

import sys

from skillrouter.cli import main

if __name__ == "__main__":
    sys.exit(main(["index", "build", *sys.argv[1:]]))
