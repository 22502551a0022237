"""The endpoints other tools speak, against one real Serve application on 127.0.0.1 (MiniLM encoder, the tiny Qwen3
reranker, eight bundled skills): OpenAI's /v1/embeddings (with the `openai` client), /v1/rerank, MCP over streamable
HTTP at /mcp (with the SDK's own client), and `skillrouter.client` (sync and async)."""

import asyncio
import base64
import http.client
import json
import re
import urllib.parse

import numpy as np
import pytest

from conftest import served_sample_config


def call(url: str, path: str, body=None, *, raw: bytes | None = None, method: str = "POST",
         headers: dict | None = None):
    """(status, lower-cased headers, decoded JSON or text) of one request."""
    host = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=120)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    try:
        decoded = json.loads(payload or b"null")
    except ValueError:
        decoded = payload.decode(errors="replace")
    return response.status, {k.lower(): v for k, v in response.getheaders()}, decoded


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory, tiny_qwen3_reranker):
    from skillrouter.serving.app import start, stop

    config, skills = served_sample_config(tmp_path_factory.mktemp("compat"), tiny_qwen3_reranker, 8)
    # fp32: the scores below are compared with a reference to 1e-4; bf16 rounds by batch (its own test covers it)
    config.reranker.inference_dtype = "float32"
    url = start(config, log=lambda _: None)
    yield url, config, skills
    stop()


@pytest.fixture(scope="module")
def encoder(served):
    from skillrouter.models.encoder import Encoder, EncoderSpec

    return Encoder.load(EncoderSpec(model="minilm", max_length=served[1].index.max_length))


@pytest.fixture(scope="module")
def reranker(served):
    from skillrouter.models.reranker import Reranker
    from skillrouter.retrieval.systems import reranker_spec

    # the spec serving builds: its length, windows and dtype
    return Reranker.load(reranker_spec(served[1], served[1].serving.reranker))


# -- /v1/embeddings -----------------------------------------------------------------------------------------------


def test_openai_client_embeds_queries_and_documents_as_the_encoder_does(served, encoder):
    from openai import OpenAI

    url, _, skills = served
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    texts = [skills[0].description, "merge these PDF files into one"]
    answer = client.embeddings.create(model="skillrouter", input=texts)  # the client asks for base64
    assert answer.model == "minilm" and [d.index for d in answer.data] == [0, 1]
    got = np.array([d.embedding for d in answer.data])
    assert got.shape == (2, encoder.dim) and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-4)
    assert np.allclose(got, encoder.encode_queries(texts), atol=1e-4)
    assert answer.usage.prompt_tokens == sum(map(len, encoder.tokenize(texts))) == answer.usage.total_tokens
    document = client.embeddings.create(model="x", input=skills[1].text(), encoding_format="float",
                                        extra_body={"input_type": "document"})
    assert np.allclose(document.data[0].embedding, encoder.encode_skills([skills[1]])[0], atol=1e-4)
    # the query's own skill is its nearest document, through the API alone
    docs = client.embeddings.create(model="x", input=[s.text() for s in skills], extra_body={"input_type":
                                                                                             "document"})
    scores = np.array([d.embedding for d in docs.data]) @ got[0]
    assert int(np.argmax(scores)) == 0


def test_embeddings_float_and_base64_agree_over_plain_http(served):
    url = served[0]
    status, _, plain = call(url, "/v1/embeddings", {"input": "hello", "encoding_format": "float"})
    assert status == 200 and plain["object"] == "list" and plain["data"][0]["object"] == "embedding"
    status, _, packed = call(url, "/v1/embeddings", {"input": "hello", "encoding_format": "base64"})
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert status == 200 and np.allclose(decoded, plain["data"][0]["embedding"], atol=1e-6)
    status, _, answer = call(url, "/v1/embeddings", {"input": "hello", "dimensions": len(decoded)})
    assert status == 200
    status, _, answer = call(url, "/v1/embeddings", {"input": "hello", "dimensions": 8})
    assert status == 400 and "dimensions=8" in answer["detail"]


@pytest.mark.parametrize("body, needle", [
    ({}, "missing"),
    ({"input": ""}, "string_too_short"),
    ({"input": []}, "too_short"),
    ({"input": ["ok"] * 129}, "too_long"),
    ({"input": [[1, 2, 3]]}, "string_type"),  # token arrays are refused
    ({"input": "x" * 16_001}, "string_too_long"),
    ({"input": "ok", "input_type": "passage"}, "literal_error"),
    ({"input": "ok", "encoding_format": "int8"}, "literal_error"),
    ({"input": "ok", "inputs": "typo"}, "extra_forbidden"),
])
def test_bad_embeddings_requests_are_422(served, body, needle):
    status, headers, answer = call(served[0], "/v1/embeddings", body)
    assert status == 422 and needle in json.dumps(answer["detail"]) and answer["request_id"] == headers["x-request-id"]


