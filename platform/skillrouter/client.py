"""A Python client of the served HTTP API, sync (`Client`) and async (`AsyncClient`), over httpx2 (which the OpenAI
client brings).

```python
from skillrouter.client import Client

with Client("http://127.0.0.1:8000") as client:
    answer = client.route("merge these PDF files into one", top_k=5)
    best = answer.results[0]
    print(best.skill_id, best.rerank_score)
    print(client.skill(best.skill_id).body)
```

An overloaded server answers 503 (or a proxy 429) with `Retry-After`: the client waits that long (at most
`max_retry_wait_s`; without the header, 0.5 s doubling) and tries again, up to `max_retries` times, then raises
`Unavailable`. Every request is idempotent (a route, a read, an index change of the same skills), so retrying is
safe. A refused request (4xx) raises `RequestRefused` at once, with the server's detail and the request id that
its logs carry; other server errors raise `ServerError`.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import httpx2

from skillrouter.serving.compat import EmbeddingsResponse, RerankResponse, RerankResult
from skillrouter.serving.schemas import IndexResponse, Ready, RouteResponse, SkillOut

DEFAULT_URL = "http://127.0.0.1:8000"
RETRIED = (429, 503)
_sleep, _async_sleep = time.sleep, asyncio.sleep  # module attributes, so that tests can record the waits


class SkillRouterError(Exception):
    """A request the server did not answer with success; `status` is None when no answer came."""

    def __init__(self, message: str, status: int | None = None, detail: Any = None, request_id: str | None = None):
        super().__init__(message)
        self.status, self.detail, self.request_id = status, detail, request_id


class RequestRefused(SkillRouterError):
    """4xx: the request itself is wrong (invalid, too large, unknown id, bad token); sending it again will not help."""


class Unavailable(SkillRouterError):
    """503 or 429 after `max_retries` retries (or a connection that failed as often): the server is overloaded or
    down."""


class ServerError(SkillRouterError):
    """A 5xx other than 503: a fault of the server; its logs have the details under `request_id`."""


def retry_after_s(value: str | None, attempt: int, cap: float) -> float:
    """Seconds to wait before retry number `attempt` (0-based): the header's (seconds or an HTTP date), else a
    doubling back-off from 0.5 s; never more than `cap`."""
    wait = None
    if value and value.strip():
        try:
            wait = float(value)
        except ValueError:
            try:
                wait = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):  # neither form: the back-off
                wait = None
    if wait is None:
        wait = 0.5 * 2 ** attempt
    return min(max(wait, 0.0), cap)


def _skill_path(skill_id: str) -> str:
    return "/v1/skills/" + urllib.parse.quote(skill_id, safe="/")  # ids hold slashes, and may hold '?' or '#'


def _error(response: httpx2.Response) -> SkillRouterError:
    try:
        payload = response.json()
    except ValueError:
        payload = {"detail": response.text[:500]}
    detail = payload.get("detail") if isinstance(payload, dict) else payload
    request_id = (payload.get("request_id") if isinstance(payload, dict) else None) or \
        response.headers.get("x-request-id")
    where = f"{response.request.method} {response.request.url.path}"
    text = detail if isinstance(detail, str) else "; ".join(
        f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in detail or [] if isinstance(e, dict))
    message = f"{where} answered {response.status_code}: {text} (request id {request_id})"
    kind = RequestRefused if response.status_code < 500 else \
        Unavailable if response.status_code in RETRIED else ServerError
    return kind(message, response.status_code, detail, request_id)


class _Calls:
    """The API's calls, written once: each builds (method, path, JSON body, answer model); the sync and async
    clients send them."""

    def __init__(self, base_url: str, timeout_s: float, max_retries: int, max_retry_wait_s: float,
                 admin_token: str | None, headers: dict[str, str] | None):
        self.base_url, self.timeout_s = base_url.rstrip("/"), timeout_s
        self.max_retries, self.max_retry_wait_s, self.admin_token = max_retries, max_retry_wait_s, admin_token
        self.headers = dict(headers or {})

    @staticmethod
    def _route(query: str, top_k: int, rerank: bool | None, first_stage: str | None,
               filters: dict | None) -> tuple:
        body = {"query": query, "top_k": top_k, "rerank": rerank, "first_stage": first_stage, "filters": filters}
        return "POST", "/v1/route", {k: v for k, v in body.items() if v is not None}, RouteResponse

    @staticmethod
    def _embed(texts: str | Sequence[str], input_type: str) -> tuple:
        return "POST", "/v1/embeddings", {"input": texts if isinstance(texts, str) else list(texts),
                                          "input_type": input_type}, EmbeddingsResponse

    @staticmethod
    def _rerank(query: str, documents: Sequence[str], top_n: int | None) -> tuple:
        body = {"query": query, "documents": list(documents), **({"top_n": top_n} if top_n else {})}
        return "POST", "/v1/rerank", body, RerankResponse

    def _index(self, body: dict) -> tuple:
        return "POST", "/v1/index", body, IndexResponse

    def _request_headers(self, path: str) -> dict[str, str]:
        if path.startswith("/v1/index") and self.admin_token:
            return {**self.headers, "Authorization": f"Bearer {self.admin_token}"}
        return self.headers

    def _outcome(self, response: httpx2.Response | None, failure: Exception | None, attempt: int, model):
        """(answer, None) when done, (None, seconds to wait) to retry; raises when neither."""
        if response is not None and response.is_success:
            return (model.model_validate(response.json()) if model else response.json()), None
        if attempt >= self.max_retries:
            if failure is not None:
                raise Unavailable(f"no answer from {self.base_url} after {attempt + 1} tries: {failure}") \
                    from failure
            raise _error(response)
        if failure is not None:
            return None, retry_after_s(None, attempt, self.max_retry_wait_s)
        if response.status_code in RETRIED:
            return None, retry_after_s(response.headers.get("retry-after"), attempt, self.max_retry_wait_s)
        raise _error(response)


class Client(_Calls):
    """The sync client; also a context manager that closes its connections."""

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout_s: float = 60.0, max_retries: int = 3,
                 max_retry_wait_s: float = 30.0, admin_token: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(base_url, timeout_s, max_retries, max_retry_wait_s, admin_token, headers)
        self.http = httpx2.Client(base_url=self.base_url, timeout=timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, body: dict | None = None, model=None):
        for attempt in range(self.max_retries + 1):
            response, failure = None, None
            try:
                response = self.http.request(method, path, json=body, headers=self._request_headers(path))
            except httpx2.TransportError as err:
                failure = err
            answer, wait = self._outcome(response, failure, attempt, model)
            if wait is None:
                return answer
            _sleep(wait)

    def route(self, query: str, top_k: int = 10, *, rerank: bool | None = None, first_stage: str | None = None,
              filters: dict | None = None) -> RouteResponse:
        """The skills that serve `query`, best first (`POST /v1/route`)."""
        return self._send(*self._route(query, top_k, rerank, first_stage, filters))

    def skill(self, skill_id: str) -> SkillOut:
        """One skill's full text (`GET /v1/skills/{id}`); `RequestRefused` (404) when there is none."""
        return self._send("GET", _skill_path(skill_id), None, SkillOut)

    def embed(self, texts: str | Sequence[str], input_type: str = "query") -> list[list[float]]:
        """Unit vectors from the served encoder, one per text (`POST /v1/embeddings`)."""
        return [d.embedding for d in self._send(*self._embed(texts, input_type)).data]

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RerankResult]:
        """`documents` scored by the served cross-encoder, best first (`POST /v1/rerank`)."""
        return self._send(*self._rerank(query, documents, top_n)).results

    def ready(self) -> Ready:
        """Readiness (`GET /readyz`): `Unavailable` while not ready, after the retries."""
        return self._send("GET", "/readyz", None, Ready)

    def upsert(self, skills: Sequence[dict]) -> IndexResponse:
        """Add or replace skills (admin token)."""
        return self._send(*self._index({"action": "upsert", "skills": list(skills)}))

    def delete(self, ids: Sequence[str]) -> IndexResponse:
        """Delete skills by id (admin token)."""
        return self._send(*self._index({"action": "delete", "ids": list(ids)}))


