"""The pool-scale GPU profile (issue 19): not yet run on a GPU, so what can be checked here must hold."""

from pathlib import Path

from skillrouter.config import load_config
from skillrouter.corpus.ingest import SKILLS_FILE
from skillrouter.evaluation.benchmark import load_benchmark
from skillrouter.retrieval.systems import get_system

PROFILE = Path(__file__).resolve().parents[1] / "configs" / "pool-h200.yaml"


def test_pool_profile_evaluates_the_realistic_tiers_among_its_own_corpus():
    config = load_config(PROFILE, ["corpus.sources=[bundled, /data/pool.parquet]"])
    assert config.corpus.sources == ["bundled", "/data/pool.parquet"]
    # the distractors are the run's ingested corpus (bundled + pool), whatever pool the command line names
    assert config.eval.distractors == [str(Path(config.run_dir) / "corpus" / SKILLS_FILE)]
    assert config.eval.benchmarks == ["realistic-test", "realistic-hard-test"]
    assert {b.name for b in map(load_benchmark, config.eval.benchmarks)} == {"realistic-easy-test",
                                                                             "realistic-hard-test"}
    for system in config.eval.systems:
        get_system(system)  # every name resolves (no model is loaded)
    assert {"bm25", "minilm", "finetuned", "hybrid:finetuned", "finetuned+reranker"} <= set(config.eval.systems)
    assert config.examples == []  # no serve stage at pool scale
