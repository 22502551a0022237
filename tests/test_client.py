"""`skillrouter.client` against a scripted HTTP server on 127.0.0.1: Retry-After is honoured on 503 and 429 for a
bounded number of retries, 4xx raise at once with the server's detail, and a server that is not there is
`Unavailable`. (tests/test_compat_api.py drives both clients against the real served application.)"""

import asyncio
import email.utils
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from skillrouter import client as client_module
from skillrouter.client import AsyncClient, Client, RequestRefused, ServerError, Unavailable, retry_after_s

ROUTE = {"request_id": "r1", "first_stage": "bm25", "reranked": False, "index_generation": 0, "results": [],
         "timings_ms": {"embed": 0, "search": 1, "rerank": 0, "total": 1}}


@pytest.fixture
def scripted():
    """A server that answers each request with the next (status, headers, body) of `script`, and records them."""
    script, seen = [], []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("content-length") or 0)
            seen.append((self.command, self.path, dict(self.headers), self.rfile.read(length)))
            status, headers, body = script.pop(0)
            data = json.dumps(body).encode()
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", script, seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def waits(monkeypatch):
    recorded = []

    async def async_sleep(seconds):
        recorded.append(seconds)

    monkeypatch.setattr(client_module, "_sleep", recorded.append)
    monkeypatch.setattr(client_module, "_async_sleep", async_sleep)
    return recorded


def test_retry_after_is_honoured_then_the_answer_returned(scripted, waits):
    url, script, seen = scripted
    script += [(503, {"Retry-After": "2"}, {"detail": "busy"}), (429, {"Retry-After": "1"}, {"detail": "slow down"}),
               (200, {}, ROUTE)]
    with Client(url, max_retries=3) as client:
        answer = client.route("merge pdfs", top_k=3, filters={"category": "docs"})
    assert answer.request_id == "r1" and waits == [2.0, 1.0] and len(seen) == 3
    assert json.loads(seen[0][3]) == {"query": "merge pdfs", "top_k": 3, "filters": {"category": "docs"}}


def test_retries_are_bounded_and_capped(scripted, waits):
    url, script, seen = scripted
    script += [(503, {"Retry-After": "120", "X-Request-ID": "abc"}, {"detail": "4 requests in flight"})] * 3
    with Client(url, max_retries=2, max_retry_wait_s=5) as client:
        with pytest.raises(Unavailable, match="503: 4 requests in flight") as err:
            client.ready()
    assert len(seen) == 3 and waits == [5, 5] and err.value.status == 503 and err.value.request_id == "abc"


def test_4xx_raise_at_once_with_the_detail(scripted, waits):
    url, script, seen = scripted
    detail = [{"loc": ["body", "top_k"], "msg": "Input should be less than or equal to 50", "type": "x"}]
    script += [(422, {}, {"detail": detail, "request_id": "req-9"}), (404, {}, {"detail": "no skill with id 'a?b'"}),
               (500, {}, {"detail": "internal error"})]
    with Client(url, admin_token="tok") as client:
        with pytest.raises(RequestRefused, match=r"422: body.top_k: Input should be less than or equal to 50 "
                                                 r"\(request id req-9\)") as err:
            client.route("q", top_k=99)
        assert err.value.detail == detail and err.value.request_id == "req-9"
        with pytest.raises(RequestRefused, match="404"):
            client.skill("a?b")
        with pytest.raises(ServerError, match="500"):
            client.delete(["x"])
    assert waits == [] and seen[1][1] == "/v1/skills/a%3Fb"
    assert seen[2][2]["Authorization"] == "Bearer tok" and "Authorization" not in seen[0][2]


def test_async_client_retries_the_same_way(scripted, waits):
    url, script, seen = scripted
    script += [(503, {}, {"detail": "busy"}), (200, {}, {"object": "list", "model": "minilm", "usage":
                {"prompt_tokens": 2, "total_tokens": 2}, "data": [{"object": "embedding", "index": 0,
                                                                   "embedding": [0.6, 0.8]}]})]

    async def run():
        async with AsyncClient(url) as client:
            return await client.embed("hello", input_type="document")

    assert asyncio.run(run()) == [[0.6, 0.8]] and waits == [0.5]  # no Retry-After: the back-off's first step
    assert json.loads(seen[0][3]) == {"input": "hello", "input_type": "document"}


def test_no_server_is_unavailable_after_the_retries(waits):
    from skillrouter.serving.app import free_port

    with Client(f"http://127.0.0.1:{free_port()}", max_retries=2) as client:
        with pytest.raises(Unavailable, match="after 3 tries"):
            client.ready()
    assert waits == [0.5, 1.0]


def test_retry_after_forms():
    assert retry_after_s("3", 0, 30) == 3 and retry_after_s("0", 4, 30) == 0
    assert retry_after_s(None, 0, 30) == 0.5 and retry_after_s("", 3, 30) == 4 and retry_after_s(None, 9, 30) == 30
    later = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= retry_after_s(later, 0, 30) <= 10
    assert retry_after_s("garbage", 1, 30) == 1.0
