"""Hostile ids and filter values on every path into Milvus (Lite): the store's upsert, delete, search filters and
`sync_index`, the admin writer (validated whole, applied all or nothing) and the retriever's batch."""

import asyncio
import dataclasses
import hashlib

import numpy as np
import pytest

from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import write_skills
from skillrouter.corpus.skill import Skill
from skillrouter.index import store
from skillrouter.index.build import build_index, encoder_spec, open_index, sync_index
from skillrouter.index.store import SkillIndex, SkillIndexError, expression
from skillrouter.models.encoder import skill_texts
from skillrouter.retrieval.filters import UnsafeValue
from skillrouter.retrieval.first_stage import RetrieveQuery
from skillrouter.serving.admin import AdminError, IndexWriter, generation_path
from skillrouter.serving.generations import publish
from skillrouter.serving.stages import corpus_path, search_isolated
from test_index import DIM, make_skills, unit_rows

# Each is a valid skill id that an expression pasted together from it would misread.
HOSTILE = [
    "x'] or id not in ['team/skill-0",  # the report's id: `id in ['...']` from it deleted every other row
    'x"] or id not in ["team/skill-1',
    "p/back\\slash", "trailing\\", '\\"', "it's", 'say "hi"', "br]acket", "br[acket", "[]", "a or b",
    "id not in []", "emoji/🚀✨", "中文技能/" + "数据" * 40, "mixed '\"\\[] 中🚀",
]
# Values no expression may carry: refused before any request, and the index is unchanged.
UNSAFE = ["new\nline", "tab\tx", "cr\rx", "nul\x00x", "bell\x07", "esc\x1b[31m", "del\x7f", "c1\x85", "lone\ud800"]


def hostile_skills() -> list[Skill]:
    """One skill per hostile id, whose category and source are that id too (filters meet the same values)."""
    return [Skill(id=h, name=f"hostile {i}", description=f"a hostile id {i}", body=f"steps {i}", category=h,
                  source=h) for i, h in enumerate(HOSTILE)]


@pytest.fixture
def config(tmp_path) -> PipelineConfig:
    return PipelineConfig(run_dir=str(tmp_path / "run"))


def ids_in(config) -> set[str]:
    with open_index(config) as index:
        return set(index.hashes())


# -- the store ---------------------------------------------------------------------------------------------------


def test_store_filters_and_deletes_exactly_the_hostile_row(config):
    skills = make_skills(4) + hostile_skills()
    vectors = unit_rows(len(skills))
    build_index(skills, config, embeddings=vectors, log=lambda _: None)
    with open_index(config) as index:
        for row, h in enumerate(HOSTILE, start=4):
            for field in ("category", "source"):
                hits = index.search(vectors[row:row + 1], len(skills), **{field: h})[0]
                assert [i for i, _ in hits] == [h], (field, h)
            hits = index.search(vectors[:1], len(skills), category=[h, "a"])[0]
            assert {i for i, _ in hits} == {h} | {s.id for s in skills[:4] if s.category == "a"}
        remaining = {s.id for s in skills}
        for h in HOSTILE:  # one at a time: exactly that row goes
            index.delete([h])
            remaining.discard(h)
            assert index.count() == len(remaining) and set(index.hashes()) == remaining, h
        assert remaining == {s.id for s in skills[:4]}


def refused_on_every_path(index: SkillIndex, skill: Skill, bad: str) -> None:
    """`bad` is refused by delete (beside a good id), both filters and upsert, each before any request."""
    with pytest.raises(UnsafeValue, match="control character|lone surrogate"):
        index.delete([HOSTILE[0], bad])
    with pytest.raises(UnsafeValue):
        index.search(unit_rows(1), 3, category=bad)
    with pytest.raises(UnsafeValue):
        index.search(unit_rows(1), 3, source=["a", bad])
    with pytest.raises(UnsafeValue):
        index.upsert([dataclasses.replace(skill, id=bad)], unit_rows(1))


