import json

import pyarrow.parquet as pq
import pytest

from conftest import pool_rows, write_jsonl
from skillrouter.config import CorpusConfig
from skillrouter.corpus.ingest import IngestError, ingest, read_skills
from skillrouter.corpus.readers import UnsupportedSource, describe_source, iter_source
from skillrouter.corpus.skill import Skill
from skillrouter.corpus.skillmd import SkillMdError, parse_skill_md


def quarantine(out):
    return [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]


def test_parse_skill_md_splits_front_matter_and_body():
    parsed = parse_skill_md("\ufeff---\nname: a\ndescription: b\nextra: [1, 2]\n---\n\n# Title\nbody\n")
    assert parsed.front_matter == {"name": "a", "description": "b", "extra": [1, 2]}
    assert parsed.body == "# Title\nbody"


@pytest.mark.parametrize("text,reason", [
    ("# no front matter", "missing_front_matter"),
    ("---\nname: a\n", "invalid_front_matter"),
    ("---\nname: [a\n---\nbody", "invalid_front_matter"),
    ("---\n- a list\n---\nbody", "invalid_front_matter"),
])
def test_parse_skill_md_errors(text, reason):
    with pytest.raises(SkillMdError) as err:
        parse_skill_md(text)
    assert err.value.reason == reason


def test_skill_tree_ids_nesting_metadata_and_quarantine(skill_tree, tmp_path):
    out = tmp_path / "out"
    summary = ingest([skill_tree], out, progress=False)
    skills = {s.id: s for s in read_skills(out)}
    assert set(skills) == {"devops/docker-debug", "devops/nested/deeper/k8s-rollout", "writing/release-notes"}
    docker = skills["devops/docker-debug"]
    assert docker.category == "containers" and docker.body.startswith("# Docker")
    assert docker.metadata == {"license": "MIT", "path": "devops/docker-debug/SKILL.md"}
    assert docker.source == "registry"
    reasons = {q["id"]: q["reason"] for q in quarantine(out)}
    assert reasons == {
        "bad/no-front-matter": "missing_front_matter", "bad/broken-yaml": "invalid_front_matter",
        "bad/no-name": "missing_name", "bad/empty-body": "empty_body", "bad/latin1": "not_utf8",
        "bad/binary": "binary_content",
    }
    assert (summary.read, summary.written, summary.quarantined) == (9, 3, 6)
    assert json.loads((out / "summary.json").read_text())["written"] == 3


def test_jsonl_gz_and_bad_lines(tmp_path):
    rows = pool_rows(3) + [
        "{not json", "[1, 2]",
        {"skill_id": "alt", "name": "alt-name", "description": "uses skill_id", "body": "b", "category": "x"},
        {"id": "big", "name": "n", "description": "d", "body": "x" * 500},
        {"id": "typed", "name": ["list"], "description": "d", "body": "b"},
        {"id": "nodesc", "name": "n", "body": "b"},
        {"name": "noid", "description": "d", "body": "b"},
        {"id": "s0", "name": "dup", "description": "d", "body": "b"},
    ]
    path = write_jsonl(tmp_path / "pool.jsonl.gz", rows, gz=True)
    out = tmp_path / "out"
    summary = ingest([path], out, CorpusConfig(max_skill_chars=200), progress=False)
    skills = read_skills(out)
    assert [s.id for s in skills] == ["s0", "s1", "s2", "alt"]
    assert skills[0].metadata == {"license": "MIT"} and skills[3].category == "x"
    q = quarantine(out)
    assert [x["reason"] for x in q] == ["invalid_json", "invalid_json", "too_large", "invalid_field",
                                        "missing_description", "missing_id", "duplicate_id"]
    assert q[0]["location"].endswith("pool.jsonl.gz:4") and q[0]["record"] == {"raw": "{not json\n"}
    assert q[-1]["record"]["name"] == "dup"  # nothing is lost: the raw record is kept
    assert summary.duplicates == 1 and summary.written == 4


def test_truncated_gzip_keeps_what_was_read(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl.gz", pool_rows(200), gz=True)
    path.write_bytes(path.read_bytes()[:-40])
    items = list(iter_source(path, max_chars=10_000))
    assert isinstance(items[-1], Skill) is False and items[-1].reason == "unreadable_file"
    assert sum(isinstance(i, Skill) for i in items) > 100


def test_parquet_and_pool_layouts(tmp_path):
    first = tmp_path / "first"
    ingest([write_jsonl(tmp_path / "a.jsonl", pool_rows(4))], first, progress=False)
    assert describe_source(first / "skills.parquet") == "parquet"
    assert [s.id for s in read_skills(first / "skills.parquet")] == ["s0", "s1", "s2", "s3"]
    assert read_skills(first)[0].metadata == {"license": "MIT"}  # JSON metadata survives the round trip

    bench = tmp_path / "bench"
    (bench / "pool").mkdir(parents=True)
    write_jsonl(bench / "pool" / "shard-0.jsonl", pool_rows(2, "a"))
    write_jsonl(bench / "pool" / "shard-1.jsonl.gz", pool_rows(2, "b"), gz=True)
    assert describe_source(bench) == "pool" and describe_source(bench / "pool") == "pool"
    assert [s.id for s in read_skills(bench)] == ["a0", "a1", "b0", "b1"]


def test_several_sources_duplicates_across_them(tmp_path, skill_tree):
    a = write_jsonl(tmp_path / "a.jsonl", pool_rows(2))
    b = write_jsonl(tmp_path / "b.jsonl", pool_rows(3))
    summary = ingest([a, b, skill_tree], tmp_path / "out", progress=False)
    assert summary.written == 3 + 3 and summary.duplicates == 2


def test_fails_only_when_nothing_valid_or_strict(tmp_path, skill_tree):
    bad = write_jsonl(tmp_path / "bad.jsonl", ["nope", {"id": "x"}])
    with pytest.raises(IngestError, match="no valid skill"):
        ingest([bad], tmp_path / "o1", progress=False)
    assert len(quarantine(tmp_path / "o1")) == 2 and not (tmp_path / "o1" / "skills.parquet").exists()
    with pytest.raises(IngestError, match="--strict: 6 records quarantined"):
        ingest([skill_tree], tmp_path / "o2", CorpusConfig(strict=True), progress=False)
    assert not (tmp_path / "o2" / "skills.parquet").exists()


def test_unsupported_sources(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UnsupportedSource, match="unsupported file type"):
        describe_source(tmp_path / "notes.txt")
    with pytest.raises(UnsupportedSource, match="no such file"):
        describe_source(tmp_path / "absent")


def test_skill_row_round_trip_and_hash():
    s = Skill("i", "n", "d", "b", None, "src", {"k": [1]})
    assert Skill.from_row(s.to_row()) == s and Skill.from_row(s.to_row()).metadata == {"k": [1]}
    assert s.text() == "n | d | b" and s.content_hash != Skill("i", "n", "d", "b2").content_hash


def test_parquet_schema_is_stable(tmp_path):
    ingest([write_jsonl(tmp_path / "a.jsonl", pool_rows(1))], tmp_path / "o", progress=False)
    schema = pq.read_schema(tmp_path / "o" / "skills.parquet")
    assert schema.names == ["id", "name", "description", "body", "category", "source", "metadata", "content_hash"]
