"""The index against a real Milvus server: PyPI's `milvus` 2.3.5 standalone, authorization on, reachable on
127.0.0.1 only (`skillrouter.testing.milvus_server`), one server for the session. Builds with their verify and
alias switch, `sync_index`, hostile ids and filter values, the token from the environment, HNSW, two replica
views sharing the collection while it is edited and rebuilt, and the Serve application with two retriever
replicas on the server under load. Each test uses its own alias on the shared server."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid

import numpy as np
import pytest

from skillrouter.config import PipelineConfig
from skillrouter.index import store
from skillrouter.index.build import build_index, open_index, sync_index
from skillrouter.index.store import HNSW_BUILD, SkillIndex, SkillIndexError
from skillrouter.serving.stages import close_replica, open_replica
from skillrouter.testing.milvus_server import MilvusServer, unsupported_reason
from test_hostile_ids import HOSTILE, UNSAFE, hostile_skills, refused_on_every_path
from test_index import make_skills, unit_rows


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """One Milvus standalone server for the session, in a temporary folder; its process group is killed at the end,
    also when a test fails (the supervisor also stops it if this process dies: see `milvus_server`)."""
    if (reason := unsupported_reason()) is not None and "not installed" not in reason:
        pytest.skip(reason)  # only where the bundled binary cannot run; a missing package fails below
    server = MilvusServer(tmp_path_factory.mktemp("milvus-server"), auth=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def config(milvus_server, tmp_path, monkeypatch) -> PipelineConfig:
    """A profile on the server, with its own alias there; the token in `MILVUS_TOKEN`, as a cluster job has it."""
    monkeypatch.setenv("MILVUS_TOKEN", milvus_server.token)
    cfg = PipelineConfig(run_dir=str(tmp_path / "run"))
    cfg.index.uri, cfg.index.collection = milvus_server.uri, f"skills_{uuid.uuid4().hex[:8]}"
    return cfg


def ids_in(config) -> set[str]:
    with open_index(config) as index:
        return set(index.hashes())


def test_server_is_2_3_and_gets_escaped_literals(config, milvus_server):
    assert milvus_server.uri.startswith("http://127.0.0.1:")
    with open_index(config) as index:
        assert index.client.get_server_version().startswith("v2.3.")
        assert index.bind is False  # 2.3 refuses `filter_params` templates: see store's docstring
    assert store.binds_values("v2.5.4") and store.binds_values("2.6.0") and not store.binds_values("v2.4.9")
    assert not store.binds_values("")


def test_token_is_read_from_the_environment(config, milvus_server, monkeypatch):
    build_index(make_skills(), config, embeddings=unit_rows(8), log=quiet)
    monkeypatch.delenv("MILVUS_TOKEN")
    with pytest.raises(SkillIndexError, match=f"cannot open the index at {milvus_server.uri}"):
        open_index(config)
    monkeypatch.setenv("MILVUS_TOKEN", "root:not-the-password")
    with pytest.raises(SkillIndexError, match="cannot open the index"):
        open_index(config)
    monkeypatch.setenv("TEAM_MILVUS", milvus_server.token)  # `index.token_env` names the variable
    config.index.token_env = "TEAM_MILVUS"
    with open_index(config) as index:
        assert index.count() == 8


def test_build_verify_switch_and_hnsw_from_the_profile(config):
    config.index.index_type = "HNSW"
    skills, vectors = make_skills(), unit_rows(8)
    summary = build_index(skills, config, embeddings=vectors, log=quiet)
    alias = config.index.collection
    assert (summary["version"], summary["previous"], summary["rows"]) == (f"{alias}_v1", None, 8)
    with open_index(config) as index:
        hits = index.search(vectors, k=3)
        assert [h[0][0] for h in hits] == [s.id for s in skills]
        assert all(abs(h[0][1] - 1) < 1e-5 for h in hits)
        assert index.hashes() == {s.id: s.content_hash for s in skills}
        info = index.info()
        described = index.client.describe_index(f"{alias}_v1", "vector")
    assert (info["index_type"], info["metric"], info["dim"]) == ("HNSW", "IP", 16)
    assert {k: int(described[k]) for k in HNSW_BUILD} == HNSW_BUILD
    assert [v["verified"] for v in info["versions"]] == [True]

    with open_index(config) as reader:  # a reader opened before the rebuild follows the alias by itself
        collapsed = np.repeat(vectors[:1], 8, axis=0)
        with pytest.raises(SkillIndexError, match=rf"collapsed.*'{alias}' still serves {alias}_v1"):
            build_index(skills, config, embeddings=collapsed, log=quiet)
        assert reader.live() == f"{alias}_v1" and [h[0][0] for h in reader.search(vectors, 1)] == [s.id for s in skills]
        with pytest.raises(SkillIndexError, match="has not passed verification"):
            reader.switch(f"{alias}_v2")
        moved = unit_rows(8, seed=5)
        summary = build_index(skills, config, embeddings=moved, log=quiet)
        assert (summary["version"], summary["previous"], summary["dropped"]) == (f"{alias}_v3", f"{alias}_v1",
                                                                                 [f"{alias}_v2"])
        assert reader.live() == f"{alias}_v3"
        assert [h[0][0] for h in reader.search(moved, 1)] == [s.id for s in skills]  # at once, through the alias
        assert reader.search(vectors[:1], 1, collection=f"{alias}_v1")[0][0][0] == skills[0].id  # rollback target
        assert reader.versions() == [1, 3]


def test_sync_upserts_changes_and_deletes_on_the_server(config):
    skills, vectors = make_skills(), unit_rows(8)
    build_index(skills, config, embeddings=vectors, log=quiet)
    edited = dataclasses.replace(skills[2], body="new steps")
    added = dataclasses.replace(skills[0], id="team/new", body="fresh")
    corpus = [s for s in skills if s.id != skills[5].id]
    corpus[2] = edited
    corpus.append(added)
    new_vectors = unit_rows(2, seed=7)
    summary = sync_index(corpus, config, embed=lambda texts: new_vectors[:len(texts)], log=quiet)
    assert {k: summary[k] for k in ("added", "changed", "deleted", "unchanged", "rows")} == \
        {"added": 1, "changed": 1, "deleted": 1, "unchanged": 6, "rows": 8}
    with open_index(config) as index:
        assert index.count() == 8 and index.hashes() == {s.id: s.content_hash for s in corpus}
        assert [h[0][0] for h in index.search(new_vectors, 1)] == ["team/new", edited.id]
        assert skills[5].id not in {i for h in index.search(vectors, 8) for i, _ in h}
    assert sync_index(corpus, config, embed=lambda texts: 1 / 0, log=quiet)["unchanged"] == 8  # nothing embedded


class Recording:
    """The client, with every request that reaches the server counted by method."""

    def __init__(self, client):
        self._client, self.calls = client, []

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls.append(name)
            return attr(*args, **kwargs)
        return call


def test_hostile_ids_and_values_match_exactly_themselves(config):
    skills = make_skills(4) + hostile_skills()
    vectors = unit_rows(len(skills))
    build_index(skills, config, embeddings=vectors, log=quiet)
    with open_index(config) as index:
        got = list(index.rows(["content_hash"], page=2))  # paged by id: every hostile id is a cursor once
        assert sorted(r["id"] for r in got) == sorted(s.id for s in skills)
        for row, h in enumerate(HOSTILE, start=4):
            for field in ("category", "source"):
                assert [i for i, _ in index.search(vectors[row:row + 1], len(skills), **{field: h})[0]] == [h]
            hits = index.search(vectors[:1], len(skills), category=[h, "a"])[0]
            assert {i for i, _ in hits} == {h} | {s.id for s in skills[:4] if s.category == "a"}

        index.client = Recording(index.client)
        before = index.count()
        for bad in UNSAFE:  # refused before any request: the server sees none of them
            index.client.calls.clear()
            refused_on_every_path(index, skills[0], bad)
            assert index.client.calls == [], repr(bad)
            assert index.count() == before

        remaining = {s.id for s in skills}
        for h in HOSTILE:  # one at a time: exactly that row goes, and the count says so at once
            index.delete([h])
            remaining.discard(h)
            assert index.count() == len(remaining) and set(index.hashes()) == remaining, h
        assert remaining == {s.id for s in skills[:4]}

    hostile = hostile_skills()  # the sync path: hostile ids that leave the corpus are deleted exactly
    sync_index(skills[:4] + hostile, config, embed=lambda texts: unit_rows(len(texts), seed=3), log=quiet)
    assert ids_in(config) == {s.id for s in skills}
    kept = skills[:4] + hostile[-3:]
    assert sync_index(kept, config, embed=lambda texts: 1 / 0, log=quiet)["deleted"] == len(HOSTILE) - 3
    assert ids_in(config) == {s.id for s in kept}


def test_two_replica_views_see_edits_and_a_rebuild_as_soon_as_they_return(config):
    """Two retriever views (`open_replica`, as two replicas open the server) search in threads while the live
    version takes upserts and a delete and is then rebuilt: no search fails, and each change is seen by both views
    in the first search after the write returns."""
    config.index.index_type = "HNSW"
    config.serving.memory_search = False  # a server is searched by the replica itself anyway
    skills, vectors = make_skills(), unit_rows(8)
    build_index(skills, config, embeddings=vectors, log=quiet)
    views = [open_replica(config) for _ in range(2)]
    assert [collection for _, collection in views] == [None, None]  # no pinned copy: they follow the alias
    failures, searches, stop = [], [0, 0], threading.Event()

    def hammer(n: int, index: SkillIndex) -> None:
        while not stop.is_set():
            try:
                assert len(index.search(vectors, 3)) == 8
                searches[n] += 1
            except Exception as err:  # noqa: BLE001 - counted, and shown by the assertion below
                failures.append(repr(err))

    threads = [threading.Thread(target=hammer, args=(n, view)) for n, (view, _) in enumerate(views)]
    for t in threads:
        t.start()
    try:
        with open_index(config) as writer:
            for n in range(5):
                new = dataclasses.replace(skills[0], id=f"team/added-{n}", body=f"added {n}")
                vector = unit_rows(1, seed=100 + n)
                started = time.perf_counter()
                writer.upsert([new], vector)
                assert time.perf_counter() - started < 5
                for view, _ in views:
                    assert view.search(vector, 1)[0][0][0] == new.id
            writer.delete(["team/added-0"])
            for view, _ in views:
                assert "team/added-0" not in {i for h in view.search(unit_rows(1, seed=100), 12) for i, _ in h}
                assert view.count() == 12
        moved = unit_rows(8, seed=9)
        build_index(skills, config, embeddings=moved, log=quiet)
        for view, _ in views:
            assert [h[0][0] for h in view.search(moved, 1)] == [s.id for s in skills]
            assert view.count() == 8
    finally:
        stop.set()
        for t in threads:
            t.join()
        for view, _ in views:
            close_replica(view)
    assert failures == [] and min(searches) > 0, failures[:3]


# -- the Serve application on the server ----------------------------------------------------------------------

MILVUS_ENV, ADMIN_ENV = "SKILLROUTER_TEST_MILVUS_TOKEN", "SKILLROUTER_TEST_ADMIN_TOKEN"
ADMIN_TOKEN = "server-admin-token"
ZORBLAX = {"id": "kitchen/zorblax-fermentation", "name": "zorblax-fermentation",
           "description": "Ferment zorblax pickles in brine.",
           "body": "Submerge the zorblax in a 3% brine, weigh them down, burp the jar daily for a week.",
           "category": "kitchen"}


@pytest.fixture
def served_on_server(ray_cluster, milvus_server, tmp_path, monkeypatch):
    """The Serve application (MiniLM, no reranker, a dozen skills) with two retriever replicas searching the
    server (`serving.memory_search=false`, HNSW): both tokens are in this process' environment only, under
    variables no Ray worker has, so the replicas get them from the application or not at all."""
    import os

    import ray

    from conftest import served_sample_config
    from skillrouter.serving.app import start, stop

    @ray.remote(num_cpus=0)
    def worker_env() -> list:
        return [os.environ.get(name) for name in (MILVUS_ENV, ADMIN_ENV)]

    config, skills = served_sample_config(tmp_path, tmp_path / "no-reranker", 12)
    config.index.uri, config.index.collection = milvus_server.uri, f"serve_{uuid.uuid4().hex[:8]}"
    config.index.index_type = "HNSW"
    config.index.token_env, config.serving.admin_token_env = MILVUS_ENV, ADMIN_ENV
    monkeypatch.setenv(MILVUS_ENV, milvus_server.token)
    monkeypatch.setenv(ADMIN_ENV, ADMIN_TOKEN)
    assert ray.get(worker_env.remote()) == [None, None]  # a worker does not inherit this process' environment
    s = config.serving
    # reload_wait_s: a request waits for its replica to load a new generation rather than being answered from the
    # previous one (with 0, the first request after an admin change answers from the old generation)
    s.memory_search, s.rerank, s.reload_wait_s, s.max_in_flight = False, False, 30, 8
    s.retriever.num_replicas = 2
    url = start(config, log=quiet)
    try:
        yield url, config, skills
    finally:
        stop()


def test_two_retriever_replicas_on_the_server_fail_no_request_and_read_their_writes(served_on_server):
    """Two Retriever replicas share the server's collection under a bounded load (3 clients, 8 s at most after
    the changes, dense, BM25 and hybrid) while a skill is added and another edited through `POST /v1/index`, and
    the index is rebuilt (a new version, then the alias switch): no request fails, and each change is the dense
    top-1 in the first requests sent after its admin call returns (read-your-writes: the store's `_settle`)."""
    from ray import serve

    from test_serving import call

    url, config, skills = served_on_server
    alias = config.index.collection
    status = serve.status().applications["skillrouter"].deployments["Retriever"]
    assert status.replica_states == {"RUNNING": 2}
    ready = call(url, "GET", "/readyz")[2]
    assert (ready["status"], ready["index"], ready["skills"]) == ("ready", f"{alias}_v1", 12)  # asked the server

    statuses, details, generations, stop = [], [], set(), threading.Event()

    def client(n: int) -> None:
        for i in range(400):  # bounded, whatever happens: 400 requests or the stop
            if stop.is_set():
                return
            skill = skills[(n + i) % len(skills)]
            status, _, answer = call(url, "POST", "/v1/route", {"query": skill.description, "rerank": False,
                                                                "first_stage": ("dense", "bm25", "hybrid")[i % 3],
                                                                "top_k": 3}, timeout=60)
            statuses.append(status)
            if status == 200:
                generations.add(answer["index_generation"])
            else:
                details.append((status, answer))

    def admin(body: dict) -> dict:
        status, _, done = call(url, "POST", "/v1/index", body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                               timeout=300)
        assert status == 200, done
        return done

    def first_dense(query: str, generation: int, times: int = 4) -> list[dict]:
        """The top answer of `times` dense routes sent one after the other (Serve spreads them over the replicas),
        each from `generation` or later."""
        tops = []
        for _ in range(times):
            status, _, answer = call(url, "POST", "/v1/route", {"query": query, "first_stage": "dense",
                                                                "rerank": False, "top_k": 3})
            assert status == 200 and answer["index_generation"] >= generation, answer
            tops.append(answer["results"][0])
        return tops

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        added = admin({"action": "upsert", "skills": [ZORBLAX]})
        assert (added["added"], added["skills"]) == (1, 13)
        assert {t["skill_id"] for t in first_dense("how do I ferment zorblax pickles", added["generation"])} == \
            {ZORBLAX["id"]}

        target = skills[4]
        edit = {"id": target.id, "name": target.name, "category": target.category,
                "description": "Tune the glimmerwick strings of a quantum harp.",
                "body": "Loosen each glimmerwick string, hum the reference pitch, tighten until the harp glows."}
        edited = admin({"action": "upsert", "skills": [edit]})
        assert (edited["changed"], edited["skills"]) == (1, 13)
        tops = first_dense("tune the glimmerwick strings of my quantum harp", edited["generation"])
        assert {(t["skill_id"], t["description"]) for t in tops} == {(target.id, edit["description"])}

        rebuilt = admin({"action": "rebuild"})
        assert rebuilt["version"] == f"{alias}_v2"
        assert {t["skill_id"] for t in first_dense("ferment zorblax pickles", rebuilt["generation"])} == \
            {ZORBLAX["id"]}
        assert call(url, "GET", "/readyz")[2]["index"] == f"{alias}_v2"
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert len(statuses) >= 30 and set(statuses) == {200}, \
        ({s: statuses.count(s) for s in set(statuses)}, details[:3])
    assert len(generations) >= 3  # answered from the first generation, the edits' and the rebuild's
