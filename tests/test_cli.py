import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import pool_rows, write_jsonl
from skillrouter.cli import main

SKILLROUTER = str(Path(sys.executable).parent / "skillrouter")


def test_console_script_ingest_summary_and_exit_codes(tmp_path, skill_tree):
    done = subprocess.run([SKILLROUTER, "ingest", str(skill_tree), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, check=True)
    assert "read 9  written 3  duplicates 0  quarantined 6" in done.stdout
    assert "quarantine reason not_utf8" in done.stdout and "quarantine.jsonl" in done.stdout
    strict = subprocess.run([SKILLROUTER, "ingest", str(skill_tree), "--out", str(tmp_path / "s"), "--strict"],
                            capture_output=True, text=True)
    assert strict.returncode == 2 and "--strict: 6 records quarantined" in strict.stderr
    assert "Traceback" not in strict.stderr


def test_ingest_overrides_and_size_cap(tmp_path, capsys):
    src = write_jsonl(tmp_path / "p.jsonl", pool_rows(3) + [{"id": "big", "name": "b", "description": "d",
                                                             "body": "y" * 300}])
    assert main(["ingest", str(src), "--out", str(tmp_path / "o"), "--quiet", "corpus.max_skill_chars=200"]) == 0
    assert "written 3" in capsys.readouterr().out
    assert main(["ingest", str(src), "--out", str(tmp_path / "o2"), "--quiet", "corpus.max_skill_chars=lots"]) == 2
    assert "corpus.max_skill_chars" in capsys.readouterr().err


def test_route_table_and_json(capsys):
    assert main(["route", "merge several PDF files into one and add page numbers", "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["rank", "skill", "score"] and len(out.splitlines()) == 5
    assert main(["route", "merge several PDF files into one", "--top-k", "2", "--json",
                 "--system", "bm25-nd"]) == 0
    routes = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in routes] == [1, 2] and routes[0]["score"] >= routes[1]["score"]


def test_route_bad_input_is_a_clear_error(capsys):
    assert main(["route", "anything", "--top-k", "0"]) == 2
    assert "top_k must be between" in capsys.readouterr().err
    assert main(["route", "anything", "--system", "nope"]) == 2
    assert "unknown system 'nope'" in capsys.readouterr().err


def test_eval_on_exported_devset(tmp_path, capsys):
    assert main(["export-devset", "--out", str(tmp_path / "dev")]) == 0
    assert main(["eval", "--benchmark", str(tmp_path / "dev"), "--system", "bm25", "--out",
                 str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    preds = json.loads((tmp_path / "eval" / "predictions.json").read_text())
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    tasks = (tmp_path / "dev" / "tasks.jsonl").read_text().splitlines()
    assert len(preds) == len(tasks) and all(len(p) == 50 for p in preds.values())
    assert metrics["metrics"]["all"]["n"] == len(tasks)
    assert "Hit@1" in out and "bm25" in out and "multi" in out


def test_eval_several_systems_write_one_folder_each(tmp_path, capsys):
    assert main(["eval", "--system", "bm25", "--system", "bm25-nd", "--out", str(tmp_path), "eval.top_k=5"]) == 0
    for system in ("bm25", "bm25-nd"):
        preds = json.loads((tmp_path / system / "predictions.json").read_text())
        assert all(len(p) == 5 for p in preds.values())
    assert main(["eval", "--benchmark", str(tmp_path / "nowhere"), "--system", "bm25", "--out", str(tmp_path)]) == 2
    assert "missing 'tasks.jsonl'" in capsys.readouterr().err


def test_generate_queries_dry_run_and_missing_prompt(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    args = ["generate-queries", "--dry-run", f"run_dir={tmp_path}", "querygen.num_skills=10",
            "querygen.base_url=http://127.0.0.1:9/v1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "query generation (llm): 10 of 239 skills, stratified over 24 categories" in out
    assert "estimate: 10-30 requests" in out
    assert not (tmp_path / "queries" / "queries.parquet").exists()
    assert main([*args, "querygen.prompt_file=nowhere.yaml"]) == 2
    assert "querygen.prompt_file: no such file 'nowhere.yaml'" in capsys.readouterr().err


def test_every_help_is_whole_and_names_every_command_and_stage(capsys):
    from skillrouter.cli import build_parser
    from skillrouter.pipeline.run import STAGES

    parser = build_parser()
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert ".venv/bin/skillrouter" in top and 'make run ARGS="..."' in top
    for name in commands:
        assert f"    {name}" in top, name  # listed with its one-line help
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert text.startswith("usage: skillrouter " + name) and "--config" in text
    with pytest.raises(SystemExit):
        main(["pipeline", "--help"])
    pipeline = " ".join(capsys.readouterr().out.split())
    assert "stages, in order: " + ", ".join(STAGES) + "." in pipeline
