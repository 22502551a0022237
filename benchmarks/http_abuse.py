"""Hostile HTTP clients against the Serve application on 127.0.0.1: stalled bodies, a flood, malformed requests.

    .venv/bin/python benchmarks/http_abuse.py [--stalled 1000] [--clients 1000] [--per-client 2]
        [--run-dir runs/bench/http_abuse] [--skills 24] [key=value ...]

The application is the one `skillrouter serve` starts with the minilm profile (BM25 first stage, no reranker),
over one skill of each of --skills bundled categories (the point is the HTTP edge, not ranking). Then:

(a) slowloris: --stalled connections each declare `Content-Length: 100` on POST /v1/route, send 13 bytes and stall;
    meanwhile GET /healthz and a normal POST /v1/route are timed; then how the stalled ones end (status, time).
(b) flood: --clients concurrent clients, each sends --per-client route requests one after another (a new
    connection each); every answer's status, Retry-After and latency, and requests with no answer in 30 s.
(c) fuzz: malformed requests (bad JSON, wrong types, huge numbers, invalid UTF-8, content types, giant headers,
    bad Content-Length, chunked garbage, odd methods and paths, hostile filter values and ids): the status
    histogram; a 5xx other than an admission 503 (with Retry-After) is a failure.

Every client is bounded (a time-out on each exchange, a fixed number of requests); only 127.0.0.1 is contacted.
Exit status 1 when a requirement fails (a latency over its bound, an unanswered request, a 500).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HOST = "127.0.0.1"
TOKEN = "bench-admin-token"


# -- a raw HTTP/1.1 client: bytes out, (status, headers, body) back ---------------------------------------------


class Answer:
    def __init__(self, status: int | None, headers: dict[str, str], body: bytes, seconds: float, note: str = ""):
        self.status, self.headers, self.body, self.seconds, self.note = status, headers, body, seconds, note

    @property
    def label(self) -> str:
        return str(self.status) if self.status is not None else self.note


async def read_answer(reader: asyncio.StreamReader) -> tuple[int | None, dict[str, str], bytes]:
    """One response: the status line, headers, and a Content-Length body (else up to the close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read(1 << 20)
    return status, headers, body


async def exchange(port: int, raw: bytes, timeout_s: float = 30.0) -> Answer:
    """Send `raw` on a new connection and read one response, within `timeout_s`."""
    started = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 22)
            writer.write(raw)
            await writer.drain()
            status, headers, body = await read_answer(reader)
            return Answer(status, headers, body, time.perf_counter() - started)
    except TimeoutError:
        return Answer(None, {}, b"", time.perf_counter() - started, "no answer")
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError, OSError):
        return Answer(None, {}, b"", time.perf_counter() - started, "closed")
    finally:
        if writer is not None:
            writer.close()


def request(method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            content_type: str | None = "application/json", version: str = "HTTP/1.1") -> bytes:
    """A request's bytes; Content-Length from the body unless `headers` sets it (or Transfer-Encoding)."""
    lines = [f"{method} {path} {version}", f"Host: {HOST}", "Connection: close"]
    given = {k.lower() for k in (headers or {})}
    if body is not None and content_type and "content-type" not in given:
        lines.append(f"Content-Type: {content_type}")
    if body is not None and not {"content-length", "transfer-encoding"} & given:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def route_body(query: str = "merge these PDF files", **extra) -> bytes:
    return json.dumps({"query": query, "top_k": 3, **extra}).encode()


# -- (a) stalled bodies -------------------------------------------------------------------------------------------


STALLED_HEAD = request("POST", "/v1/route", headers={"Content-Length": "100"}) + b'{"query": "pd'  # 13 of 100 bytes


async def stall(port: int, opened: list, hold_s: float) -> Answer:
    """Open a connection, declare 100 bytes, send 13, wait up to `hold_s` for the server to answer or close."""
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 20)
        writer.write(STALLED_HEAD)
        await writer.drain()
    except (OSError, TimeoutError):
        return Answer(None, {}, b"", time.perf_counter() - started, "refused")
    opened.append(writer)
    try:
        status, headers, body = await asyncio.wait_for(read_answer(reader), hold_s)
        rest = await asyncio.wait_for(reader.read(), 5)  # the server should close after answering
        return Answer(status, headers, body, time.perf_counter() - started, "" if rest == b"" else "open")
    except TimeoutError:
        return Answer(None, {}, b"", time.perf_counter() - started, "still open")
    except (asyncio.IncompleteReadError, ConnectionError):
        return Answer(None, {}, b"", time.perf_counter() - started, "closed")
    finally:
        writer.close()