def test_store_refuses_unsafe_values_before_any_request(config, monkeypatch):
    skills = make_skills(4) + hostile_skills()[:2]
    build_index(skills, config, embeddings=unit_rows(len(skills)), log=lambda _: None)
    before = {s.id for s in skills}
    monkeypatch.setattr(store, "ID_BATCH", 1)  # an unsafe id in a later batch stops the first one too
    with open_index(config) as index:
        for bad in UNSAFE:
            refused_on_every_path(index, skills[0], bad)
            assert set(index.hashes()) == before and index.count() == len(before), repr(bad)
        with pytest.raises(UnsafeValue, match="expected text"):
            index.search(unit_rows(1), 3, category=[3])


def test_sync_index_deletes_hostile_ids_that_leave_the_corpus(config):
    """The report's second path: no admin call, an `index sync` after ingested ids with quotes leave the corpus."""
    skills = make_skills(4) + hostile_skills()
    build_index(skills, config, embeddings=unit_rows(len(skills)), log=lambda _: None)
    kept = skills[:4] + skills[-3:]
    summary = sync_index(kept, config, embed=lambda texts: unit_rows(len(texts)), log=lambda _: None)
    assert summary["deleted"] == len(skills) - len(kept) and summary["rows"] == len(kept)
    assert ids_in(config) == {s.id for s in kept}
    for bad in UNSAFE:  # refused before the index is touched
        with pytest.raises(ValueError, match="cannot be indexed"):
            sync_index(kept[1:] + [dataclasses.replace(kept[0], id=bad)], config,
                       embed=lambda texts: unit_rows(len(texts)), log=lambda _: None)
        assert ids_in(config) == {s.id for s in kept}
        with pytest.raises(ValueError, match="cannot be indexed"):
            build_index([dataclasses.replace(kept[0], id=bad)], config, embeddings=unit_rows(1), log=lambda _: None)
    with open_index(config) as index:
        assert index.versions() == [1]  # no half-written version either


def test_a_server_gets_bound_values_and_lite_escaped_literals():
    values = HOSTILE[:3]
    expr, params = expression([("id", values), ("category", ["a"])], bind=True)
    assert (expr, params) == ("id in {p0} and category in {p1}", {"p0": values, "p1": ["a"]})
    expr, params = expression([("id", ["it's", 'q"', "b\\s"])], bind=False)
    assert (expr, params) == ('id in ["it\'s", "q\\"", "b\\\\s"]', {})
    with pytest.raises(ValueError, match="no field 'vector'"):
        expression([("vector", ["x"])], bind=True)

    class Client:  # what a server would be sent: never pymilvus' `ids=`, which pastes ids unescaped
        def __init__(self):
            self.calls = []

        def delete(self, collection, **kw):
            self.calls.append(("delete", kw))

        def search(self, collection, **kw):
            self.calls.append(("search", {k: kw[k] for k in ("filter", "filter_params")}))
            return [[] for _ in kw["data"]]

        def flush(self, collection):
            pass

        def query(self, collection, **kw):  # the store's wait for its writes to be visible (`_settle`)
            return [{"count(*)": 0}]

    index = SkillIndex(Client(), "http://milvus:19530", "skills")
    index._loaded.add("c")
    index.delete(values, collection="c")
    index.search(unit_rows(1), 3, category=HOSTILE[0], source=["s", HOSTILE[1]], collection="c")
    assert index.client.calls == [
        ("delete", {"filter": "id in {p0}", "filter_params": {"p0": values}}),
        ("search", {"filter": "category in {p0} and source in {p1}",
                    "filter_params": {"p0": [HOSTILE[0]], "p1": ["s", HOSTILE[1]]}})]


# -- the retriever's batch ---------------------------------------------------------------------------------------


def test_filters_are_refused_alone_before_a_batch(config):
    from skillrouter.index.build import open_index as open_
    from skillrouter.retrieval.filters import Catalogue
    from skillrouter.serving.stages import FirstStage

    for bad in UNSAFE:
        with pytest.raises(UnsafeValue):
            RetrieveQuery("q", 3, category=bad)
        with pytest.raises(UnsafeValue):
            RetrieveQuery("q", 3, source=["ok", bad])
    skills = make_skills(4) + hostile_skills()[:1]
    vectors = unit_rows(len(skills))
    build_index(skills, config, embeddings=vectors, log=lambda _: None)

    class Encoder:
        def encode_queries(self, texts):
            return np.stack([vectors[int(t)] for t in texts])

    poisoned = object.__new__(RetrieveQuery)  # as if unpickled past the check: its search raises, alone
    for field, value in dict(text="0", k=3, first_stage="dense", category="nul\x00", source=None).items():
        object.__setattr__(poisoned, field, value)
    with open_(config) as index:
        stage = FirstStage(Catalogue(skills), index, Encoder(), None)
        good = [RetrieveQuery("1", 2), RetrieveQuery("4", 3, category=HOSTILE[0])]
        answers = search_isolated(stage, [good[0], poisoned, good[1]])
    assert isinstance(answers[1], UnsafeValue)
    assert answers[0].hits[0][0] == skills[1].id and [h for h, _ in answers[2].hits] == [HOSTILE[0]]


