"""Run the whole pipeline from one profile.

    python jobs/run_pipeline.py --config configs/minilm.yaml [key=value ...]
    ray job submit --working-dir . -- python jobs/run_pipeline.py --config configs/minilm.yaml
"""

import sys

from skillrouter.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