async def slowloris(port: int, n: int, hold_s: float, settle_s: float = 2.0) -> dict:
    opened: list = []
    gate = asyncio.Semaphore(200)  # connect in waves: the listen backlog is finite

    async def one():
        async with gate:
            task = asyncio.ensure_future(stall(port, opened, hold_s))
            await asyncio.sleep(0.005)
        return await task

    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    deadline = time.monotonic() + 60
    while len(opened) < n and time.monotonic() < deadline and not all(t.done() for t in tasks):
        await asyncio.sleep(0.2)
    await asyncio.sleep(settle_s)  # the proxy is still handing the burst of new requests to the replica
    probes = []  # (still stalled, /healthz, /v1/route), every half second while they stall
    for _ in range(10):
        await asyncio.sleep(0.5)
        stalled = sum(not t.done() for t in tasks)
        probes.append((stalled, await exchange(port, request("GET", "/healthz"), 10),
                       await exchange(port, request("POST", "/v1/route", route_body()), 10)))
    ended = await asyncio.gather(*tasks)
    return {"opened": len(opened), "probes": probes, "ended": ended}


# -- (b) flood ----------------------------------------------------------------------------------------------------


async def flood(port: int, clients: int, per_client: int) -> list[Answer]:
    start = asyncio.Event()
    answers: list[Answer] = []
    queries = ["merge these PDF files", "tune a slow SQL query", "our CI takes 25 minutes, cache the dependencies",
               "write release notes from the merged pull requests"]

    async def client(i: int):
        await start.wait()
        for j in range(per_client):
            answers.append(await exchange(port, request("POST", "/v1/route",
                                                        route_body(queries[(i + j) % len(queries)])), 30))

    tasks = [asyncio.ensure_future(client(i)) for i in range(clients)]
    await asyncio.sleep(0.5)
    start.set()
    await asyncio.gather(*tasks)
    return answers


# -- (c) fuzz -----------------------------------------------------------------------------------------------------


HOSTILE = ['"', "'", "\\", '\\"', '" or category != "', "' OR '1'='1", 'x" || true || "', "a\nb", "a\rb", "\t",
           "\x00", "\x01\x02\x1f", "\x7f", "]", "[", '["x"]', "{}", "%s%n%x", "${jndi:ldap://x}", "../../etc/passwd",
           "\u2028", "\ud83d\ude00", "é" * 10, "x" * 256, "x" * 257, " ", "category in ['a']", "id like '%'",
           "\\u0000", "<script>"]


