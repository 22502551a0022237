"""The HTTP edge under hostile clients, against one Serve application on 127.0.0.1 (six bundled skills, BM25, no
reranker, a 2 s body time-out): stalled bodies, admin bodies before the token, request ids, and a fuzz of malformed
requests (the cases of benchmarks/http_abuse.py). Behaviour is asserted, not speed: the figures are the
benchmark's."""

import asyncio
import importlib.util
import json
import time

import pytest

from skillrouter.config import load_config
from skillrouter.corpus.ingest import read_skills, write_skills

BODY_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def abuse(repo_root):
    """benchmarks/http_abuse.py as a module: its raw HTTP client and its fuzz cases."""
    spec = importlib.util.spec_from_file_location("http_abuse", repo_root / "benchmarks" / "http_abuse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def port(ray_cluster, repo_root, tmp_path_factory, abuse):
    from skillrouter.serving.app import start, stop

    root = tmp_path_factory.mktemp("hardening")
    picked: dict = {}
    for skill in read_skills("bundled"):
        picked.setdefault(skill.category, skill)
    write_skills(list(picked.values())[:6], root / "skills.parquet")
    config = load_config(repo_root / "configs/minilm.yaml", [
        f"run_dir={root / 'run'}", f"corpus.sources=[{root / 'skills.parquet'}]", f"mining.cache_dir={root / 'cache'}",
        "index.max_length=64", "serving.first_stage=bm25", "serving.rerank=false",
        f"serving.body_timeout_s={BODY_TIMEOUT_S}", "serving.port=0"])
    config.serving.admin_token = abuse.TOKEN
    url = start(config, log=lambda _: None)
    yield int(url.rsplit(":", 1)[1])
    stop()


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_stalled_body_is_answered_408_and_closed_while_others_are_served(port, abuse):
    async def scenario():
        opened: list = []
        stalled = [asyncio.ensure_future(abuse.stall(port, opened, hold_s=60)) for _ in range(20)]
        while len(opened) < 20 and not any(t.done() for t in stalled):
            await asyncio.sleep(0.05)
        health = await abuse.exchange(port, abuse.request("GET", "/healthz"), 30)
        routed = await abuse.exchange(port, abuse.request("POST", "/v1/route", abuse.route_body()), 30)
        waiting = sum(not t.done() for t in stalled)
        return health, routed, waiting, await asyncio.gather(*stalled)

    health, routed, waiting, ended = run(scenario())
    assert health.status == 200 and json.loads(health.body) == {"status": "ok"}
    assert routed.status == 200 and json.loads(routed.body)["results"]
    assert waiting > 0  # the answers came while bodies were still stalled
    assert all(a.status == 408 for a in ended), [a.label for a in ended]
    assert all(a.note == "" for a in ended), [a.note for a in ended]  # and the server closed each connection
    detail = json.loads(ended[0].body)["detail"]
    assert "did not arrive within 2 s" in detail and "serving.body_timeout_s" in detail
    assert ended[0].headers["connection"] == "close"


@pytest.mark.parametrize("body, headers", [
    (b"{", {}),
    (b"\xff\xfe not json", {"Content-Type": "text/plain"}),
    (b'{"action": "rebuild"}', {"Authorization": "Basic abc"}),
    (b'{"action": "rebuild"}', {"Authorization": "Bearer "}),
    (b"x" * 1000, {"Content-Length": str(100 << 20)}),  # declares 100 MiB, over the admin limit
    (b"{", {"Content-Length": str(1 << 20)}),  # declares 1 MiB, sends one byte: not waited for
])
def test_admin_without_a_token_is_401_whatever_its_body(port, abuse, body, headers):
    started = time.monotonic()
    answer = run(abuse.exchange(port, abuse.request("POST", "/v1/index", body, headers=headers), 30))
    assert answer.status == 401, (answer.label, answer.body[:200])
    assert answer.headers["www-authenticate"] == "Bearer" and "Bearer" in json.loads(answer.body)["detail"]
    assert time.monotonic() - started < BODY_TIMEOUT_S + 20  # answered from the headers (generous: busy machine)


def test_admin_token_checks_come_before_the_body_and_the_body_after(port, abuse):
    wrong = run(abuse.exchange(port, abuse.request("POST", "/v1/index", b"{",
                                                   headers={"Authorization": "Bearer nope"}), 30))
    assert wrong.status == 403
    auth = {"Authorization": f"Bearer {abuse.TOKEN}"}
    malformed = run(abuse.exchange(port, abuse.request("POST", "/v1/index", b"{", headers=auth), 30))
    assert malformed.status == 400 and json.loads(malformed.body)["detail"].startswith("malformed JSON")
    big = run(abuse.exchange(port, abuse.request("POST", "/v1/index", b"{", headers={
        **auth, "Content-Length": str((64 << 20) + 1)}), 30))
    assert big.status == 413 and big.headers["connection"] == "close"


@pytest.mark.parametrize("given", ["r" * 129, "r" * 100_000, "caf\xe9", "a b", "<script>", "id;drop"])
def test_an_unsafe_request_id_is_replaced_not_echoed(port, abuse, given):
    answer = run(abuse.exchange(port, abuse.request("POST", "/v1/route", abuse.route_body(),
                                                    headers={"X-Request-ID": given}), 30))
    assert answer.status == 200, (answer.label, answer.body[:200])
    echoed = answer.headers["x-request-id"]
    assert echoed != given and len(echoed) <= 128 and json.loads(answer.body)["request_id"] == echoed


def test_a_safe_request_id_is_kept_and_a_control_character_never_reaches_the_app(port, abuse):
    answer = run(abuse.exchange(port, abuse.request("POST", "/v1/route", abuse.route_body(),
                                                    headers={"X-Request-ID": "trace-42.a:b_c"}), 30))
    assert answer.status == 200 and answer.headers["x-request-id"] == "trace-42.a:b_c"
    assert json.loads(answer.body)["request_id"] == "trace-42.a:b_c"
    answer = run(abuse.exchange(port, abuse.request("POST", "/v1/route", abuse.route_body(),
                                                    headers={"X-Request-ID": "a\x01b"}), 30))
    assert answer.status == 400 and b"a\x01b" not in answer.body  # the HTTP parser refuses it


def test_a_fuzz_of_malformed_requests_gets_no_5xx(port, abuse):
    async def fuzz():
        gate = asyncio.Semaphore(4)

        async def one(name, raw, options):
            async with gate:
                return name, await abuse.exchange(port, raw, **options)

        return await asyncio.gather(*(one(*case) for case in abuse.fuzz_cases()))

    results = run(fuzz())
    assert len(results) >= 200
    bad = [(name, a.label, a.body[:120]) for name, a in results if a.status is not None and a.status >= 500
           and not (a.status == 503 and "retry-after" in a.headers)]
    assert bad == []
    answered = [a for _, a in results if a.status is not None]
    assert len(answered) >= 0.9 * len(results)  # the rest: requests uvicorn refuses by closing, or still awaits


def test_the_proxy_refuses_routes_over_the_limit_itself_and_times_out_stalled_bodies():
    """`ProxyAdmission` (it runs in Serve's proxy): over the limit a route is 503 + Retry-After without reaching
    the app; a body that never arrives is 408 and closed; other paths pass untouched."""
    import asyncio

    from skillrouter.serving.edge import ProxyAdmission

    async def scenario():
        release, reached = asyncio.Event(), []

        async def app(scope, receive, send):
            reached.append((scope["path"], (await receive())["body"]))
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        refusals = []
        proxy = ProxyAdmission(app, max_in_flight=2, body_timeout_s=0.2, retry_after_s=3, max_body_bytes=100,
                               on_refusal=refusals.append)

        async def call(path, chunks, stall=False):
            sent, queue = [], list(chunks)

            async def receive():
                if queue:
                    return {"type": "http.request", "body": queue.pop(0), "more_body": bool(queue) or stall}
                await asyncio.sleep(10)  # a client that stopped sending
            async def send(message):
                sent.append(message)
            await proxy({"type": "http", "method": "POST", "path": path, "headers": []}, receive, send)
            start = next(m for m in sent if m["type"] == "http.response.start")
            return start["status"], dict(start["headers"])

        first = [asyncio.ensure_future(call("/v1/route", [b'{"query": "a"}'])) for _ in range(2)]
        await asyncio.sleep(0.05)
        status, headers = await call("/v1/route", [b'{"query": "b"}'])  # two in flight: refused here
        assert status == 503 and headers[b"retry-after"] == b"3" and len(reached) == 2
        status, headers = await call("/v1/route", [b'{"que'], stall=True)
        assert status == 408 and headers[b"connection"] == b"close"
        assert (await call("/v1/route", [b"x" * 101]))[0] == 413
        other = asyncio.ensure_future(call("/healthz", [b""]))  # not a route: passes, whatever is in flight
        await asyncio.sleep(0.05)
        release.set()
        assert [s for s, _ in await asyncio.gather(*first, other)] == [200, 200, 200]
        assert reached[:2] == [("/v1/route", b'{"query": "a"}')] * 2 and proxy.in_flight == 0
        assert refusals == ["in_flight", "body_timeout", "body_too_large"]  # what the proxy's counter hears

    asyncio.run(scenario())


def test_the_served_docs_page_loads_its_assets_from_the_server(port):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=30) as page:
        html = page.read().decode()
    assert "SwaggerUIBundle" in html and "cdn" not in html.lower()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/docs/static/swagger-ui-bundle.js", timeout=30) as asset:
        assert asset.status == 200 and len(asset.read()) > 100_000