def test_route_plan_answers_an_unsafe_filter_422():
    from fastapi import HTTPException

    from skillrouter.serving.deployments import plan_route
    from skillrouter.serving.schemas import Filters, RouteRequest

    for bad in ("a\x00b", "a\x1bb", "a\nb"):  # past the schema, whatever it checks: plan_route refuses it too
        body = RouteRequest.model_construct(query="q", top_k=10, rerank=None, first_stage=None,
                                            filters=Filters.model_construct(category=["ok", bad], source=None))
        with pytest.raises(HTTPException, match="control character") as err:
            plan_route(body, "dense", False, 20)
        assert err.value.status_code == 422


# -- the admin writer ----------------------------------------------------------------------------------------------


class FakeEncoder:
    """A unit vector per text, the same for the same text (what the index verifies needs)."""

    def encode(self, texts, batch_size=None):
        rows = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).standard_normal(DIM)
                for t in texts]
        return np.stack([r / np.linalg.norm(r) for r in rows]).astype(np.float32)


@pytest.fixture
def writer(config) -> IndexWriter:
    """An IndexWriter over a run of 6 skills (one with a hostile id) with a published generation; its encoder is
    `FakeEncoder`."""
    skills = make_skills(5) + hostile_skills()[:1]
    corpus_path(config).parent.mkdir(parents=True)
    write_skills(skills, corpus_path(config))
    spec = encoder_spec(config.index)
    build_index(skills, config, embeddings=FakeEncoder().encode(skill_texts(skills, spec)[0]), log=lambda _: None)
    publish(generation_path(config), action="start")
    out = IndexWriter(config, log=lambda _: None)
    out.encoders[spec] = FakeEncoder()
    return out


def state(writer: IndexWriter) -> tuple:
    """What a change may alter: the corpus table's bytes, the generation, the index's rows and hashes."""
    with open_index(writer.config) as index:
        hashes = index.hashes()
    leftovers = sorted(p.name for p in corpus_path(writer.config).parent.iterdir() if p.name.startswith("."))
    return corpus_path(writer.config).read_bytes(), writer.generation(), hashes, leftovers


def record(skill_id: str, **fields) -> dict:
    return {"id": skill_id, "name": "a name", "description": "a description", "body": "a body", **fields}


BAD_CHANGES = [
    ("upsert", [record("ok/1", name="lone \ud800 surrogate")], "field 'name' is not valid UTF-8"),
    ("upsert", [record("ok/1", description="\udfff")], "field 'description' is not valid UTF-8"),
    ("upsert", [record("ok/1", body="body \ud83d")], "field 'body' is not valid UTF-8"),
    ("upsert", [record("ok/1", category="cat\ud800")], "field 'category' is not valid UTF-8"),
    ("upsert", [record("ok/1", metadata={"tags": ["fine", {"k": "\ud800"}]})], "'metadata.tags\\[1\\].k' is not"),
    ("upsert", [record("ok/1", metadata={"\ud800": 1})], "a key of metadata' is not valid UTF-8"),
    ("upsert", [record("p/id\ud800")], "field 'id' is not valid UTF-8"),
    ("upsert", [record("数" * 200)], "600 bytes of UTF-8, over the index's limit of 512"),  # 200 chars: API allows it
    ("upsert", [record("ctl/\x01")], "control character"),
    ("upsert", [record("nul/\x00")], "control character"),
    ("upsert", [record("ok/1", category="a\x00b")], "field 'category' holds the control character"),
    ("upsert", [record("ok/1", source="s\x1b")], "field 'source' holds the control character"),
    ("upsert", [record("ok/1", body="nul \x00 byte")], "binary_content"),
    ("upsert", [record("ok/1", body="")], "empty_body"),
    ("upsert", [record("ok/1"), record("ok/1")], "appears twice"),
    ("upsert", [record("ok/2"), record("ok/1", name="\ud800")], "skill 'ok/1'"),  # one bad record: nothing
    ("upsert", "not a list", "must be a list"),
    ("upsert", [], "no skill to upsert"),
    ("delete", ["p/id\ud800"], "lone surrogate"),
    ("delete", [HOSTILE[0], "nul\x00"], "control character"),
    ("delete", [HOSTILE[0], 7], "must be text"),
    ("delete", ["数" * 200], "over the index's limit"),
    ("delete", HOSTILE[0], "must be a list"),
    ("delete", [s.id for s in make_skills(5)] + [HOSTILE[0]], "would leave no skill"),
]