def test_compat_bodies_have_their_own_size_limit(served):
    url = served[0]
    big = json.dumps({"input": ["word " * 3000] * 100}).encode()  # 1.5 MB: over /v1/route's 64 KB, under 4 MB
    status, _, answer = call(url, "/v1/embeddings", raw=big)
    assert status == 200 and len(answer["data"]) == 100
    status, _, answer = call(url, "/v1/embeddings", raw=json.dumps({"input": ["x" * 16_000] * 300}).encode())
    assert status == 413 and "over 4,194,304 bytes" in answer["detail"]
    status, _, answer = call(url, "/v1/rerank", raw=b'{"query": "unterminated')
    assert status == 400 and answer["detail"].startswith("malformed JSON")


# -- /v1/rerank -----------------------------------------------------------------------------------------------


def test_rerank_scores_are_the_served_cross_encoders(served, reranker):
    from skillrouter.serving.compat import as_documents, sigmoid

    url, _, skills = served
    query, documents = "merge pdf files", [s.text()[:400] for s in skills[:5]]
    status, headers, answer = call(url, "/v1/rerank", {"model": "any", "query": query, "documents": documents,
                                                       "top_n": 3, "return_documents": True})
    assert status == 200, answer
    assert answer["id"] == headers["x-request-id"] and answer["model"] == served[1].serving.reranker
    logits = reranker.score(query, as_documents(documents)).tolist()
    expected = sorted(range(5), key=lambda i: -logits[i])[:3]
    assert [r["index"] for r in answer["results"]] == expected
    assert [r["relevance_score"] for r in answer["results"]] == pytest.approx([sigmoid(logits[i]) for i in expected],
                                                                              abs=1e-4)
    assert [r["document"]["text"] for r in answer["results"]] == [documents[i] for i in expected]
    status, _, answer = call(url, "/v1/rerank", {"query": query, "documents": documents})
    assert status == 200 and len(answer["results"]) == 5 and answer["results"][0]["document"] is None


@pytest.mark.parametrize("body, needle", [
    ({"query": "q"}, "missing"),
    ({"query": "", "documents": ["a"]}, "string_too_short"),
    ({"query": "q", "documents": []}, "too_short"),
    ({"query": "q", "documents": ["a"] * 101}, "too_long"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, "greater_than_equal"),
    ({"query": "q", "documents": [{"text": "a"}]}, "string_type"),
    ({"query": "q" * 2001, "documents": ["a"]}, "string_too_long"),
])
def test_bad_rerank_requests_are_422(served, body, needle):
    status, _, answer = call(served[0], "/v1/rerank", body)
    assert status == 422 and needle in json.dumps(answer["detail"])


def test_openapi_publishes_the_compat_endpoints(served):
    status, _, schema = call(served[0], "/openapi.json", method="GET")
    assert status == 200 and {"/v1/embeddings", "/v1/rerank"} <= set(schema["paths"])
    assert "/mcp" not in schema["paths"]
    props = schema["components"]["schemas"]["EmbeddingsRequest"]["properties"]
    assert props["input_type"]["default"] == "query" and set(props["input_type"]["enum"]) == {"query", "document"}
    assert schema["components"]["schemas"]["RerankRequest"]["properties"]["documents"]["maxItems"] == 100


# -- MCP over streamable HTTP -------------------------------------------------------------------------------------


def test_mcp_over_http_searches_and_opens_skills(served):
    from mcp import Client

    url, _, skills = served
    target = skills[2]

    async def session():
        async with Client(f"{url}/mcp", read_timeout_seconds=120) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            found = await client.call_tool("search_skills", {"query": target.text()[:500], "top_k": 3})
            filtered = await client.call_tool("search_skills", {"query": "anything", "top_k": 8,
                                                                "filters": {"category": skills[0].category}})
            opened = await client.call_tool("open_skill", {"skill_id": target.id})
            missing = await client.call_tool("open_skill", {"skill_id": "no/such/skill"})
            unsafe = await client.call_tool("search_skills", {"query": "x", "filters": {"category": "a\u0001b"}})
            return tools, found, filtered, opened, missing, unsafe

    tools, found, filtered, opened, missing, unsafe = asyncio.run(session())
    assert set(tools) == {"search_skills", "open_skill"} and "open_skill" in tools["search_skills"].description
    hits = found.structured_content["result"]
    assert not found.is_error and len(hits) == 3 and hits[0]["skill_id"] == target.id
    assert hits[0]["name"] == target.name and isinstance(hits[0]["rerank_score"], float)
    assert [h["category"] for h in filtered.structured_content["result"]] == [skills[0].category]
    assert not opened.is_error and target.body in opened.content[0].text
    assert f'name: {json.dumps(target.name)}' in opened.content[0].text
    assert missing.is_error and "no/such/skill" in missing.content[0].text
    assert unsafe.is_error and "control character" in unsafe.content[0].text


