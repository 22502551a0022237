"""The SkillRouter paper's ablations on a finished run of the main job, added to its report.

    python jobs/run_pipeline.py --config configs/minilm.yaml            # first: the main run
    python jobs/run_ablations.py --config configs/minilm.yaml [--only reranker-loss ...] [key=value ...]
    ray job submit --working-dir . -- python jobs/run_ablations.py --config configs/qwen3-0.6b.yaml

Reuses the run's corpus, queries, mined groups and benchmark; trains only the variants the ablations need into
RUN_DIR/ablations/<variant>/ (an up-to-date export is not trained again), evaluates them, and rewrites
RUN_DIR/report/report.md with an ablations section.
"""

import sys

from skillrouter.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablations", *sys.argv[1:]]))
