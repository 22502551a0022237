"""The serving half: the HTTP API's contract, its errors and auth, index changes and alias switches under load,
admission control and metrics, against one real Serve application on 127.0.0.1 (MiniLM encoder, tiny Qwen3
reranker, a dozen skills, two retriever replicas), plus the pieces that need no Ray."""

import asyncio
import http.client
import json
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

from conftest import served_sample_config
from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import read_skills, write_skills
from skillrouter.corpus.skill import Skill
from skillrouter.serving.generations import Generations, publish, read_generation

TOKEN = "s3cret-admin-token"
NEW_SKILL = {"id": "kitchen/zorblax-fermentation", "name": "zorblax-fermentation",
             "description": "Ferment zorblax pickles in brine.",
             "body": "Submerge the zorblax in a 3% brine, weigh them down, burp the jar daily for a week.",
             "category": "kitchen"}


# -- pieces without Ray ---------------------------------------------------------------------------------------


def test_generations_reload_on_publish_and_keep_serving_on_failure(tmp_path):
    path = tmp_path / "generation.json"
    loads, closed = [], []
    fail = {"next": False}

    def load(previous):
        if fail["next"]:
            raise RuntimeError("broken copy")
        loads.append(previous)
        return f"state{len(loads)}"

    async def scenario():
        gens = Generations(path, load, close=closed.append, wait_s=5)
        assert gens.current == "state1" and gens.generation == 0 and loads == [None]
        async with gens.use() as (state, generation):
            assert (state, generation) == ("state1", 0)
            assert publish(path, action="test") == 1
            async with gens.use() as (newer, generation):  # a new request waits for the new generation
                assert (newer, generation) == ("state2", 1) and loads[-1] == "state1"
            assert closed == []  # the old state is still in use by the outer request
        assert closed == ["state1"]
        fail["next"] = True
        publish(path)
        async with gens.use() as (state, generation):  # the load fails: the previous state keeps serving
            assert (state, generation) == ("state2", 1)
        fail["next"] = False
        async with gens.use() as (state, _):  # retried only after a pause
            assert state == "state2"

    asyncio.run(scenario())
    assert read_generation(path) == 2 and read_generation(tmp_path / "absent.json") == 0


def test_rerank_order_keeps_the_first_stage_tail():
    from skillrouter.retrieval.rerank import rerank_order

    hits = [(s, 1.0, s, "", None) for s in "abcde"]
    ordered = rerank_order(hits, {"a": 0.1, "b": 0.9, "c": 0.5}, retrieve_k=4)
    assert [h[0] for h in ordered] == ["b", "c", "a", "d", "e"]  # d: in the head but unscored; e: the tail
    assert rerank_order(hits, {}, retrieve_k=4) == hits


def test_route_plan():
    from fastapi import HTTPException

    from skillrouter.serving.deployments import plan_route
    from skillrouter.serving.schemas import RouteRequest

    query, rerank = plan_route(RouteRequest(query=" q ", top_k=5), "hybrid", True, 20)
    assert (query.text, query.k, query.first_stage, rerank) == ("q", 20, "hybrid", True)
    query, rerank = plan_route(RouteRequest(query="q", top_k=30, first_stage="bm25",
                                            filters={"category": ["a"], "source": "s"}), "dense", True, 20)
    assert (query.k, query.first_stage, query.category, query.source, rerank) == (30, "bm25", ["a"], "s", True)
    query, rerank = plan_route(RouteRequest(query="q", top_k=5), "dense", False, 20)
    assert (query.k, rerank) == (5, False)  # no reranker: first stage only, unless asked for
    with pytest.raises(HTTPException, match="runs no reranker") as err:
        plan_route(RouteRequest(query="q", rerank=True), "dense", False, 20)
    assert err.value.status_code == 400


