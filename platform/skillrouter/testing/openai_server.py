"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests and load benchmarks.

It answers `POST /v1/chat/completions` like the real API (same JSON shape, `usage` included) with queries in a
JSON object, and can be told, per skill name, to misbehave in order: `429` (with `Retry-After`), `500`, `timeout`
(answer later than the client waits), `malformed` (not JSON), `leak` (queries that quote the skill's name),
`short` (too-short queries), then answer normally. It counts every request per skill, so a test can assert that a
resumed job sent nothing twice, and it models a server of fixed capacity (at most `capacity` requests served at
once, each taking `latency_s`) and reports how busy it was.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter, defaultdict, deque

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

_SKILL = re.compile(r"^Skill name: (.+)$", re.M)
_COUNT = re.compile(r"Write (\d+) different")


class OpenAIStub:
    def __init__(self, capacity: int = 64, latency_s: float = 0.0, timeout_sleep_s: float = 5.0,
                 retry_after: str = "1"):
        self.capacity, self.latency_s = capacity, latency_s
        self.timeout_sleep_s, self.retry_after = timeout_sleep_s, retry_after
        self.scripts: dict[str, deque[str]] = defaultdict(deque)
        self.requests: Counter[str] = Counter()  # every request received, by skill name
        self.answered: Counter[str] = Counter()  # requests answered with 200, by skill name
        self.busy_s = 0.0
        self.first_request: float | None = None
        self.last_response: float | None = None
        self._serial = 0
        self._slots: asyncio.Semaphore | None = None
        self.app = self._build_app()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def script(self, skill_name: str, *actions: str) -> None:
        """Queue misbehaviours for requests about `skill_name`; each is used once, in order."""
        self.scripts[skill_name].extend(actions)

    def utilisation(self) -> float:
        """Share of the server's capacity that was in use between its first request and last response."""
        if self.first_request is None or self.last_response is None:
            return 0.0
        span = self.last_response - self.first_request
        return self.busy_s / (self.capacity * span) if span > 0 else 0.0

    def _answer(self, prompt: str, skill: str, action: str) -> dict:
        n = int(m.group(1)) if (m := _COUNT.search(prompt)) else 3
        self._serial += 1
        if action == "leak":
            queries = [f"Please run the {skill} skill on my repository, case {i}" for i in range(n)]
        elif action == "short":
            queries = ["help"] * n
        else:
            queries = [f"Request {self._serial}-{i}: my team is stuck on this task and needs a careful plan today."
                       for i in range(n)]
        content = "{not json" if action == "malformed" else json.dumps({"queries": queries})
        prompt_tokens = len(prompt) // 4
        completion_tokens = len(content) // 4
        return {"id": f"chatcmpl-{self._serial}", "object": "chat.completion", "created": int(time.time()),
                "model": "stub", "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/stats")
        async def stats():
            return {"requests": sum(self.requests.values()), "answered": sum(self.answered.values()),
                    "utilisation": self.utilisation(), "capacity": self.capacity, "latency_s": self.latency_s,
                    "serving_s": (self.last_response or 0) - (self.first_request or 0)}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            prompt = "\n".join(m.get("content", "") for m in body.get("messages", []))
            skill = m.group(1).strip() if (m := _SKILL.search(prompt)) else ""
            self.requests[skill] += 1
            now = time.perf_counter()
            self.first_request = self.first_request or now
            action = self.scripts[skill].popleft() if self.scripts.get(skill) else "ok"
            if action == "429":
                return JSONResponse({"error": {"message": "rate limited", "type": "rate_limit"}}, status_code=429,
                                    headers={"retry-after": self.retry_after})
            if action == "500":
                return JSONResponse({"error": {"message": "internal error", "type": "server_error"}},
                                    status_code=500)
            if action == "401":
                return JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)
            if action == "timeout":
                await asyncio.sleep(self.timeout_sleep_s)
                return PlainTextResponse("too late", status_code=504)
            if self._slots is None:
                self._slots = asyncio.Semaphore(self.capacity)
            async with self._slots:  # a server of fixed capacity: the rest wait their turn
                started = time.perf_counter()
                if self.latency_s:
                    await asyncio.sleep(self.latency_s)
                self.busy_s += time.perf_counter() - started
            self.answered[skill] += 1
            self.last_response = time.perf_counter()
            return self._answer(prompt, skill, action)

        return app

    def start(self, port: int = 0) -> str:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.time() + 20
        while not (self._server.started and self._server.servers):
            if time.time() > deadline:
                raise RuntimeError("the OpenAI stub did not start within 20 s")
            time.sleep(0.02)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    def stop(self) -> None:
        if self._server:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def __enter__(self) -> OpenAIStub:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    """Serve on 127.0.0.1 from a process of its own (load benchmarks keep it apart from the client)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--capacity", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    stub = OpenAIStub(capacity=args.capacity, latency_s=args.latency)
    stub.start(args.port)
    print(stub.base_url, flush=True)
    try:
        stub._thread.join()
    except KeyboardInterrupt:
        stub.stop()


if __name__ == "__main__":
    main()
