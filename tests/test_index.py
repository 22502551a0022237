import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import skill_md
from skillrouter.cli import main
from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import read_skills
from skillrouter.corpus.skill import Skill
from skillrouter.index.build import build_index, index_uri, open_index, sync_index
from skillrouter.index.store import SkillIndex, SkillIndexError, lite_replica
from skillrouter.models.encoder import Encoder, EncoderSpec
from skillrouter.retrieval.embeddings import cache_path, save_embeddings

DIM = 16


def unit_rows(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_skills(n: int = 8) -> list[Skill]:
    """Categories alternate a/b, sources x for the first half and y for the rest."""
    return [Skill(id=f"team/skill-{i}", name=f"skill-{i}", description=f"does thing {i}", body=f"steps for {i}",
                  category="ab"[i % 2], source="x" if i < n // 2 else "y") for i in range(n)]


@pytest.fixture
def config(tmp_path) -> PipelineConfig:
    return PipelineConfig(run_dir=str(tmp_path / "run"))


def live(config) -> str | None:
    with open_index(config) as index:
        return index.live()


@pytest.mark.parametrize("index_type", ["FLAT", "HNSW"])
def test_build_then_each_skill_finds_itself(config, tmp_path, index_type):
    config.index.index_type = index_type
    skills, vectors = make_skills(), unit_rows(8)
    summary = build_index(skills, config, embeddings=vectors, log=lambda _: None)
    assert summary["version"] == "skills_v1" and summary["previous"] is None and summary["rows"] == 8
    assert summary["uri"] == str(tmp_path / "run" / "index" / "skills.db") == index_uri(config)
    assert set(summary["seconds"]) == {"embed_and_write", "flush", "verify", "switch", "total"}
    with open_index(config) as index:
        hits = index.search(vectors, k=3)
        assert [h[0][0] for h in hits] == [s.id for s in skills]
        assert all(abs(h[0][1] - 1) < 1e-5 and h[0][1] >= h[1][1] >= h[2][1] for h in hits)
        assert index.hashes() == {s.id: s.content_hash for s in skills}
        info = index.info()
    assert info["live"] == "skills_v1" and info["dim"] == DIM
    assert (info["index_type"], info["metric"]) == (index_type, "IP")
    assert info["versions"] == [{"name": "skills_v1", "rows": 8, "live": True, "verified": True,
                                 "encoder": EncoderSpec("minilm", 256).cache_key()}]


def test_filters_by_category_and_source(config):
    odd = dataclasses.replace(make_skills(1)[0], id="odd", category='qu"ote\\d ' + "é" * 200)  # clipped at 256 B
    skills, vectors = make_skills() + [odd], unit_rows(9)
    build_index(skills, config, embeddings=vectors, log=lambda _: None)
    cat = {s.id: s.category for s in skills}
    src = {s.id: s.source for s in skills}
    with open_index(config) as index:
        assert {cat[i] for h in index.search(vectors, 10, category="a") for i, _ in h} == {"a"}
        assert {src[i] for h in index.search(vectors, 10, source="y") for i, _ in h} == {"y"}
        both = index.search(vectors, 10, category="b", source="x")
        assert {i for h in both for i, _ in h} == {s.id for s in skills if s.category == "b" and s.source == "x"}
        assert {cat[i] for h in index.search(vectors, 10, category=["a", odd.category]) for i, _ in h} == \
            {"a", odd.category}
        assert [i for i, _ in index.search(vectors[:1], 10, category=odd.category)[0]] == ["odd"]
        assert index.search(vectors[:2], 5, category="none") == [[], []]


def test_failed_verification_keeps_the_old_version_live(config):
    skills, vectors = make_skills(), unit_rows(8)
    build_index(skills, config, embeddings=vectors, log=lambda _: None)
    collapsed = np.repeat(vectors[:1], 8, axis=0)  # a collapsed encoder: every skill gets one vector
    with pytest.raises(SkillIndexError, match="collapsed.*'skills' still serves skills_v1; skills_v2 is"):
        build_index(skills, config, embeddings=collapsed, log=lambda _: None)
    with open_index(config) as index:
        assert index.live() == "skills_v1" and index.versions() == [1, 2]
        assert [h[0][0] for h in index.search(vectors, 1)] == [s.id for s in skills]  # still readable
        assert not index.info()["versions"][1]["verified"]
        with pytest.raises(SkillIndexError, match="skills_v2 has not passed verification"):
            index.switch("skills_v2")
    summary = build_index(skills, config, embeddings=vectors, log=lambda _: None)
    assert summary["version"] == "skills_v3" and summary["dropped"] == ["skills_v2"]  # the failed one goes


def test_copies_the_encoder_reads_alike_tie_and_a_misplaced_row_fails(config):
    """Registries publish a skill under several ids whose texts differ only past what the encoder reads: one
    vector, several ids (the 69K pool's first GPU build stopped on such a pair). Each copy ties for first place,
    which is no miss; a row written under another skill's id is one."""
    skills, vectors = make_skills(16), unit_rows(16)
    for a, b in ((0, 1), (2, 3), (4, 5)):  # pairs of copies: other text, the same vector
        skills[b] = dataclasses.replace(skills[b], body=skills[a].body + " (copied; a footer the encoder never reads)")
        vectors[b] = vectors[a]
    lines: list[str] = []
    summary = build_index(skills, config, embeddings=vectors, log=lines.append)
    assert summary["verify"]["ties"] == 6 and summary["verify"]["self_recall"] == 1.0
    assert "6 tied with a skill the encoder reads alike" in lines[-1]
    with open_index(config) as index:
        for a, b in ((0, 1), (2, 3), (4, 5)):
            top = index.search(vectors[a:a + 1], 2)[0]
            assert {i for i, _ in top} == {skills[a].id, skills[b].id} and abs(top[0][1] - top[1][1]) < 1e-5
        misplaced = vectors.copy()
        misplaced[[8, 9]] = misplaced[[9, 8]]  # what the index should hold, if rows 8 and 9 were swapped
        with pytest.raises(SkillIndexError, match="2 of 16 sampled skills are not their own top-1"):
            index.verify(summary["version"], skills, misplaced, expected_rows=16)


def test_a_build_cut_short_while_embedding_leaves_the_live_version_alone(config, monkeypatch):
    """Rows are written as the encoder returns them: a build that dies half way has written part of a version,
    which no reader sees and the next build drops."""
    from skillrouter.index import build

    skills, vectors = make_skills(), unit_rows(8)
    build_index(skills, config, embeddings=vectors, log=lambda _: None)

    def dies_half_way(skills, spec, cache_dir, on_rows, **kwargs):
        on_rows(np.arange(4), unit_rows(8, seed=1)[:4])
        raise RuntimeError("the GPU actor died")
    monkeypatch.setattr(build, "embed_skills", dies_half_way)
    with pytest.raises(RuntimeError, match="actor died"):
        build_index(skills, config, log=lambda _: None)
    with open_index(config) as index:
        assert index.live() == "skills_v1" and index.versions() == [1, 2]
        assert index.count("skills_v2") == 4 and not index.info()["versions"][1]["verified"]
        assert [h[0][0] for h in index.search(vectors, 1)] == [s.id for s in skills]
    monkeypatch.undo()
    summary = build_index(skills, config, embeddings=vectors, log=lambda _: None)
    assert summary["version"] == "skills_v3" and summary["dropped"] == ["skills_v2"]


def test_rebuild_switches_and_keeps_versions(config):
    skills, logs = make_skills(), []
    for seed in range(3):
        summary = build_index(skills, config, embeddings=unit_rows(8, seed), log=logs.append)
    assert summary["version"] == "skills_v3" and summary["previous"] == "skills_v2"
    assert summary["dropped"] == ["skills_v1"] and "dropped skills_v1" in logs[-1]
    with open_index(config) as index:
        assert index.versions() == [2, 3] and index.live() == "skills_v3"
        assert index.search(unit_rows(8, 1)[:1], 1, collection="skills_v2")[0][0][0] == skills[0].id  # rollback
    config.index.keep_versions = 1
    assert build_index(skills, config, embeddings=unit_rows(8), log=logs.append)["dropped"] == ["skills_v3",
                                                                                                 "skills_v2"]


def test_sync_embeds_only_new_and_changed_skills(config):
    skills, vectors = make_skills(), unit_rows(8)
    build_index(skills, config, embeddings=vectors, log=lambda _: None)
    edited = dataclasses.replace(skills[2], body="new steps")
    added = Skill(id="team/new", name="new", description="brand new", body="fresh", category="a", source="x")
    corpus = [s for s in skills if s.id != skills[5].id]
    corpus[2] = edited
    corpus.append(added)
    new_vectors = unit_rows(2, seed=7)
    embedded: list[str] = []

    def embed(texts):
        embedded.extend(texts)
        return new_vectors[:len(texts)]

    summary = sync_index(corpus, config, embed=embed, log=lambda _: None)
    assert embedded == [added.text(), edited.text()]
    assert {k: summary[k] for k in ("added", "changed", "deleted", "unchanged", "rows")} == \
        {"added": 1, "changed": 1, "deleted": 1, "unchanged": 6, "rows": 8}
    with open_index(config) as index:
        assert index.live() == "skills_v1" and index.hashes() == {s.id: s.content_hash for s in corpus}
        assert [h[0][0] for h in index.search(new_vectors, 1)] == ["team/new", edited.id]
        assert skills[5].id not in {i for h in index.search(vectors, 8) for i, _ in h}
        assert index.search(vectors[:1], 1)[0][0][0] == skills[0].id  # unchanged rows keep their vectors
    embedded.clear()
    assert sync_index(corpus, config, embed=embed, log=lambda _: None)["unchanged"] == 8 and embedded == []
    config.index.max_length = 128  # another encoder spec: a sync would mix two embedding spaces
    with pytest.raises(SkillIndexError, match="built with encoder 'minilm|256.*run `skillrouter index build`"):
        sync_index(corpus, config, embed=embed, log=lambda _: None)


def test_bad_inputs_are_clear_errors(config, tmp_path, capsys):
    for uri, message in [(str(tmp_path / "x.sqlite"), "must end in .db"), ("ftp://host/x", "http"),
                         (str(tmp_path / "absent.db"), "no index at .*run `skillrouter index build` first"),
                         ("http://127.0.0.1:1", "cannot open the index at http://127.0.0.1:1")]:
        with pytest.raises(SkillIndexError, match=message):
            SkillIndex.open(uri)
    with SkillIndex.open(str(tmp_path / "empty.db"), create=True) as index:
        with pytest.raises(SkillIndexError, match="no collection 'skills' in .*empty.db: run `skillrouter index"):
            index.search(unit_rows(1), 5)
    assert main(["index", "sync", "--corpus", "bundled", f"run_dir={tmp_path / 'none'}"]) == 2
    assert "error: no index at" in capsys.readouterr().err
    assert main(["index", "info", "index.colection=x"]) == 2
    assert "unknown key 'index.colection'" in capsys.readouterr().err
    skills = make_skills(3)
    with pytest.raises(ValueError, match="occur more than once"):
        build_index(skills + skills[:1], config, embeddings=unit_rows(4), log=lambda _: None)
    with pytest.raises(ValueError, match="unit rows.*row 1 has norm 2.0000"):
        build_index(skills, config, embeddings=unit_rows(3) * [[1], [2], [1]], log=lambda _: None)


def test_one_owner_per_lite_file_and_replica_copies(config, tmp_path):
    skills, vectors = make_skills(), unit_rows(8)
    build_index(skills, config, embeddings=vectors, log=lambda _: None)
    uri = index_uri(config)
    copy = lite_replica(uri, tmp_path / "replica-1")
    with open_index(config) as owner:  # this process owns the file now
        script = (f"from skillrouter.index.store import SkillIndex, SkillIndexError\n"
                  f"try:\n    SkillIndex.open({uri!r})\nexcept SkillIndexError as err:\n    print(err)\n"
                  f"with SkillIndex.open({copy!r}) as ix:\n"
                  f"    print(ix.search(__import__('numpy').eye(1, {DIM}, dtype='float32'), 1)[0][0][0])\n")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        out = done.stdout.splitlines()
        assert "is held by another process" in out[0] and "lite_replica" in out[0]
        assert out[1] == owner.search(np.eye(1, DIM, dtype=np.float32), 1)[0][0][0]


def test_cli_build_reuses_the_cache_and_sync_uses_the_encoder(tmp_path, skill_tree, capsys):
    """The real MiniLM: the build finds the corpus embeddings in the cache, the sync embeds the new skill,
    and a query encoded like serving will encode it lands on the right skills."""
    args = ["--corpus", str(skill_tree), f"run_dir={tmp_path / 'run'}", f"mining.cache_dir={tmp_path / 'cache'}"]
    skills = read_skills(skill_tree)
    spec = EncoderSpec("minilm", 256)
    encoder = Encoder.load(spec, device="cpu")
    save_embeddings(encoder.encode_skills(skills), cache_path(tmp_path / "cache", spec, skills), spec, skills)
    assert main(["index", "build", *args]) == 0
    out = capsys.readouterr().out
    assert "corpus embeddings: cached" in out and "'skills' -> skills_v1 (3 skills" in out
    new = skill_tree / "data" / "pg-vacuum" / "SKILL.md"
    new.parent.mkdir(parents=True)
    new.write_text(skill_md("postgres-vacuum", "Fix table bloat in PostgreSQL.", "Run VACUUM and tune autovacuum."))
    assert main(["index", "sync", *args]) == 0
    assert "1 added, 0 changed, 0 deleted, 3 unchanged" in capsys.readouterr().out
    assert main(["index", "info", *args]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["live"] == "skills_v1" and info["versions"][0]["rows"] == 4 and info["dim"] == 384
    config = PipelineConfig(run_dir=str(tmp_path / "run"))
    queries = encoder.encode_queries(["our postgres tables are bloated", "write the notes for the new release"])
    with open_index(config) as index:
        names = {s.id: s.name for s in read_skills(skill_tree)}
        assert [names[h[0][0]] for h in index.search(queries, 2)] == ["postgres-vacuum", "release-notes"]