def test_first_stage_filters_and_fusion(tmp_path):
    from skillrouter.index.build import build_index
    from skillrouter.retrieval.bm25 import build_bm25
    from skillrouter.retrieval.filters import Catalogue
    from skillrouter.retrieval.first_stage import RetrieveQuery
    from skillrouter.retrieval.fusion import Fusion
    from skillrouter.serving.stages import FirstStage

    skills = [Skill(id=f"s{i}", name=f"skill {i}", description=f"about {w}", body=f"{w} steps and {w} tips",
                    category="ab"[i % 2], source="x" if i < 3 else "y")
              for i, w in enumerate(["pdf", "excel", "git", "docker", "kafka", "pdf excel"])]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(skills), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    config = PipelineConfig(run_dir=str(tmp_path))
    build_index(skills, config, embeddings=vectors, log=lambda _: None)

    class Encoder:  # queries embed as the vector of the skill named in them
        def encode_queries(self, texts):
            return np.stack([vectors[int(t.split()[-1])] for t in texts])

    from skillrouter.index.build import open_index

    with open_index(config) as index:
        catalogue = Catalogue(skills)
        bm25 = build_bm25(skills, config.bm25)
        stage = FirstStage(catalogue, index, Encoder(), bm25, Fusion(depth=6))
        dense, sparse, hybrid, filtered, both = stage.search([
            RetrieveQuery("like 3", 2, "dense"), RetrieveQuery("excel", 3, "bm25"),
            RetrieveQuery("excel 3", 6, "hybrid"), RetrieveQuery("pdf", 5, "bm25", category="a"),
            RetrieveQuery("pdf 0", 5, "dense", category=["a", "b"], source="x")])
    assert [s for s, _ in dense.hits] == ["s3", dense.hits[1][0]] and dense.hits[0][1] == pytest.approx(1.0)
    assert [s for s, _ in sparse.hits][:2] == ["s1", "s5"] and len(sparse.hits) == 3
    assert {s for s, _ in hybrid.hits} == {s.id for s in skills} and hybrid.hits[0][0] in ("s1", "s3")
    assert {s for s, _ in filtered.hits} == {"s0", "s2", "s4"}  # category a only, masked before top-k
    assert {s for s, _ in both.hits} == {"s0", "s1", "s2"} and both.hits[0][0] == "s0"
    assert dense.embed_ms >= 0 and dense.search_ms > 0


