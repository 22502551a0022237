"""Generate synthetic training queries for a corpus, on Ray Data.

    python jobs/generate_queries.py --config configs/minilm.yaml [--corpus DIR] [--out DIR] [--dry-run] [key=value ...]
    ray job submit --working-dir . -- python jobs/generate_queries.py --config configs/qwen3-0.6b.yaml \
        querygen.generator=llm querygen.budget.max_cost_usd=20

The LLM path reads its key from $OPENAI_API_KEY (querygen.api_key_env) and its endpoint from querygen.base_url or
$OPENAI_BASE_URL. Rerunning the same command continues an interrupted run without repeating a paid request.
"""

import sys

from skillrouter.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate-queries", *sys.argv[1:]]))
