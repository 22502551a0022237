import json
import os
import re
import subprocess
import sys

import pyarrow.parquet as pq

from skillrouter.config import load_config
from skillrouter.index.build import open_index
from skillrouter.retrieval.systems import get_system
from skillrouter.serving.stages import live_encoder


def test_main_job_runs_from_the_minilm_profile(repo_root, tmp_path, ray_cluster):
    def pipeline(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "jobs/run_pipeline.py", "--config", "configs/minilm.yaml", f"run_dir={tmp_path}",
             "examples=[merge these PDF files into one]", f"mining.cache_dir={tmp_path / 'cache'}",
             "encoder.max_groups=48", "reranker.max_groups=24",
             "eval.systems=[bm25,bm25-nd,finetuned,finetuned+reranker]", "eval.benchmark=bundled",
             "routing.validation_queries=24", "routing.selection_benchmark=null",
             "routing.retrieve_k=5", *args],  # a reranker over 5 candidates: a quarter of the CPU pairs
            cwd=repo_root, capture_output=True, text=True, check=True,
            env={**os.environ, "RAY_ADDRESS": ray_cluster}).stdout

    out = pipeline()
    # the index is built with the encoder just fine-tuned, then Serve answers the example over HTTP
    assert f"skills with {tmp_path / 'models' / 'encoder'} -> {tmp_path / 'index' / 'skills.db'}" in out
    assert re.search(r"^> merge these PDF files into one\n   (bm25|dense|hybrid)( \+ rerank)?: \d+ ms in the server",
                     out, re.M)
    # the served system was chosen on the queries of skills held out of training, and is evaluated too
    selection = json.loads((tmp_path / "select" / "selection.json").read_text())
    assert selection["validation"]["queries"] == 24 and selection["why"] in out
    assert {r["first_stage"] for r in selection["rows"]} == {"bm25", "finetuned", "hybrid:finetuned"}
    assert (tmp_path / "eval" / "bundled-dev" / selection["system"] / "metrics.json").exists()
    assert "rank  skill" in out and f"serving: index skills_v1 (239 skills, encoder {tmp_path}" in out
    # the served index holds the rows the selection and the report scored: the export's length and windows
    config = load_config(repo_root / "configs" / "minilm.yaml", [f"run_dir={tmp_path}"])
    with open_index(config) as index:
        assert live_encoder(index) == get_system("finetuned").dense.spec(config)
    assert "quarantined 0" in out
    for system in ("bm25", "bm25-nd"):
        metrics = json.loads((tmp_path / "eval" / "bundled-dev" / system / "metrics.json").read_text())
        assert metrics["metrics"]["all"]["n"] >= 120
        assert re.search(rf"^{re.escape(system)} +all ", out, re.M)
    queries = pq.read_table(tmp_path / "queries" / "queries.parquet")
    assert queries.num_rows >= 3 * 200 and "queries (offline" in out
    groups = pq.read_table(tmp_path / "mined" / "groups.parquet")
    assert groups.num_rows == queries.num_rows and "false negatives removed: same_name" in out
    assert (tmp_path / "mined" / "mining_sample.md").exists()
    for kind in ("encoder", "reranker"):  # trained through Ray Train + DeepSpeed and exported
        info = json.loads((tmp_path / "models" / kind / "skillrouter.json").read_text())
        assert info["kind"] == kind and info["steps"] >= 3 and (tmp_path / "models" / kind / "config.json").exists()
    assert "finetuned+reranker" in out and "[exported]" in out
    assert (tmp_path / "corpus" / "skills.parquet").exists() and (tmp_path / "benchmark" / "relevance.json").exists()
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| `finetuned+reranker` |" in report and "![Metrics per system](metrics.png)" in report
    assert all((tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for png in ("metrics.png",
                                                                                         "hit_at_k.png"))

    # a second run resumes from the outputs: nothing is mined, trained, indexed or evaluated again
    before = {p: p.stat().st_mtime_ns for p in [tmp_path / "mined" / "groups.parquet",
                                                  tmp_path / "eval" / "bundled-dev" / "finetuned" / "metrics.json"]}
    again = pipeline("--skip", "queries,serve")
    for name in ("mining", "index", "select", "eval/bundled-dev/bm25", "eval/bundled-dev/finetuned+reranker"):
        assert re.search(rf"^   {re.escape(name)}: up to date", again, re.M), name
    assert "skipped (--skip): using" in again and "encoder: up to date" in again
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert re.search(r"^finetuned +all ", again, re.M)  # the kept results are still reported


def test_main_job_checks_skipped_stages_have_outputs(repo_root, tmp_path):
    done = subprocess.run([sys.executable, "jobs/run_pipeline.py", "--config", "configs/minilm.yaml",
                           f"run_dir={tmp_path}", "--skip", "ingest,mining"], cwd=repo_root, capture_output=True,
                          text=True)
    assert done.returncode == 2 and "--skip ingest: its outputs are missing" in done.stderr
    assert not (tmp_path / "queries").exists()
    done = subprocess.run([sys.executable, "jobs/run_pipeline.py", "--config", "configs/minilm.yaml",
                           f"run_dir={tmp_path}", "--rerun", "training"], cwd=repo_root, capture_output=True,
                          text=True)
    assert done.returncode == 2 and "unknown stage(s) training" in done.stderr


def test_main_job_rejects_a_bad_profile_before_work(repo_root, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_dir: x\neval:\n  sytems: [bm25]\n")
    done = subprocess.run([sys.executable, "jobs/run_pipeline.py", "--config", str(bad)], cwd=repo_root,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "bad.yaml: unknown key 'eval.sytems'" in done.stderr
    assert not (repo_root / "x").exists()


def test_stages_time_what_they_run_and_name_each_part(tmp_path):
    from skillrouter.pipeline.run import Stages

    lines = []
    stages = Stages(tmp_path, {}, log=lines.append)
    stages.run("eval", "", lambda: None, key="k1", name="eval/bm25", outputs=[])
    stages.run("eval", "", lambda: None, key="k2", name="eval/minilm", outputs=[])
    stages.run("ingest", "ingest", lambda: None)
    assert list(stages.seconds) == ["eval", "ingest"]
    assert lines[:2] == ["   eval/bm25: running", lines[1]] and lines[1].startswith("   eval/bm25: done in ")
    again = Stages(tmp_path, {}, log=lines.append)
    again.run("eval", "", lambda: None, key="k1", name="eval/bm25", outputs=[])
    assert again.seconds == {} and "up to date" in lines[-1]
