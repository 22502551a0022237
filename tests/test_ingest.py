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
    assert describe_source(bench) == "pool" and describe_source(bench / "pool") == "directory"
    assert [s.id for s in read_skills(bench)] == ["a0", "a1", "b0", "b1"]
    assert [s.id for s in read_skills(bench / "pool")] == ["a0", "a1", "b0", "b1"]
    assert describe_source(first) == "ingested"  # its quarantine.jsonl is not read as skills
    assert [s.id for s in iter_source(first, max_chars=1000)] == ["s0", "s1", "s2", "s3"]


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


@pytest.mark.parametrize("front,expected", [
    ("on: push", {"on": "push"}),  # a GitHub-Actions-style key: YAML 1.1 would read it as True
    ("a: yes\nb: off\nc: true", {"a": "yes", "b": "off", "c": True}),  # YAML 1.2 booleans only
    # True and 1 are one dict key in Python: read pair by pair, both are kept
    ("true: 1\n1: 2\n~: 3\n1.5: 4\n2024-01-01: 5", {"true": 1, "1": 2, "null": 3, "1.5": 4, "2024-01-01": 5}),
    ("m: {1: a, false: b}", {"m": {"1": "a", "false": "b"}}),
    ('e: "\\ud83d\\ude80"', {"e": "\U0001f680"}),  # a JSON-style surrogate pair is one character
])
def test_front_matter_keys_are_text(front, expected):
    assert parse_skill_md(f"---\n{front}\n---\nbody").front_matter == expected


@pytest.mark.parametrize("front,detail", [
    ("loop: &a [*a]", "aliases are not accepted"),
    ("a: &a [1, 2]\nb: [*a, *a]", "aliases are not accepted"),
    ("x: " + "[" * 100 + "]" * 100, "nested deeper than"),
    ("n: " + "9" * 5000, "4300 digits"),
    ('1: a\n"1": b', "appears twice"),  # two keys that read the same
    ("a: 1\na: 2", "appears twice"),
    ("x: " + "y" * 70_000, "over the limit of 65,536"),
])
def test_front_matter_bounds(front, detail):
    with pytest.raises(SkillMdError, match=detail) as err:
        parse_skill_md(f"---\n{front}\n---\nbody")
    assert err.value.reason == "invalid_front_matter"


def skill_text(name, extra=""):
    return f"---\nname: {name}\ndescription: does {name}\n{extra}---\nbody of {name}\n"