def fuzz_cases() -> list[tuple[str, bytes, dict]]:
    """(name, request bytes, exchange options): at least 200 malformed or hostile requests."""
    cases: list[tuple[str, bytes, dict]] = []

    def add(name: str, raw: bytes, **options):
        cases.append((name, raw, options))

    post = lambda body, **kw: request("POST", "/v1/route", body, **kw)  # noqa: E731
    for i, text in enumerate([b"", b"{", b"}", b'{"query":}', b'{"query": "x",}', b"[1, 2", b"null", b'"str"', b"42",
                              b"true", b"{'query': 'x'}", b'{"query": "x"} trailing', b'{"query": NaN}',
                              b'{"query": "x", "top_k": Infinity}', b'{"query": "x", "top_k": 1e999999}',
                              b"[" * 10000 + b"]" * 10000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
                              b'{"query": "x", "query": 5}', b"\x00\x00\x00", b"\xef\xbb\xbf{\"query\": \"x\"}",
                              b'{"query": "\\ud800"}', b'{"query": "\\uZZZZ"}', b'{"query": "bad \\q escape"}']):
        add(f"json-{i}", post(text))
    for field, values in {
        "query": [None, 1, 1.5, True, [], ["x"], {}, {"a": 1}, "x" * 2001, "", "\x00", "\u0000" * 10],
        "top_k": [None, -1, 0, 51, 1.5, "3", 10**100, -(10**100), 1e308, True, [], {}],
        "rerank": ["yes", 1, [], {}, "true"],
        "first_stage": [1, None, "sparse", "", "BM25", ["bm25"], {}, "bm25\x00"],
        "filters": ["x", 1, [], ["category"], {"category": {}}, {"category": [1, 2]}, {"category": ["x"] * 51},
                    {"category": []}, {"category": None, "source": None}, {"categroy": "x"}, {"category": [[]]}],
    }.items():
        for j, value in enumerate(values):
            add(f"type-{field}-{j}", post(json.dumps({"query": "pdf", field: value}).encode()))
    for j, value in enumerate(HOSTILE):
        for key in ("category", "source"):
            add(f"filter-{key}-{j}", post(json.dumps({"query": "pdf", "first_stage": ("bm25", "dense")[j % 2],
                                                      "filters": {key: [value, "x"]}}).encode()))
        add(f"query-{j}", post(json.dumps({"query": value + " pdf"}).encode()))
        add(f"skill-{j}", request("GET", "/v1/skills/" + "".join(f"%{b:02X}" for b in value.encode("utf-8",
                                                                                              "surrogatepass"))))
    for i, body in enumerate([b'{"query": "\xff\xfe"}', b'{"query": "\xc0\xaf"}', b'{"query": "\xed\xa0\x80"}',
                              b"\xff" * 100, b'{"query": "ok", "filters": {"category": "\x80"}}']):
        add(f"utf8-{i}", post(body))
    for i, ctype in enumerate(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                               None, "application/json; charset=latin-1", "application/json; charset=utf-16",
                               "garbage", "application/xml", "application/json\x01", "*/*"]):
        add(f"ctype-{i}", post(route_body(), content_type=ctype))
    add("form-body", post(b"query=pdf&top_k=3", content_type="application/x-www-form-urlencoded"))
    add("xml-body", post(b"<query>pdf</query>", content_type="application/xml"))
    for i, headers in enumerate([{"X-Big": "x" * 8192}, {"X-Big": "x" * 65536}, {"X-Request-ID": "r" * 100_000},
                                 {f"X-H{k}": "v" for k in range(200)}, {"X-Request-ID": "a b\tc"},
                                 {"X-Request-ID": "é"}, {"Authorization": "Bearer " + "t" * 10000},
                                 {"Cookie": "c=" + "x" * 30000}, {"Accept": "x" * 4000},
                                 {"X-Request-Timeout-Seconds": "0"}, {"X-Request-ID": "caf\xe9"},
                                 {"serve_multiplexed_model_id": "\xe9"}, {"X-Session-ID": "\xff"},
                                 {"X-Request-Disconnect-Disabled": "?1"}]):
        add(f"headers-{i}", post(route_body(), headers=headers), timeout_s=20)
    for i, value in enumerate(["-1", "abc", "1e3", "0x10", " 12", "99999999999999999999999", "", "12, 12"]):
        add(f"length-{i}", post(route_body(), headers={"Content-Length": value}), timeout_s=20)
    add("length-short", post(b'{"query": "pdf"}', headers={"Content-Length": "10"}), timeout_s=20)
    add("length-long", post(b'{"query": "pdf"}', headers={"Content-Length": "60"}), timeout_s=20)
    add("length-twice", post(route_body(), headers={"Content-Length": "5", "content-length": "40"}), timeout_s=20)
    add("length-and-chunked", post(b"5\r\n{\"q\":\r\n0\r\n\r\n",
                                   headers={"Content-Length": "3", "Transfer-Encoding": "chunked"}), timeout_s=20)
    add("length-huge-admin", request("POST", "/v1/index", b"{", headers={"Content-Length": str(64 << 20)}),
        timeout_s=20)
    for i, chunks in enumerate([b"zz\r\nabc\r\n0\r\n\r\n", b"ffffffffffffffff\r\nabc\r\n", b"-5\r\nabc\r\n0\r\n\r\n",
                                b"3\r\nabcdef\r\n0\r\n\r\n", b"3\r\nabc", b"3;ext=\x00\r\nabc\r\n0\r\n\r\n",
                                b"0\r\nX-Trailer: \x01\r\n\r\n", b"\r\n\r\n\r\n",
                                b"10000\r\n" + b"x" * 70000 + b"\r\n0\r\n\r\n"]):
        add(f"chunked-{i}", post(chunks, headers={"Transfer-Encoding": "chunked"}), timeout_s=20)
    add("chunked-unknown", post(route_body(), headers={"Transfer-Encoding": "gzip, chunked"}), timeout_s=20)
    for i, (method, path) in enumerate([("FOO", "/v1/route"), ("DELETE", "/v1/route"), ("PUT", "/v1/route"),
                                        ("GET", "/v1/route"), ("TRACE", "/"), ("OPTIONS", "*"),
                                        ("CONNECT", "127.0.0.1:80"), ("GET", "/v1/skills/../../etc/passwd"),
                                        ("GET", "/v1/skills/%00"), ("GET", "/v1/skills/%ff%fe"),
                                        ("GET", "/v1/skills/" + "a" * 10000), ("GET", "/%2e%2e/%2e%2e"),
                                        ("GET", "http://evil.example/healthz"), ("GET", "/healthz?x=" + "%" * 50),
                                        ("GET", "//healthz"), ("PATCH", "/v1/index"), ("GET", "/v1/index"),
                                        ("GET", "/docs/../openapi.json"), ("HEAD", "/healthz"),
                                        ("GET", "/v1/skills/")]):
        add(f"method-{i}", request(method, path, b"" if method in ("PUT", "PATCH", "DELETE") else None))
    for i, line in enumerate([b"GET / HTTP/2.0\r\n\r\n", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", b"GET\r\n\r\n",
                              b"\r\n\r\n", b"GET /healthz HTTP/1.0\r\n\r\n", b"G\x00T / HTTP/1.1\r\n\r\n",
                              b"GET /healthz HTTP/1.1\r\nNoColonHere\r\n\r\n",
                              b"GET /healthz HTTP/1.1\r\nX-Ctl: a\x01b\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01\x00",
                              b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]):
        add(f"line-{i}", line, timeout_s=5)  # uvicorn may wait for the rest: no header time-out
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for i, body in enumerate([b"{", b"x" * 1000, b'{"action": "nuke"}', b'{"action": "rebuild"}', b"[]",
                              b'{"action": "upsert", "skills": "x"}', b"\xff\xfe"]):
        add(f"admin-anon-{i}", request("POST", "/v1/index", body))
        add(f"admin-wrong-{i}", request("POST", "/v1/index", body, headers={"Authorization": "Bearer nope"}))
    for i, body in enumerate([b"{", b"[]", b'{"action": "nuke"}', b'{"action": "upsert", "skills": []}',
                              b'{"action": "delete", "ids": []}', b'{"action": "delete", "ids": "x"}',
                              json.dumps({"action": "upsert", "skills": [{"id": "a\x00b", "name": "n",
                                                                          "description": "d", "body": "b"}]}).encode(),
                              json.dumps({"action": "upsert", "skills": [{"id": "x" * 600, "name": "n",
                                                                          "description": "d", "body": "b"}]}).encode(),
                              json.dumps({"action": "delete", "ids": HOSTILE[:12]}).encode()]):
        add(f"admin-auth-{i}", request("POST", "/v1/index", body, headers=auth), timeout_s=60)
    return cases


