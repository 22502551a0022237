"""The query-generation job under a real local Ray cluster, against the scripted server on 127.0.0.1."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from skillrouter.config import load_config
from skillrouter.corpus.ingest import read_skills
from skillrouter.querygen.job import QUERIES_FILE, run_query_generation
from skillrouter.querygen.log import replay
from skillrouter.testing.openai_server import OpenAIStub


@pytest.fixture(scope="module")
def skills():
    return read_skills("bundled")


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with OpenAIStub(capacity=8, latency_s=0.05) as server:
        yield server


def config(repo_root, tmp_path, *overrides):
    return load_config(repo_root / "configs" / "minilm.yaml", [f"run_dir={tmp_path}", *overrides])


def test_offline_job_writes_queries_and_resumes_as_a_no_op(ray_cluster, repo_root, tmp_path, skills):
    cfg = config(repo_root, tmp_path, "querygen.generator=offline", "querygen.num_skills=48")
    out = tmp_path / "queries"
    summary = run_query_generation(skills, cfg, out, log=lambda *_: None)
    table = pq.read_table(out / QUERIES_FILE)
    assert table.column_names == ["query_id", "skill_id", "query", "generator", "model", "attempts", "usage"]
    rows = table.to_pylist()
    assert summary["skills_sampled"] == 48 and summary["skills_ok"] + summary["skills_failed"] == 48
    assert summary["queries"] == len(rows) >= 48 * 3 - 3 and summary["categories"] == "given"
    assert len({r["query_id"] for r in rows}) == len(rows) and rows[0]["generator"] == "offline-v2"
    cats = {s.id: s.category for s in skills}
    assert len({cats[r["skill_id"]] for r in rows}) == 24  # stratified: every category is represented
    lines = sum(1 for p in (out / "parts").glob("*.jsonl") for _ in p.open())
    again = run_query_generation(skills, cfg, out, log=lambda *_: None)
    assert again["queries"] == summary["queries"]
    assert sum(1 for p in (out / "parts").glob("*.jsonl") for _ in p.open()) == lines  # nothing regenerated


def test_budget_stops_cleanly_and_a_rerun_continues(ray_cluster, repo_root, tmp_path, skills, stub):
    cfg = config(repo_root, tmp_path, "querygen.generator=llm", f"querygen.base_url={stub.base_url}",
                 "querygen.num_skills=12", "querygen.actors=1", "querygen.max_in_flight_per_actor=2",
                 "querygen.budget.max_requests=5")
    out = tmp_path / "queries"
    summary = run_query_generation(skills, cfg, out, log=lambda *_: None)
    assert sum(stub.requests.values()) == 5
    assert summary["stopped_by_budget"] == "request budget of 5 reached"
    assert summary["skills_ok"] == 5 and summary["skills_unfinished"] == 7 and summary["queries"] == 15
    assert summary["usage"]["requests"] == 5 and summary["estimated_cost_usd"] > 0
    cfg.querygen.budget.max_requests = 100
    summary = run_query_generation(skills, cfg, out, log=lambda *_: None)
    assert summary["skills_ok"] == 12 and summary["stopped_by_budget"] is None and summary["queries"] == 36
    assert sum(stub.requests.values()) == 12 and max(stub.requests.values()) == 1  # nothing asked twice


def test_the_budget_holds_across_reruns_and_counts_every_paid_request(ray_cluster, repo_root, tmp_path, skills,
                                                                      stub):
    cfg = config(repo_root, tmp_path, "querygen.generator=llm", f"querygen.base_url={stub.base_url}",
                 "querygen.num_skills=12", "querygen.actors=1", "querygen.max_in_flight_per_actor=1",
                 "querygen.budget.max_requests=6", "querygen.backoff_base_s=0.01")
    sampled = set(_sampled(skills, cfg))
    for skill in skills:
        if skill.id in sampled:
            stub.script(skill.name, "429")  # a failed attempt before each answer: paid for all the same
    out = tmp_path / "queries"
    first = run_query_generation(skills, cfg, out, log=lambda *_: None)
    assert sum(stub.requests.values()) == 6 and first["usage"]["requests"] == 6 > sum(stub.answered.values())
    assert first["usage_this_run"]["requests"] == 6 and first["stopped_by_budget"] == "request budget of 6 reached"
    again = run_query_generation(skills, cfg, out, log=lambda *_: None)  # the same command: nothing more is paid
    assert sum(stub.requests.values()) == 6 and again["usage"]["requests"] == 6
    assert again["usage_this_run"]["requests"] == 0 and again["stopped_by_budget"] == "request budget of 6 reached"


def _sampled(skills, cfg) -> list[str]:
    from skillrouter.querygen.sampling import stratified_sample
    from skillrouter.retrieval.categories import categories_for

    qc = cfg.querygen
    return [s.id for s in stratified_sample(skills, categories_for(skills, qc.categories_k, cfg.seed),
                                            qc.num_skills, cfg.seed)]


def test_dry_run_prints_an_estimate_and_sends_nothing(ray_cluster, repo_root, tmp_path, skills, stub):
    cfg = config(repo_root, tmp_path, "querygen.generator=llm", f"querygen.base_url={stub.base_url}",
                 "querygen.num_skills=30", "querygen.dry_run=true")
    printed = []
    result = run_query_generation(skills, cfg, tmp_path / "q", log=printed.append)
    low, high = result["estimate"]["cost_usd"]
    assert result["dry_run"] and result["estimate"]["requests"] == [30, 90] and 0 < low < high
    assert sum(stub.requests.values()) == 0 and "estimate: 30-90 requests" in printed[-1]


def test_killed_job_resumes_without_repeating_a_stored_request(ray_cluster, repo_root, tmp_path, skills):
    with OpenAIStub(capacity=4, latency_s=0.25) as stub:
        args = [sys.executable, "jobs/generate_queries.py", "--config", "configs/minilm.yaml", f"run_dir={tmp_path}",
                "querygen.generator=llm", f"querygen.base_url={stub.base_url}", "querygen.num_skills=40",
                "querygen.actors=1", "querygen.max_in_flight_per_actor=4"]
        env = {**os.environ, "OPENAI_API_KEY": "test-key", "RAY_ADDRESS": ray_cluster}
        proc = subprocess.Popen(args, cwd=repo_root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        parts = tmp_path / "queries" / "parts"
        deadline = time.time() + 120
        while sum(s.done for s in replay(parts).values()) < 10:
            assert time.time() < deadline and proc.poll() is None, "the job did not get going"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(1.0)  # let requests already in flight land at the server
        stored = {sid for sid, st in replay(parts).items() if st.done}
        before = stub.requests.copy()
        assert 10 <= len(stored) < 40

        cfg = config(repo_root, tmp_path, "querygen.generator=llm", f"querygen.base_url={stub.base_url}",
                     "querygen.num_skills=40")
        os.environ["OPENAI_API_KEY"] = "test-key"
        try:
            summary = run_query_generation(skills, cfg, tmp_path / "queries", log=lambda *_: None)
        finally:
            del os.environ["OPENAI_API_KEY"]
        names = {s.id: s.name for s in skills}
        resent = [sid for sid in stored if stub.requests[names[sid]] != before[names[sid]]]
        assert resent == []  # no request whose answer was stored was sent again
        assert summary["skills_ok"] == 40 and summary["queries"] == 120
        rows = pq.read_table(tmp_path / "queries" / QUERIES_FILE).to_pylist()
        assert len({r["skill_id"] for r in rows}) == 40
        assert json.loads((tmp_path / "queries" / "summary.json").read_text())["skills_ok"] == 40


def test_the_summary_says_why_skills_failed(tmp_path):
    from skillrouter.querygen.job import print_query_summary

    failed = {f"s{i}": f"the skill's text yields {i % 3}/3 usable requests" for i in range(7)}
    failed["y"] = "2/3 valid queries after 4 attempts"
    failed["x"] = "offline generator error: ValueError('boom')"
    summary = {"skills_ok": 1, "skills_failed": 9, "skills_unfinished": 0, "skills_sampled": 10, "queries": 12,
               "generator": "offline", "seconds": 1.0, "failed": failed, "rejections": {"too_short": 4},
               "usage": {"requests": 0}, "stopped_by_budget": None}
    lines: list[str] = []
    print_query_summary(summary, tmp_path, log=lines.append)
    assert lines[0].startswith("skills: 1 ok, 9 failed, 0 unfinished of 10")
    assert lines[1] == ("failed: 7 x the skill's text yields N/M usable requests; 1 x 2/3 valid queries after 4 "
                        "attempts; 1 x offline generator error: ValueError('boom') "
                        f"(each skill's reason: {tmp_path / 'summary.json'})")