class AsyncClient(_Calls):
    """The async client: the same calls, awaited; an async context manager."""

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout_s: float = 60.0, max_retries: int = 3,
                 max_retry_wait_s: float = 30.0, admin_token: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(base_url, timeout_s, max_retries, max_retry_wait_s, admin_token, headers)
        self.http = httpx2.AsyncClient(base_url=self.base_url, timeout=timeout_s)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def _send(self, method: str, path: str, body: dict | None = None, model=None):
        for attempt in range(self.max_retries + 1):
            response, failure = None, None
            try:
                response = await self.http.request(method, path, json=body, headers=self._request_headers(path))
            except httpx2.TransportError as err:
                failure = err
            answer, wait = self._outcome(response, failure, attempt, model)
            if wait is None:
                return answer
            await _async_sleep(wait)

    async def route(self, query: str, top_k: int = 10, *, rerank: bool | None = None,
                    first_stage: str | None = None, filters: dict | None = None) -> RouteResponse:
        return await self._send(*self._route(query, top_k, rerank, first_stage, filters))

    async def skill(self, skill_id: str) -> SkillOut:
        return await self._send("GET", _skill_path(skill_id), None, SkillOut)

    async def embed(self, texts: str | Sequence[str], input_type: str = "query") -> list[list[float]]:
        return [d.embedding for d in (await self._send(*self._embed(texts, input_type))).data]

    async def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RerankResult]:
        return (await self._send(*self._rerank(query, documents, top_n))).results

    async def ready(self) -> Ready:
        return await self._send("GET", "/readyz", None, Ready)

    async def upsert(self, skills: Sequence[dict]) -> IndexResponse:
        return await self._send(*self._index({"action": "upsert", "skills": list(skills)}))

    async def delete(self, ids: Sequence[str]) -> IndexResponse:
        return await self._send(*self._index({"action": "delete", "ids": list(ids)}))