def test_admin_refuses_a_malformed_change_whole_and_touches_nothing(writer):
    before = state(writer)
    for action, arg, message in BAD_CHANGES:
        with pytest.raises(AdminError, match=message):
            getattr(writer, action)(arg)
        assert state(writer) == before, (action, arg)


def test_admin_upserts_and_deletes_hostile_ids_one_row_at_a_time(writer):
    base = {s.id for s in make_skills(5)} | {HOSTILE[0]}
    generation = writer.generation()
    out = writer.upsert([record(h, category=h) for h in HOSTILE[1:]])
    assert out["added"] == len(HOSTILE) - 1 and out["generation"] == generation + 1
    assert ids_in(writer.config) == base | set(HOSTILE)
    remaining = base | set(HOSTILE)
    for h in HOSTILE:
        out = writer.delete([h])
        remaining.discard(h)
        assert (out["deleted"], out["skills"]) == (1, len(remaining)), h
        assert ids_in(writer.config) == remaining == {s.id for s in writer._skills()}, h
    assert writer.generation() == generation + 1 + len(HOSTILE)


def test_a_failed_index_step_rolls_back_and_the_next_change_works(writer, monkeypatch):
    import skillrouter.serving.admin as admin

    real_sync = admin.sync_index
    before = state(writer)

    def broken(*args, **kwargs):
        raise SkillIndexError("injected: the index is unreachable")

    monkeypatch.setattr(admin, "sync_index", broken)
    with pytest.raises(SkillIndexError, match="injected"):
        writer.upsert([record("new/one")])
    with pytest.raises(SkillIndexError, match="injected"):
        writer.delete([HOSTILE[0]])
    assert state(writer) == before  # corpus bytes, generation, index rows: all as they were

    calls = []

    def half_done(skills, *args, **kwargs):  # the change lands in the index, then the step fails
        calls.append(len(skills))
        result = real_sync(skills, *args, **kwargs)
        if len(calls) == 1:
            raise SkillIndexError("injected: failed after writing")
        return result

    monkeypatch.setattr(admin, "sync_index", half_done)
    with pytest.raises(SkillIndexError, match="after writing"):
        writer.delete([HOSTILE[0], "team/skill-1"])
    assert calls == [4, 6] and state(writer) == before  # the second call synced the index back

    monkeypatch.setattr(admin, "sync_index", real_sync)
    out = writer.upsert([record("new/one")])
    assert out["added"] == 1 and out["generation"] == before[1] + 1
    assert "new/one" in ids_in(writer.config) and "new/one" in {s.id for s in writer._skills()}


def test_index_admin_answers_422_for_hostile_input_and_500_with_the_state_kept(writer, monkeypatch):
    import skillrouter.serving.admin as admin
    from skillrouter.serving.deployments import IndexAdmin

    deployment = IndexAdmin.func_or_class(writer.config)
    deployment.writer = writer
    before = state(writer)
    for request in ({"action": "upsert", "skills": [record("ok/1", name="\ud800")]},
                    {"action": "delete", "ids": ["a\x00"]}, {"action": "drop"}):
        out = asyncio.run(deployment.apply(request))
        assert out["status"] == 422 and state(writer) == before, request
    def disk_gone(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(admin, "sync_index", disk_gone)
    out = asyncio.run(deployment.apply({"action": "delete", "ids": [HOSTILE[0]]}))
    assert out["status"] == 500 and "OSError: disk gone" in out["error"]
    assert f"generation {before[1]} are unchanged" in out["error"] and state(writer) == before