async def fuzz(port: int) -> list[tuple[str, Answer]]:
    gate = asyncio.Semaphore(8)  # a handful at a time: a 500 is the finding, not an overload

    async def one(name, raw, options):
        async with gate:
            return name, await exchange(port, raw, **options)

    return await asyncio.gather(*(one(*case) for case in fuzz_cases()))


# -- the run ------------------------------------------------------------------------------------------------------


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/minilm.yaml")
    parser.add_argument("--run-dir", help="corpus, index and serving state (default: a temporary directory)")
    parser.add_argument("--skills", type=int, default=24, help="bundled skills served, one per category")
    parser.add_argument("--stalled", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--per-client", type=int, default=2)
    parser.add_argument("--only", action="append", choices=["slowloris", "flood", "fuzz"], help="run only these")
    parser.add_argument("overrides", nargs="*", help="key=value profile overrides")
    args = parser.parse_args()
    only = set(args.only or ["slowloris", "flood", "fuzz"])

    from skillrouter.config import load_config
    from skillrouter.corpus.ingest import read_skills, write_skills
    from skillrouter.serving.app import start, stop

    limit = raise_fd_limit(4 * max(args.stalled, args.clients) + 1024)
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="http_abuse_"))
    root.mkdir(parents=True, exist_ok=True)
    picked: dict = {}
    for skill in read_skills("bundled"):
        picked.setdefault(skill.category, skill)
    write_skills(list(picked.values())[:args.skills], root / "skills.parquet")
    config = load_config(args.config, [f"run_dir={root / 'run'}", f"corpus.sources=[{root / 'skills.parquet'}]",
                                       f"mining.cache_dir={root / 'cache'}", "index.max_length=64",
                                       "serving.first_stage=bm25", "serving.rerank=false", *args.overrides])
    config.serving.port, config.serving.admin_token = 0, TOKEN
    s = config.serving
    print(f"file descriptors: soft limit {limit}; serving.max_in_flight {s.max_in_flight}, "
          f"body_timeout_s {getattr(s, 'body_timeout_s', None)}, ingress max_ongoing_requests "
          f"{s.ingress.max_ongoing_requests}", flush=True)
    url = start(config, log=lambda _: None)
    port = int(url.rsplit(":", 1)[1])
    failed: list[str] = []
    try:
        warm = asyncio.run(exchange(port, request("POST", "/v1/route", route_body()), 60))
        print(f"serving {len(picked) if args.skills > len(picked) else args.skills} skills at {url}; "
              f"first route {warm.status} in {ms(warm.seconds)} ms", flush=True)
        if "slowloris" in only:
            r = asyncio.run(slowloris(port, args.stalled, hold_s=120))
            ended = Counter(a.label + (f" ({a.note})" if a.status and a.note else "") for a in r["ended"])
            answered = [a.seconds for a in r["ended"] if a.status is not None]
            print(f"(a) {r['opened']} connections declared Content-Length 100, sent 13 bytes and stalled; from 2 s "
                  f"after the last one opened, every 0.5 s (still stalled: GET /healthz, POST /v1/route):", flush=True)
            for stalled, h, q in r["probes"]:
                print(f"    {stalled:>5}: {h.label} in {ms(h.seconds):>5} ms, {q.label} in {ms(q.seconds):>5} ms",
                      flush=True)
            print(f"    the stalled connections ended: {dict(ended)} (an empty note: the server closed it after "
                  f"answering); answered {min(answered, default=0):.1f} to {max(answered, default=0):.1f} s after "
                  "connecting", flush=True)
            held = [(h, q) for stalled, h, q in r["probes"] if stalled >= 0.9 * args.stalled]
            if not held or any(a.status != 200 or a.seconds >= 1.0 for pair in held for a in pair):
                failed.append("(a) /healthz or /v1/route not answered 200 within 1 s while connections stall")
        if "flood" in only:
            started = time.perf_counter()
            answers = asyncio.run(flood(port, args.clients, args.per_client))
            seconds = time.perf_counter() - started
            statuses = Counter(a.label for a in answers)
            lat = [a.seconds for a in answers if a.status is not None]
            refused = [a for a in answers if a.status == 503]
            print(f"(b) flood: {args.clients} concurrent clients x {args.per_client} requests = {len(answers)} in "
                  f"{seconds:.1f} s: {dict(sorted(statuses.items()))}; 503 with Retry-After "
                  f"{sum('retry-after' in a.headers for a in refused)}/{len(refused)}; latency p50 "
                  f"{ms(pct(lat, 50))} / p99 {ms(pct(lat, 99))} / max {ms(max(lat, default=0))} ms", flush=True)
            for a in {(a.status, "retry-after" in a.headers): a for a in answers if a.status != 200}.values():
                print(f"    e.g. {a.status}, Retry-After {a.headers.get('retry-after')}: {a.body[:160]!r}", flush=True)
            if set(statuses) - {"200", "503"} or any("retry-after" not in a.headers for a in refused) \
                    or max(lat, default=0) > 2.0:
                failed.append("(b) a flood request not answered 200 or 503 + Retry-After within 2 s")
        if "fuzz" in only:
            results = asyncio.run(fuzz(port))
            statuses = Counter(a.label for _, a in results)
            bad = [(n, a.label) for n, a in results
                   if a.status is not None and a.status >= 500 and not (a.status == 503 and "retry-after" in a.headers)]
            print(f"(c) fuzz: {len(results)} malformed requests: {dict(sorted(statuses.items()))}", flush=True)
            print(f"    5xx other than admission 503: {bad or 0}; slowest {ms(max(a.seconds for _, a in results))} ms",
                  flush=True)
            if bad:
                failed.append(f"(c) fuzz answered 5xx: {bad}")
    finally:
        stop()
    print("FAILED: " + "; ".join(failed) if failed else "all requirements held", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