def test_pinned_vectors_rank_as_the_index_does(tmp_path):
    """A replica's in-memory copy of its pinned Lite version answers like Milvus: same ids, same order, same
    cosines, under every filter; an id its catalogue lacks is never an answer."""
    from skillrouter.index.build import build_index, open_index
    from skillrouter.retrieval.dense import VectorSearch
    from skillrouter.retrieval.filters import Catalogue

    rng = np.random.default_rng(1)
    skills = [Skill(id=f"s{i:02d}", name=f"skill {i}", description="d", body="b", category="abc"[i % 3],
                    source="xy"[i % 2]) for i in range(40)]
    vectors = rng.standard_normal((40, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    config = PipelineConfig(run_dir=str(tmp_path))
    build_index(skills, config, embeddings=vectors, log=lambda _: None)
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    with open_index(config) as index:
        pinned = VectorSearch(*index.vectors(), Catalogue(skills))
        assert sorted(pinned.ids) == [s.id for s in skills]
        for filters in ({}, {"category": "a"}, {"category": ["a", "b"], "source": "x"}, {"source": ["y"]}):
            expected = index.search(queries, 7, **filters)
            got = pinned.search(queries, 7, **filters)
            for want, have in zip(expected, got):
                assert [i for i, _ in have] == [i for i, _ in want], filters
                assert [d for _, d in have] == pytest.approx([d for _, d in want], abs=1e-5)
        partial = VectorSearch(*index.vectors(), Catalogue(skills[1:]))
        assert all("s00" not in [i for i, _ in hits] for hits in partial.search(vectors[:1], 40))
        assert len(partial.search(vectors[:1], 40)[0]) == 39


def test_replicas_get_the_tokens_of_the_builders_environment(monkeypatch):
    """A replica is a Ray worker, which never sees the environment of the process building the app: the tokens go
    in the deployment's runtime env, beside the job's own, unless the job's runtime env already carries them.
    (`test_milvus_server` runs the application on a server with the tokens in the driver's environment only.)"""
    import ray

    from skillrouter.serving.app import deployment_options, with_secrets

    job = {"working_dir": "local:///srv/app", "env_vars": {"PYTHONPATH": "platform"}}

    class Context:
        runtime_env = job

    def runtime_env(names: list[str]) -> dict | None:
        options = with_secrets(deployment_options(PipelineConfig().serving.retriever), names)
        return options["ray_actor_options"].get("runtime_env")

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: Context())
    monkeypatch.setenv("T_MILVUS", "root:secret")
    monkeypatch.delenv("T_UNSET", raising=False)
    assert runtime_env(["T_MILVUS", "T_UNSET"]) == {
        "working_dir": "local:///srv/app", "env_vars": {"PYTHONPATH": "platform", "T_MILVUS": "root:secret"}}
    assert job["env_vars"] == {"PYTHONPATH": "platform"}  # the job's own is not edited
    job["env_vars"]["T_MILVUS"] = "root:secret"  # deployed with the secrets in the application's runtime env
    assert runtime_env(["T_MILVUS"]) is None
    monkeypatch.delenv("T_MILVUS")
    job["env_vars"].pop("T_MILVUS")
    assert runtime_env(["T_MILVUS"]) is None  # nothing to add


def test_serve_config_files_are_valid(repo_root):
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from skillrouter.config import load_config
    from skillrouter.serving.app import AppArgs

    for name in ("local", "cluster"):
        schema = ServeDeploySchema.model_validate(yaml.safe_load((repo_root / "serve" / f"{name}.yaml").read_text()))
        (app,) = schema.applications
        assert app.import_path == "serve.app:app"
        assert {d.name for d in app.deployments} == {"Ingress", "Retriever", "Reranker", "IndexAdmin"}
        args = AppArgs.model_validate(app.args)
        overrides = args.overrides.split() if isinstance(args.overrides, str) else args.overrides
        load_config(repo_root / args.config, overrides)
        admin = next(d for d in app.deployments if d.name == "IndexAdmin")
        assert admin.num_replicas == 1  # the one writer


# -- a real Serve application -----------------------------------------------------------------------------------


def test_cli_smoke_routes_the_examples_over_http(ray_cluster, repo_root, tmp_path, capsys):
    """`skillrouter serve --smoke` (`serve_and_route`): start, route the profile's examples, stop. It runs before
    the module's application starts: it shuts Serve down when done."""
    from skillrouter.cli import main

    picked = {s.category: s for s in read_skills("bundled")}
    write_skills(list(picked.values())[:6], tmp_path / "skills.parquet")
    assert main(["serve", "--smoke", "--config", str(repo_root / "configs/minilm.yaml"), f"run_dir={tmp_path}",
                 f"corpus.sources=[{tmp_path / 'skills.parquet'}]", f"mining.cache_dir={tmp_path / 'cache'}",
                 "index.max_length=64", "examples=[merge these PDF files, tune a slow SQL query]"]) == 0
    out = capsys.readouterr().out
    assert "> merge these PDF files" in out and "> tune a slow SQL query" in out and out.count("   1. ") == 2
    assert "first stage bm25, reranked False" in out and out.rstrip().endswith("serve: stopped")




def call(url: str, method: str, path: str, body=None, *, raw: bytes | None = None, headers: dict | None = None,
         chunked: bool = False, timeout: float = 60):
    """(status, lower-cased headers, decoded JSON or text) of one HTTP request."""
    host = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=timeout)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {**({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})}
    if chunked:
        conn.request(method, path, body=iter([data[i:i + 8192] for i in range(0, len(data), 8192)]), headers=sent,
                     encode_chunked=True)
    else:
        conn.request(method, path, body=data, headers=sent)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    try:
        decoded = json.loads(payload)
    except ValueError:
        decoded = payload.decode(errors="replace")
    return response.status, {k.lower(): v for k, v in response.getheaders()}, decoded


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory, tiny_qwen3_reranker):
    """The application over 12 bundled skills of 12 categories: MiniLM encoder (index built at start), the tiny
    Qwen3 reranker, two retriever replicas, at most 4 route requests in flight."""
    from skillrouter.serving.app import start, stop

    config, skills = served_sample_config(tmp_path_factory.mktemp("serving"), tiny_qwen3_reranker, 12)
    s = config.serving
    s.admin_token, s.reload_wait_s = TOKEN, 30
    s.retriever.num_replicas = 2
    url = start(config, log=lambda _: None)
    yield url, config, skills
    stop()


def route(url, body, **kw):
    return call(url, "POST", "/v1/route", body, **kw)