def test_mcp_endpoint_is_admitted_and_guarded_like_route(served):
    url = served[0]
    status, _, _ = call(url, "/mcp", method="GET")
    assert status == 405  # stateless JSON answers: no stream to open
    big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"pad": "x" * 70_000}}).encode()
    status, _, answer = call(url, "/mcp", raw=big)
    assert status == 413 and "over 65,536 bytes" in answer["detail"]
    status, _, answer = call(url, "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                             headers={"Host": "evil.example:80", "Accept": "application/json, text/event-stream"})
    assert status == 421 and "Host" in answer, answer  # DNS-rebinding protection on a loopback ingress


def test_embeddings_and_rerank_are_refused_503_with_retry_after_past_max_in_flight(served):
    """A burst over the four requests in flight the profile allows: the rest are 503 with Retry-After, as for
    /v1/route; none is another 5xx. On a busy machine an admitted request may also pass the request time-out: that
    is a 503 with Retry-After too, naming the stage that did not answer."""
    import threading

    url, _, skills = served
    texts = [s.text()[:4000] for s in skills]
    bodies = [("/v1/embeddings", {"model": "m", "input": texts * 4, "input_type": "document"}),
              ("/v1/rerank", {"model": "m", "query": "merge pdfs", "documents": texts * 2})]
    barrier, results = threading.Barrier(24), []

    def burst(i: int):
        path, body = bodies[i % 2]
        barrier.wait()
        status, headers, answer = call(url, path, body)
        results.append((path, status, headers.get("retry-after"), answer))

    threads = [threading.Thread(target=burst, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert len(results) == 24 and {r[1] for r in results} <= {200, 503}, [r[:2] for r in results]
    refused = [r for r in results if r[1] == 503]
    assert refused and all(r[2] == "1" for r in refused), [r[3] for r in refused]  # each says when to retry
    assert all(re.search(r"serving\.max_in_flight|did not answer within|queue is full", r[3]["detail"])
               for r in refused), [r[3]["detail"] for r in refused]
    assert any("serving.max_in_flight" in r[3]["detail"] for r in refused)  # the burst's excess, at admission
    done = [r for r in results if r[1] == 200]
    assert done and all(len(r[3]["data"] if r[0] == "/v1/embeddings" else r[3]["results"]) > 0 for r in done)


# -- skillrouter.client ---------------------------------------------------------------------------------------------


def test_sync_client_routes_reads_embeds_and_reranks(served, encoder):
    from skillrouter.client import Client, RequestRefused

    url, _, skills = served
    with Client(url) as client:
        answer = client.route(skills[4].text()[:500], top_k=3, rerank=False, first_stage="bm25")
        assert answer.results[0].skill_id == skills[4].id and answer.reranked is False
        assert client.skill(skills[4].id).body == skills[4].body
        vectors = client.embed(["merge pdfs"])
        assert np.allclose(vectors, encoder.encode_queries(["merge pdfs"]), atol=1e-4)
        ranked = client.rerank("merge pdfs", ["a", "b", "c"], top_n=2)
        assert len(ranked) == 2 and ranked[0].relevance_score >= ranked[1].relevance_score
        assert client.ready().status == "ready"
        with pytest.raises(RequestRefused) as err:
            client.route("ok", top_k=99)
        assert err.value.status == 422 and "top_k" in str(err.value) and err.value.request_id
        with pytest.raises(RequestRefused, match="404") as err:
            client.skill("no/such?skill#here")
        assert "no/such?skill#here" in err.value.detail
        with pytest.raises(RequestRefused) as err:
            client.upsert([{"id": "x", "name": "x", "description": "x", "body": "x"}])
        assert err.value.status == 401


def test_async_client_routes_concurrently(served):
    from skillrouter.client import AsyncClient

    url, _, skills = served

    async def run():
        async with AsyncClient(url, max_retries=10, max_retry_wait_s=2) as client:
            # twice serving.max_in_flight at once: the refused ones are retried after Retry-After
            return await asyncio.gather(*(client.route(s.text()[:300], top_k=2, first_stage="bm25", rerank=False)
                                          for s in skills))

    answers = asyncio.run(run())
    assert [a.results[0].skill_id for a in answers] == [s.id for s in skills]