def test_mixed_tree_reads_skill_files_and_top_level_data_files(tmp_path):
    root = tmp_path / "mixed"
    for rel, text in {"a/SKILL.md": skill_text("a"), "b/Skill.md": skill_text("b"), "c/SKILL.MD": skill_text("c"),
                      ".claude/skills/d/skill.md": skill_text("d"), ".git/e/SKILL.md": skill_text("e"),
                      "a/assets/rows.jsonl": "{}\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    write_jsonl(root / "pool.jsonl", pool_rows(2, "j"))
    ingest([write_jsonl(tmp_path / "p.jsonl", pool_rows(2, "p"))], tmp_path / "first", progress=False)
    (tmp_path / "first" / "skills.parquet").rename(root / "table.parquet")
    summary = ingest([root], tmp_path / "out", progress=False)
    assert [s.id for s in read_skills(tmp_path / "out")] == [".claude/skills/d", "a", "b", "c", "j0", "j1", "p0", "p1"]
    assert summary.skipped == {"vcs_folder": 1, "data_file_below_top_level": 1}
    assert summary.skipped_paths["vcs_folder"] == [str(root / ".git")]
    assert any("skipped, not read vcs_folder" in line for line in summary.lines())


def test_ids_the_index_would_refuse_are_quarantined(tmp_path):
    rows = pool_rows(1) + [{**pool_rows(1, "x")[0], "id": i} for i in ("é" * 300, "a\nb", "a\ud800b")]
    path = tmp_path / "ids.jsonl"
    path.write_bytes("".join(json.dumps(r) + "\n" for r in rows).encode())
    summary = ingest([path], tmp_path / "out", progress=False)
    assert [q["reason"] for q in quarantine(tmp_path / "out")] == ["invalid_id"] * 3
    assert summary.written == 1


def test_metadata_counts_toward_the_size_cap_and_text_must_be_unicode(tmp_path):
    rows = [{**pool_rows(1, "a")[0], "notes": "n" * 300}, {**pool_rows(1, "b")[0], "name": "x\udc80"},
            pool_rows(1, "c")[0]]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest([path], tmp_path / "out", CorpusConfig(max_skill_chars=200), progress=False)
    q = quarantine(tmp_path / "out")
    assert [x["reason"] for x in q] == ["too_large", "invalid_text"] and "metadata 3" in q[0]["detail"]
    assert [s.id for s in read_skills(tmp_path / "out")] == ["c0"]


def test_no_temporary_file_on_any_failure(tmp_path, monkeypatch, skill_tree):
    import skillrouter.corpus.ingest as ingest_module

    def tmp_files(out):
        return [p.name for p in out.iterdir() if p.name.endswith(".tmp")] if out.exists() else []

    with pytest.raises(UnsupportedSource):  # checked before anything is created
        ingest([skill_tree, tmp_path / "absent"], tmp_path / "o1", progress=False)
    assert not (tmp_path / "o1").exists()
    with pytest.raises(IngestError):
        ingest([write_jsonl(tmp_path / "bad.jsonl", ["nope"])], tmp_path / "o2", progress=False)
    with pytest.raises(IngestError):
        ingest([skill_tree], tmp_path / "o3", CorpusConfig(strict=True), progress=False)

    def interrupted(src, **kwargs):
        yield from iter_source(src, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest_module, "iter_source", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ingest([skill_tree], tmp_path / "o4", progress=False, batch_rows=1)
    for out in ("o2", "o3", "o4"):
        assert tmp_files(tmp_path / out) == []
    assert not (tmp_path / "o4" / "skills.parquet").exists()


@pytest.mark.parametrize("body", ["plain ascii", "caf\u00e9", "a \u2192 b " * 40, "\U0001F600 emoji " * 30,
                                  "\u4e2d\u6587" * 50, "lone \ud83d and \ude00 surrogates " * 10, ""])
def test_a_skill_keeps_its_body_compactly_and_gives_it_back_unchanged(body):
    """`CompactText`: a body beyond ASCII is held as UTF-8 when that is smaller than the str (never when larger,
    as for CJK text); reading it, comparing, hashing, pickling and `replace` see the same str as before."""
    import copy
    import pickle
    import sys
    from dataclasses import FrozenInstanceError, replace

    skill = Skill("id", "name", "desc", body, "cat")
    stored = skill.__dict__["_body"]
    assert skill.body == body and type(skill.body) is str
    assert sys.getsizeof(stored) <= sys.getsizeof(body)
    smaller = not body.isascii() and sys.getsizeof(body.encode("utf-8", "surrogatepass")) < sys.getsizeof(body)
    assert type(stored) is (bytes if smaller else str)
    twin = Skill(id="id", name="name", description="desc", body=body, category="cat")
    assert skill == twin and hash(skill) == hash(twin) and skill.text() == twin.text()
    assert pickle.loads(pickle.dumps(skill)) == skill and copy.deepcopy(skill).body == body
    assert replace(skill, body="other").body == "other" and replace(skill, name="n").body == body
    assert repr(skill) == f"Skill(id='id', name='name', description='desc', body={body!r}, category='cat', " \
                          "source='', metadata={})"
    with pytest.raises(FrozenInstanceError):
        skill.body = "x"
    with pytest.raises(TypeError):
        Skill("id", "name", "desc")  # the body stays a required argument