def test_route_answers_with_both_scores_timings_and_a_request_id(served):
    url, _, skills = served
    target = skills[3]
    status, headers, answer = route(url, {"query": f"{target.description} {target.name}", "top_k": 5,
                                          "first_stage": "hybrid"}, headers={"X-Request-ID": "req-123"})
    assert status == 200, answer
    assert headers["x-request-id"] == "req-123" == answer["request_id"]
    assert answer["first_stage"] == "hybrid" and answer["reranked"] is True and len(answer["results"]) == 5
    assert [r["rank"] for r in answer["results"]] == [1, 2, 3, 4, 5]
    assert all(isinstance(r["retrieval_score"], float) and isinstance(r["rerank_score"], float)
               for r in answer["results"])
    scores = [r["rerank_score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True)  # the reranked order (the tiny reranker's weights are random)
    t = answer["timings_ms"]
    assert set(t) == {"embed", "search", "rerank", "total"} and t["embed"] > 0 and t["rerank"] > 0
    assert t["total"] >= t["rerank"]
    status, headers, answer = route(url, {"query": target.description, "rerank": False, "first_stage": "bm25"})
    assert status == 200 and headers["x-request-id"] == answer["request_id"]  # Serve made one up
    assert answer["reranked"] is False and answer["timings_ms"]["embed"] == 0 and answer["timings_ms"]["rerank"] == 0
    assert answer["results"][0]["skill_id"] == target.id and answer["results"][0]["rerank_score"] is None
    assert len(answer["results"]) == 10


def test_first_stages_and_filters(served):
    url, _, skills = served
    target = skills[5]
    for first in ("dense", "bm25", "hybrid"):
        status, _, answer = route(url, {"query": target.text()[:500], "first_stage": first, "rerank": False})
        assert status == 200 and answer["results"][0]["skill_id"] == target.id, (first, answer)
    for first in ("dense", "bm25", "hybrid"):
        status, _, answer = route(url, {"query": "anything at all", "first_stage": first, "top_k": 10,
                                        "filters": {"category": [skills[0].category, skills[1].category]}})
        assert status == 200 and {r["category"] for r in answer["results"]} == {skills[0].category,
                                                                                 skills[1].category}, first
    status, _, answer = route(url, {"query": "x", "filters": {"category": "no-such-category"}})
    assert status == 200 and answer["results"] == []
    status, _, answer = route(url, {"query": "x", "filters": {"source": "no-such-source"}, "first_stage": "dense"})
    assert status == 200 and answer["results"] == []


@pytest.mark.parametrize("body, status, needle", [
    ({"query": ""}, 422, "string_too_short"),
    ({"query": "   \n "}, 422, "string_too_short"),
    ({"query": "x" * 2001}, 422, "string_too_long"),
    ({"query": 42}, 422, "string_type"),
    ({}, 422, "missing"),
    ({"query": "ok", "top_k": 0}, 422, "greater_than_equal"),
    ({"query": "ok", "top_k": 51}, 422, "less_than_equal"),
    ({"query": "ok", "top_k": "5"}, 422, "int_type"),
    ({"query": "ok", "rerank": "yes"}, 422, "bool_type"),
    ({"query": "ok", "first_stage": "sparse"}, 422, "literal_error"),
    ({"query": "ok", "filters": {"categroy": "x"}}, 422, "extra_forbidden"),
    ({"query": "ok", "filters": {"category": []}}, 422, "too_short"),
    ({"query": "ok", "topk": 3}, 422, "extra_forbidden"),
    (["ok"], 422, "model_attributes_type"),
])
def test_bad_route_requests_are_4xx_with_a_message(served, body, status, needle):
    got, headers, answer = route(served[0], body)
    assert got == status and needle in json.dumps(answer["detail"]) and answer["request_id"] == headers["x-request-id"]
    assert "x" * 100 not in json.dumps(answer)  # the input is not echoed back


def test_malformed_oversized_and_misrouted_requests(served):
    url = served[0]
    status, _, answer = route(url, None, raw=b'{"query": "unterminated')
    assert status == 400 and answer["detail"].startswith("malformed JSON")
    big = json.dumps({"query": "x" * 100_000}).encode()
    for chunked in (False, True):
        status, _, answer = route(url, None, raw=big, chunked=chunked)
        assert status == 413 and "over 65,536 bytes" in answer["detail"], chunked
    status, _, answer = route(url, None, raw=b"query=hello", headers={"Content-Type": "text/plain"})
    assert 400 <= status < 500
    assert call(url, "GET", "/v1/route")[0] == 405
    assert call(url, "GET", "/v2/nothing")[0] == 404


def test_skills_by_id(served):
    url, _, skills = served
    status, _, skill = call(url, "GET", f"/v1/skills/{skills[0].id}")
    assert status == 200 and skill["id"] == skills[0].id and skill["body"] == skills[0].body  # ids hold slashes
    assert skill["content_hash"] == skills[0].content_hash
    status, _, answer = call(url, "GET", "/v1/skills/no/such/skill")
    assert status == 404 and "no/such/skill" in answer["detail"]


def test_health_readiness_and_openapi(served):
    url, _, skills = served
    assert call(url, "GET", "/healthz")[2] == {"status": "ok"}
    status, _, ready = call(url, "GET", "/readyz")
    assert status == 200 and ready["status"] == "ready" and ready["skills"] >= len(skills)
    assert ready["encoder"] == "minilm" and ready["index"].startswith("skills_v") and ready["reranker"]
    status, _, schema = call(url, "GET", "/openapi.json")
    assert status == 200
    assert {"/v1/route", "/v1/skills/{skill_id}", "/v1/index", "/healthz", "/readyz"} <= set(schema["paths"])
    request = schema["components"]["schemas"]["RouteRequest"]["properties"]
    assert request["query"]["maxLength"] == 2000 and request["top_k"]["maximum"] == 50
    assert schema["components"]["securitySchemes"]["AdminToken"]["scheme"] == "bearer"
    assert {"401", "403", "422"} <= set(schema["paths"]["/v1/index"]["post"]["responses"])


def admin(url, body, token: str | None = TOKEN, scheme="Bearer"):
    return call(url, "POST", "/v1/index", body, headers={"Authorization": f"{scheme} {token}"} if token else {})


def test_admin_requires_the_bearer_token(served):
    url = served[0]
    status, headers, answer = admin(url, {"action": "rebuild"}, token=None)
    assert status == 401 and headers["www-authenticate"] == "Bearer" and "Bearer" in answer["detail"]
    assert admin(url, {"action": "rebuild"}, scheme="Basic")[0] == 401
    assert admin(url, {"action": "rebuild"}, token="wrong")[0] == 403
    assert admin(url, {"action": "nuke"}, token=None)[0] == 401  # auth before the body is looked at
    status, _, answer = admin(url, {"action": "nuke"})
    assert status == 422 and "nuke" in json.dumps(answer["detail"])
    assert admin(url, {"action": "upsert", "skills": []})[0] == 422
    assert admin(url, {"action": "delete"})[0] == 422


def test_upsert_is_routable_at_once_then_delete(served):
    url, _, _ = served
    status, _, bad = admin(url, {"action": "upsert", "skills": [{**NEW_SKILL, "body": "  "}]})
    assert status == 422 and "empty_body" in bad["detail"]
    status, _, done = admin(url, {"action": "upsert", "skills": [NEW_SKILL]})
    assert status == 200 and done["added"] == 1 and done["skills"] == 13, done
    for i in range(6):  # both retriever replicas answer from the new generation
        first = ("dense", "bm25", "hybrid")[i % 3]
        status, _, answer = route(url, {"query": "how do I ferment zorblax pickles in brine", "first_stage": first,
                                        "rerank": False})
        assert status == 200 and answer["index_generation"] >= done["generation"]
        assert answer["results"][0]["skill_id"] == NEW_SKILL["id"] or first == "hybrid" and NEW_SKILL["id"] in \
            [r["skill_id"] for r in answer["results"][:3]], (first, answer["results"][:3])
    status, _, skill = call(url, "GET", f"/v1/skills/{NEW_SKILL['id']}")
    assert status == 200 and skill["source"] == "api" and skill["category"] == "kitchen"
    status, _, answer = route(url, {"query": "zorblax", "filters": {"category": "kitchen"}, "first_stage": "dense"})
    assert [r["skill_id"] for r in answer["results"]] == [NEW_SKILL["id"]]
    status, _, done = admin(url, {"action": "delete", "ids": [NEW_SKILL["id"], "never/was"]})
    assert status == 200 and done["deleted"] == 1 and done["not_found"] == ["never/was"] and done["skills"] == 12
    assert call(url, "GET", f"/v1/skills/{NEW_SKILL['id']}")[0] == 404
    status, _, answer = route(url, {"query": "ferment zorblax pickles", "top_k": 50, "first_stage": "bm25"})
    assert NEW_SKILL["id"] not in {r["skill_id"] for r in answer["results"]}


def test_hostile_ids_and_filters_over_http(served):
    """Issue 17: an id built to rewrite the delete expression deletes itself only; malformed changes are 422 and
    publish nothing; a filter with a control character is its own request's 422 while concurrent ones are answered."""
    url, _, skills = served
    before = call(url, "GET", "/readyz")[2]
    hostile = [f"x'] or id not in ['{skills[0].id}", "p/back\\slash"]
    status, _, done = admin(url, {"action": "upsert", "skills": [{**NEW_SKILL, "id": h} for h in hostile]})
    assert status == 200 and done["added"] == 2 and done["skills"] == before["skills"] + 2, done
    status, _, done = admin(url, {"action": "delete", "ids": hostile})
    assert status == 200 and done["deleted"] == 2 and done["skills"] == before["skills"], done
    for bad in ({**NEW_SKILL, "id": "数" * 200}, {**NEW_SKILL, "name": "lone \ud800"},
                {**NEW_SKILL, "category": "a\u0000b"}):
        status, _, answer = admin(url, {"action": "upsert", "skills": [bad]})
        assert status == 422, answer
    after = call(url, "GET", "/readyz")[2]
    assert (after["skills"], after["generation"]) == (before["skills"], before["generation"] + 2)

    good = {"query": skills[1].description, "first_stage": "dense", "rerank": False, "top_k": 3,
            "filters": {"category": [skills[1].category, "nothing"]}}
    bodies = [{**good, "filters": {"category": "a\u0001b"}}] + [good] * 3  # at most max_in_flight (4) at once
    statuses = [None] * len(bodies)

    def send(i: int):
        statuses[i] = route(url, bodies[i])[0]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert statuses == [422, 200, 200, 200]


def test_rebuild_and_alias_switch_under_load_fail_no_request(served):
    url, _, skills = served
    before = call(url, "GET", "/readyz")[2]
    statuses, details, generations, stop = [], [], set(), threading.Event()

    def client(n: int):
        for i in range(150):  # bounded, whatever happens
            if stop.is_set():
                return
            status, _, answer = route(url, {"query": skills[(n + i) % len(skills)].description,
                                            "first_stage": ("dense", "bm25", "hybrid")[i % 3], "top_k": 3})
            statuses.append(status)
            if status != 200:
                details.append(answer.get("detail"))
            if status == 200:
                generations.add(answer["index_generation"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]  # under max_in_flight (4)
    for t in threads:
        t.start()
    versions = []
    try:
        time.sleep(1)
        for _ in range(2):
            status, _, done = admin(url, {"action": "rebuild"})
            assert status == 200, done
            versions.append(done["version"])
            time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert len(statuses) >= 20 and set(statuses) == {200}, ({s: statuses.count(s) for s in set(statuses)}, details[:3])
    assert len(generations) >= 2  # answers came from the generations before and after the switches
    after = call(url, "GET", "/readyz")[2]
    assert versions[-1] == after["index"] != before["index"] and after["generation"] == before["generation"] + 2


def test_overload_is_503_with_retry_after(served):
    url, _, skills = served
    barrier, results = threading.Barrier(24), []

    def burst(i: int):
        barrier.wait()
        status, headers, answer = route(url, {"query": skills[i % len(skills)].text()[:1500], "top_k": 20})
        results.append((status, headers.get("retry-after"), answer.get("detail")))

    threads = [threading.Thread(target=burst, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    refused = [r for r in results if r[0] == 503]
    assert len(results) == 24 and {r[0] for r in results} <= {200, 503}
    assert refused and all(r[1] == "1" and "serving.max_in_flight" in r[2] for r in refused)


def test_metrics_are_exported_through_ray(served):
    """Ray's metrics agent exports the custom series (and Serve's own) at the node's metrics port; it reports
    every few seconds, hence the bounded wait."""
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    wanted = ['ray_skillrouter_stage_latency_ms_bucket{', 'stage="embed"', 'stage="search"', 'stage="rerank"',
              'stage="total"', "ray_skillrouter_requests_total",
              "ray_skillrouter_index_reloads_total", "ray_skillrouter_index_generation",
              "ray_skillrouter_batch_size_bucket", "ray_serve_num_http_requests_total"]

    def series(text: str, name: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith(name + "{")]

    def unauthorised(text: str) -> bool:  # the admin test's 401s
        return any('endpoint="/v1/index"' in line and 'status="401"' in line
                   for line in series(text, "ray_skillrouter_requests_total"))

    def refused_in_proxy(text: str) -> bool:  # the overload test's 503s, made in the proxy before any replica
        return any('reason="in_flight"' in line and float(line.rsplit(" ", 1)[1]) >= 1
                   for line in series(text, "ray_skillrouter_proxy_rejected_total"))

    deadline, text = time.monotonic() + 90, ""
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        if all(w in text for w in wanted) and unauthorised(text) and refused_in_proxy(text):
            break
        time.sleep(2)
    assert [w for w in wanted if w not in text] == []
    assert unauthorised(text), series(text, "ray_skillrouter_requests_total")
    assert refused_in_proxy(text), series(text, "ray_skillrouter_proxy_rejected_total")
