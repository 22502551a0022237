"""The Serve deployments: `Ingress` (the FastAPI HTTP API) -> `Retriever` (first stage) -> `Reranker`, and
`IndexAdmin` for index changes. Each scales on its own; the work itself is `stages`' and `admin`'s plain Python.

Admission control: an ingress replica works on at most `serving.max_in_flight` route requests and answers the
rest 503 with `Retry-After` at once, before their body is read; the deployments behind it have bounded queues
(`max_queued_requests`), and a full queue is answered the same way. Nothing queues without bound.

The HTTP edge (`Guard`): Serve's proxy hands a request to an ingress replica, which counts it toward the replica's
`max_ongoing_requests`, before a byte of its body is read; the replica then pulls the body from the proxy. So the
guard decides everything it can from the headers first (the admin token, route admission, a declared length), and
reads a body against a deadline (`serving.body_timeout_s`): a client that stalls is answered 408 and its connection
closed. The ingress's `max_ongoing_requests` is far above `max_in_flight` (a stalled read is a cheap await), so
stalled clients cost sockets, not the slots that `/healthz` and real work need.
"""

# No `from __future__ import annotations` here: FastAPI must see the endpoints' annotations as objects (Serve's
# class-based ingress rebuilds the methods, and string annotations would no longer resolve).
import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
import uuid
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve.exceptions import BackPressureError
from starlette.exceptions import HTTPException as StarletteHTTPException

from skillrouter import __version__
from skillrouter.config import PipelineConfig
from skillrouter.retrieval.filters import Catalogue
from skillrouter.retrieval.first_stage import RetrieveQuery
from skillrouter.retrieval.rerank import rerank_order, rerank_scores
from skillrouter.serving import compat
from skillrouter.serving.admin import AdminError, IndexWriter, generation_path
from skillrouter.serving.docs import offline_docs
from skillrouter.serving.edge import SAFE_REQUEST_ID, read_body, replaying
from skillrouter.serving.generations import Generations
from skillrouter.serving.mcp import MCP_PATH, HttpEndpoint, Refused, SkillHit
from skillrouter.serving.metrics import replica_metrics
from skillrouter.serving.schemas import (
    MAX_ADMIN_BODY_BYTES,
    MAX_ROUTE_BODY_BYTES,
    ErrorResponse,
    Health,
    IndexRequest,
    IndexResponse,
    Ready,
    RoutedSkill,
    RouteRequest,
    RouteResponse,
    SkillOut,
    Timings,
)
from skillrouter.serving.stages import FirstStage, close_replica, load_catalogue, load_first_stage, search_isolated

logger = logging.getLogger("ray.serve")  # Serve's replica logger: records carry the request id

REQUEST_ID_HEADER = "x-request-id"  # set by Serve's proxy (the client's own, or a new one) and echoed back
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in [
        (400, "malformed JSON, or an option this server cannot honour"),
        (408, "the body did not arrive within serving.body_timeout_s"),
        (413, "request body too large"),
        (422, "invalid request: the detail lists each problem"),
        (503, "overloaded or unavailable: retry after the Retry-After header's seconds"),
    ]
}

api = FastAPI(
    title="skillrouter", version=__version__,
    description="Route a user's request to the agent skills that serve it: a first stage (dense encoder + Milvus, "
                "BM25, or the two fused) and a cross-encoder reranker over the full skill text.")
offline_docs(api)  # /docs from the installed Swagger UI assets: the CDN's page is blank without a network


def request_id(request: Request) -> str:
    """The request's id: the client's `X-Request-ID` when it is up to 128 characters of [A-Za-z0-9._:-], else a
    new one (Serve's proxy, with `edge.ProxyHeaders`, has already replaced such an id; this holds without it)."""
    state = request.scope.setdefault("state", {})
    if "request_id" not in state:
        given = request.headers.get(REQUEST_ID_HEADER)
        state["request_id"] = given if given and SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    return state["request_id"]


def _error(request: Request, status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "request_id": request_id(request)}, status, headers=headers)


class _Replica:
    """This ingress replica's limits and its route requests in flight, shared by the `Guard` middleware (which
    decides before the body is read) and the endpoints; set by `Ingress.__init__`."""

    admin_token: str | None = None
    max_in_flight = 64
    in_flight = 0
    retry_after_s = 1
    body_timeout_s = 10.0
    admin_body_timeout_s = 300.0


def check_admin(authorization: str | None) -> None:
    """401 without a bearer token, 403 with a wrong one (or when no token is configured: the API is off)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "admin API: send 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    if _Replica.admin_token is None:
        raise HTTPException(403, "the admin API is disabled: no token is configured (serving.admin_token_env)")
    if not hmac.compare_digest(token.strip().encode(), _Replica.admin_token.encode()):
        raise HTTPException(403, "admin API: wrong token")


def route_admission() -> None:
    """503 with Retry-After when this replica already works on `serving.max_in_flight` route requests."""
    if _Replica.in_flight >= _Replica.max_in_flight:
        replica_metrics().rejected.inc(tags={"reason": "in_flight"})
        raise _overload(f"{_Replica.in_flight} requests in flight (serving.max_in_flight)", _Replica.retry_after_s)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        return _error(request, 400, f"malformed JSON: {bad_json.get('ctx', {}).get('error', bad_json['msg'])}")
    # no `input` echoed back: it may be a 60 KB query
    return _error(request, 422, [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors])


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(request, exc.status_code, exc.detail, exc.headers)


@api.exception_handler(Exception)
async def _internal(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("internal error")
    return _error(request, 500, "internal error; the server's log has the details under this request id")


class Guard:
    """What can be decided from the headers is decided before a body byte is read: the admin token
    (`/v1/index`: 401 or 403 whatever the body), route admission (503 at once), a declared length (400 when
    invalid, 413 over the endpoint's limit). Then the whole body is read against a deadline (`body_timeout_s`,
    `admin_body_timeout_s` once the token was checked) and replayed to the app: a client that stalls is answered
    408, a chunked body over the limit 413. An answer given before the body was read closes the connection."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        request_id(request)  # settled once, before anything answers
        headers = request.headers
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        admin = scope["path"].startswith("/v1/index")
        try:
            if admin:
                check_admin(headers.get("authorization"))
            elif scope["method"] == "POST" and scope["path"] in compat.ADMITTED_PATHS:
                route_admission()
        except HTTPException as err:
            return await self._answer(scope, send, err.status_code, err.detail, err.headers, close=has_body)
        if not has_body:
            return await self.app(scope, receive, send)
        limit = MAX_ADMIN_BODY_BYTES if admin else compat.ADMITTED_PATHS.get(scope["path"], MAX_ROUTE_BODY_BYTES)
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return await self._answer(scope, send, 400, "invalid Content-Length", close=True)
            if int(declared) > limit:
                return await self._answer(scope, send, 413, f"request body over {limit:,} bytes", close=True)
        timeout_s = _Replica.admin_body_timeout_s if admin else _Replica.body_timeout_s
        try:
            body = await asyncio.wait_for(read_body(receive, limit), timeout_s)
        except asyncio.TimeoutError:
            replica_metrics().rejected.inc(tags={"reason": "body_timeout"})
            return await self._answer(scope, send, 408, f"the request body did not arrive within {timeout_s:g} s "
                                      "(serving.body_timeout_s)", close=True)
        if body is None:  # the client left
            return
        if len(body) > limit:
            return await self._answer(scope, send, 413, f"request body over {limit:,} bytes", close=True)
        await self.app(scope, replaying(body, receive), send)

    @staticmethod
    async def _answer(scope, send, status: int, detail: Any, headers: dict[str, str] | None = None,
                      close: bool = False):
        headers = {**(headers or {}), **({"Connection": "close"} if close else {})}

        async def nothing():  # the answer reads no body
            return {"type": "http.disconnect"}

        await _error(Request(scope), status, detail, headers)(scope, nothing, send)


class AccessLog:
    """One structured log line, a request counter and a latency observation per HTTP request (4xx and 413s
    included), labelled by route template so that ids in paths do not multiply the series."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # `Guard` may answer before the router runs: its endpoints keep their label (other paths stay unmatched)
            endpoint = getattr(scope.get("route"), "path", None) or (
                scope["path"] if scope["path"] in (*compat.ADMITTED_PATHS, "/v1/index") else "unmatched")
            ms = (time.perf_counter() - started) * 1000
            fields = scope.get("state", {}).get("log_fields", {})
            metrics = replica_metrics()
            metrics.requests.inc(tags={"endpoint": endpoint, "status": str(status)})
            logger.info(f"{scope['method']} {endpoint} {status} {ms:.1f} ms"
                        + "".join(f" {k}={v}" for k, v in fields.items()),
                        extra={"event": "http", "endpoint": endpoint, "status": status,
                               "latency_ms": round(ms, 2), **fields})


api.add_middleware(Guard)
api.add_middleware(AccessLog)  # added last: outermost, so it sees the guard's answers too

bearer = HTTPBearer(auto_error=False, scheme_name="AdminToken",
                    description="$SKILLROUTER_ADMIN_TOKEN (serving.admin_token_env), or serving.admin_token")


def require_admin(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """The token, checked again where the endpoint is declared (and published in the OpenAPI schema); `Guard`
    has checked it before the body was read."""
    check_admin(f"{credentials.scheme} {credentials.credentials}" if credentials else None)


def _overload(detail: str, retry_after_s: int) -> HTTPException:
    return HTTPException(503, f"{detail}; retry after {retry_after_s} s", headers={"Retry-After": str(retry_after_s)})


def plan_route(body: RouteRequest, default_first_stage: str, has_reranker: bool,
               retrieve_k: int) -> tuple[RetrieveQuery, bool]:
    """The first-stage query and whether to rerank: reranking asks the first stage for `retrieve_k` candidates
    (the paper's 20) or `top_k`, whichever is more."""
    rerank = has_reranker if body.rerank is None else body.rerank
    if rerank and not has_reranker:
        raise HTTPException(400, "this server runs no reranker (serving.reranker, or train one): "
                                 "send rerank=false or leave it out")
    filters = body.filters
    try:  # a filter value the index cannot be asked about is this request's 422, before it joins a batch
        query = RetrieveQuery(body.query, max(body.top_k, retrieve_k) if rerank else body.top_k,
                              body.first_stage or default_first_stage, filters.category if filters else None,
                              filters.source if filters else None)
    except ValueError as err:
        raise HTTPException(422, str(err)) from None
    return query, rerank


@contextlib.contextmanager
def admitted():
    """Count a request toward this replica's `serving.max_in_flight` while it works (503 when full)."""
    route_admission()
    _Replica.in_flight += 1
    try:
        yield
    finally:
        _Replica.in_flight -= 1


def _pairs(items: list[tuple[str, list[str]]]) -> int:
    """A reranker batch's size: its query-skill pairs, the unit of the model's work."""
    return sum(len(ids) for _, ids in items)


# Serve ships the deployment classes below by value, with the module globals they use as they are when the class is
# decorated: every helper they call is defined above this line.


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    """HTTP API: validation, admission control, the retriever -> reranker calls, the ranked answer."""

    def __init__(self, retriever, reranker, admin, config: PipelineConfig, reranker_name: str | None):
        self.retriever, self.admin = retriever, admin
        self.reranker = reranker if reranker_name else None
        self.cfg, self.retrieve_k, self.reranker_name = config.serving, config.routing.retrieve_k, reranker_name
        _Replica.admin_token = os.environ.get(self.cfg.admin_token_env) or self.cfg.admin_token
        _Replica.max_in_flight, _Replica.retry_after_s = self.cfg.max_in_flight, self.cfg.retry_after_s
        _Replica.body_timeout_s, _Replica.admin_body_timeout_s = self.cfg.body_timeout_s, self.cfg.admin_body_timeout_s
        self.metrics = replica_metrics()

    async def _call(self, response, stage: str, timeout_s: float | None = None):
        """Await a downstream deployment; a full queue, a time-out or a lost replica become 503."""
        retry = self.cfg.retry_after_s
        try:
            return await asyncio.wait_for(response, timeout_s or self.cfg.request_timeout_s)
        except BackPressureError:
            self.metrics.rejected.inc(tags={"reason": f"{stage}_queue_full"})
            raise _overload(f"the {stage} queue is full", retry) from None
        except asyncio.TimeoutError:
            response.cancel()
            self.metrics.rejected.inc(tags={"reason": f"{stage}_timeout"})
            raise _overload(f"the {stage} did not answer within {timeout_s or self.cfg.request_timeout_s} s",
                            retry) from None
        except (ActorDiedError, ActorUnavailableError):
            self.metrics.rejected.inc(tags={"reason": f"{stage}_unavailable"})
            raise _overload(f"a {stage} replica is unavailable", retry) from None

    @api.post("/v1/route", response_model=RouteResponse, responses=ERRORS,
              summary="rank the skills that serve a request")
    async def route(self, body: RouteRequest, request: Request) -> RouteResponse:
        route_admission()  # again: others may have been admitted while this body was read
        _Replica.in_flight += 1
        try:
            return await self._route(body, request, time.perf_counter())
        finally:
            _Replica.in_flight -= 1

    async def _route(self, body: RouteRequest, request: Request, started: float) -> RouteResponse:
        query, rerank = plan_route(body, self.cfg.first_stage, self.reranker is not None, self.retrieve_k)
        first = query.first_stage
        retrieved = await self._call(self.retriever.retrieve.remote(query), "retriever")
        hits, scores, rerank_ms = retrieved["hits"], {}, 0.0
        if rerank and hits:
            head = [h[0] for h in hits[: self.retrieve_k]]
            reranked = await self._call(self.reranker.rerank.remote(body.query, head), "reranker")
            scores, rerank_ms = reranked["scores"], reranked["rerank_ms"]
        ordered = rerank_order(hits, scores, self.retrieve_k, self.cfg.rerank_weight)[: body.top_k]
        total_ms = (time.perf_counter() - started) * 1000
        self.metrics.stage("total", total_ms, first)
        request.state.log_fields = {"first_stage": first, "top_k": body.top_k, "reranked": bool(rerank),
                                    "results": len(ordered), "generation": retrieved["generation"]}
        return RouteResponse(
            request_id=request_id(request), first_stage=first, reranked=bool(rerank),
            index_generation=retrieved["generation"],
            results=[RoutedSkill(rank=r, skill_id=h[0], retrieval_score=h[1], name=h[2], description=h[3],
                                 category=h[4], rerank_score=scores.get(h[0])) for r, h in enumerate(ordered, 1)],
            timings_ms=Timings(embed=round(retrieved["embed_ms"], 3), search=round(retrieved["search_ms"], 3),
                               rerank=round(rerank_ms, 3), total=round(total_ms, 3)))

    @api.get("/v1/skills/{skill_id:path}", response_model=SkillOut, responses={404: {"model": ErrorResponse}},
             summary="one skill, full text")
    async def skill(self, skill_id: str) -> dict:
        found = await self._call(self.retriever.get_skill.remote(skill_id), "retriever")
        if found is None:
            raise HTTPException(404, f"no skill with id {skill_id!r}")
        return found

    @api.post("/v1/embeddings", response_model=compat.EmbeddingsResponse, responses=ERRORS,
              summary="OpenAI-compatible embeddings from the served encoder (query or document side)")
    async def embeddings(self, body: compat.EmbeddingsRequest, request: Request) -> compat.EmbeddingsResponse:
        with admitted():
            out = await self._call(self.retriever.embed.remote(compat.as_inputs(body), body.input_type), "retriever")
        if body.dimensions is not None and body.dimensions != out["vectors"].shape[1]:
            raise HTTPException(400, f"dimensions={body.dimensions}: this encoder gives {out['vectors'].shape[1]}")
        request.state.log_fields = {"inputs": len(out["vectors"]), "input_type": body.input_type}
        return compat.embeddings_response(out["vectors"], body, out["model"], out["tokens"])

    @api.post("/v1/rerank", response_model=compat.RerankResponse, responses=ERRORS,
              summary="Cohere/Jina-compatible reranking of given documents with the served cross-encoder")
    async def rerank(self, body: compat.RerankRequest, request: Request) -> compat.RerankResponse:
        if self.reranker is None:
            raise HTTPException(400, "this server runs no reranker (serving.reranker, or train one)")
        with admitted():
            logits = await self._call(self.reranker.score_documents.remote(body.query, body.documents), "reranker")
        request.state.log_fields = {"documents": len(body.documents), "top_n": body.top_n}
        return compat.rerank_response(logits, body, self.reranker_name, request_id(request))

    @api.post(MCP_PATH, include_in_schema=False)
    async def mcp(self, request: Request):
        """MCP over streamable HTTP (`serving.mcp`): `search_skills` routes as `/v1/route` does."""
        if getattr(self, "_mcp", None) is None:
            self._mcp = HttpEndpoint(self._search_skills, self._open_skill, self.cfg.host,
                                     compat.ADMITTED_PATHS[MCP_PATH])
        with admitted():
            return await self._mcp.respond(request.scope, request.receive)

    async def _search_skills(self, query: str, top_k: int, filters) -> list:
        body = RouteRequest(query=query, top_k=top_k, filters=filters)
        # the tool runs in the MCP session's task: a request of its own, with its own id, for `_route`
        own = Request({"type": "http", "method": "POST", "path": MCP_PATH, "headers": [], "state": {}})
        try:
            answer = await self._route(body, own, time.perf_counter())
        except HTTPException as err:  # the agent reads why (an unsafe filter value, an overload)
            raise Refused(str(err.detail)) from None
        return [SkillHit(**r.model_dump()) for r in answer.results]

    async def _open_skill(self, skill_id: str) -> dict | None:
        return await self._call(self.retriever.get_skill.remote(skill_id), "retriever")

    @api.get("/healthz", response_model=Health, summary="liveness: the ingress answers")
    async def healthz(self) -> Health:
        return Health(status="ok")

    @api.get("/readyz", response_model=Ready, responses={503: {"model": Ready}},
             summary="readiness: the retriever (and reranker) answer")
    async def readyz(self):
        try:
            calls = [self.retriever.ready.remote()] + ([self.reranker.ready.remote()] if self.reranker else [])
            answers = await asyncio.wait_for(asyncio.gather(*calls), 10.0)
        except Exception as err:  # noqa: BLE001 - any failure means not ready; the reason is reported
            return JSONResponse(Ready(status="not ready", detail=f"{type(err).__name__}: {err}"[:500]).model_dump(),
                                503, headers={"Retry-After": str(self.cfg.retry_after_s)})
        return Ready(status="ready", reranker=self.reranker_name, first_stage=self.cfg.first_stage, **answers[0])

    @api.post("/v1/index", response_model=IndexResponse, dependencies=[Depends(require_admin)],
              responses={**ERRORS, 401: {"model": ErrorResponse, "description": "no bearer token"},
                         403: {"model": ErrorResponse, "description": "wrong token, or the admin API is off"}},
              summary="admin: upsert or delete skills, or rebuild the index (bearer token)")
    async def index(self, body: IndexRequest, request: Request) -> IndexResponse:
        out = await self._call(self.admin.apply.remote(body.model_dump()), "index admin", self.cfg.admin_timeout_s)
        if "error" in out:
            raise HTTPException(out["status"], out["error"])
        request.state.log_fields = {"action": out["action"], "generation": out["generation"]}
        return IndexResponse(request_id=request_id(request), **out)


@serve.deployment(name="Retriever")
class Retriever:
    """The first stage over this replica's view of the index (a private Lite copy, or the server), reloaded when
    a new generation is published; requests are batched (`@serve.batch`)."""

    def __init__(self, config: PipelineConfig):
        self.metrics = replica_metrics()
        self.state: Generations[FirstStage] = Generations(
            generation_path(config), lambda previous: load_first_stage(config, previous),
            close=lambda stage: close_replica(stage.index), wait_s=config.serving.reload_wait_s,
            on_load=self._loaded)
        self._batch.set_max_batch_size(config.serving.retrieve_batch_size)
        self._batch.set_batch_wait_timeout_s(config.serving.batch_wait_ms / 1000)

    def __del__(self):
        # Serve calls this on a graceful shutdown: the replica's Lite copy goes with it
        if getattr(self, "state", None) is not None:
            close_replica(self.state.current.index)

    def _loaded(self, generation: int, ok: bool) -> None:
        self.metrics.reloads.inc(tags={"component": "retriever", "outcome": "ok" if ok else "failed"})
        if ok:
            self.metrics.generation.set(generation, tags={"component": "retriever"})

    async def retrieve(self, query: RetrieveQuery) -> dict:
        query.check()  # a query unpickled here skipped the check of its making: a bad one fails alone
        out = await self._batch(query)
        if isinstance(out, Exception):
            raise out
        return out

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _batch(self, queries: list[RetrieveQuery]) -> list[dict | Exception]:
        async with self.state.use() as (stage, generation):
            answers = await asyncio.to_thread(search_isolated, stage, queries)
            skills = [[stage.catalogue.get(s) for s, _ in a.hits] if not isinstance(a, Exception) else []
                      for a in answers]
        self.metrics.batch_size.observe(len(queries), tags={"stage": "retrieve"})
        out = []
        for query, answer, found in zip(queries, answers, skills):
            if isinstance(answer, Exception):  # this query's own failure; the batch's others are answered
                out.append(answer)
                continue
            if query.first_stage != "bm25":
                self.metrics.stage("embed", answer.embed_ms, query.first_stage)
            self.metrics.stage("search", answer.search_ms, query.first_stage)
            out.append({"generation": generation, "embed_ms": answer.embed_ms if query.first_stage != "bm25" else 0.0,
                        "search_ms": answer.search_ms,
                        "hits": [(s.id, score, s.name, s.description, s.category)
                                 for (_, score), s in zip(answer.hits, found) if s is not None]})
        return out

    async def embed(self, texts: list[str], input_type: str) -> dict:
        """Unit vectors of texts with the encoder of the current generation (`/v1/embeddings`)."""
        async with self.state.use() as (stage, _):
            vectors, tokens = await asyncio.to_thread(compat.embed_texts, stage.encoder, texts, input_type)
            return {"vectors": vectors, "tokens": tokens, "model": stage.encoder.spec.model}

    async def get_skill(self, skill_id: str) -> dict | None:
        async with self.state.use() as (stage, _):
            skill = stage.catalogue.get(skill_id)
        return None if skill is None else {**skill.to_row(), "metadata": skill.metadata}

    async def ready(self) -> dict:
        async with self.state.use() as (stage, generation):
            return {"generation": generation, "skills": len(stage.catalogue),
                    "index": stage.collection or stage.index.live(), "encoder": stage.encoder.spec.model}


@serve.deployment(name="Reranker")
class RerankerDeployment:
    """The cross-encoder over the full skill text; the pairs of several requests are scored in one pass
    (`@serve.batch`, sized in pairs). Skill texts come from the corpus of the current generation.

    Without a model (none trained, none configured, or `serving.rerank: false`) the deployment still exists, idle,
    so that the application has the same deployments whatever the profile and Serve config files always apply."""

    def __init__(self, config: PipelineConfig, model: str | None):
        from skillrouter.models.reranker import Reranker
        from skillrouter.retrieval.systems import reranker_spec

        self.metrics = replica_metrics()
        self.name = model
        if model is None:
            return
        serving = config.serving
        self.model = Reranker.load(reranker_spec(config, model), packed=serving.rerank_packing,
                                   compile=serving.rerank_compile, max_batch_tokens=serving.rerank_batch_tokens)
        if serving.rerank_compile:  # compile now, while the replica starts, not in its first requests
            from skillrouter.corpus.skill import Skill

            warm = [Skill(f"warm-up/{n}", "warm up", "a skill", "step " * n) for n in (16, 200, 900)]
            self.model.score_batch([("warm up", warm), ("warm up again", warm[:2])])
        self.catalogue: Generations[Catalogue] = Generations(
            generation_path(config), lambda previous: load_catalogue(config), wait_s=config.serving.reload_wait_s)
        # one request's pairs (up to routing.retrieve_k) must fit in a batch
        self._batch.set_max_batch_size(max(config.serving.rerank_batch_pairs, config.routing.retrieve_k))
        self._batch.set_batch_wait_timeout_s(config.serving.batch_wait_ms / 1000)

    async def rerank(self, query: str, skill_ids: list[str]) -> dict:
        return await self._batch((query, skill_ids))

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005, batch_size_fn=_pairs)
    async def _batch(self, items: list[tuple[str, list[str]]]) -> list[dict]:
        async with self.catalogue.use() as (catalogue, _):
            skills = [[s for s in map(catalogue.get, ids) if s is not None] for _, ids in items]
        started = time.perf_counter()
        scores = await asyncio.to_thread(rerank_scores, self.model, [(q, s) for (q, _), s in zip(items, skills)],
                                         memo=False)
        ms = (time.perf_counter() - started) * 1000
        self.metrics.batch_size.observe(sum(len(s) for s in skills), tags={"stage": "rerank"})
        self.metrics.stage("rerank", ms)
        return [{"scores": row, "rerank_ms": ms} for row in scores]

    async def score_documents(self, query: str, documents: list[str]) -> list[float]:
        """The cross-encoder's logits for given documents (`/v1/rerank`), in their order."""
        return await asyncio.to_thread(compat.score_documents, self.model, query, documents)

    async def ready(self) -> dict:
        if self.name is None:
            return {"model": None}
        async with self.catalogue.use() as (catalogue, generation):
            return {"model": self.name, "generation": generation, "skills": len(catalogue)}


@serve.deployment(name="IndexAdmin")
class IndexAdmin:
    """Index changes, one at a time (one replica), each all or nothing: validated whole, then the corpus table and
    the index, then a new generation."""

    def __init__(self, config: PipelineConfig):
        self.writer = IndexWriter(config, log=logger.info)
        self.lock = asyncio.Lock()

    async def apply(self, request: dict) -> dict:
        """The change's summary, or {"error", "status"}: 422 for a change that validation refuses (nothing was
        touched), 500 for a failed index step, a server fault (the corpus table and the generation are the
        previous ones, still serving)."""
        action = request.get("action")
        calls = {"upsert": lambda: self.writer.upsert(request.get("skills")),
                 "delete": lambda: self.writer.delete(request.get("ids")), "rebuild": self.writer.rebuild}
        if action not in calls:
            return {"error": f"unknown action {action!r:.40}: upsert, delete or rebuild", "status": 422}
        async with self.lock:
            try:
                out = await asyncio.to_thread(calls[action])
            except AdminError as err:
                return {"error": str(err), "status": 422}
            except Exception as err:  # noqa: BLE001 - any failure of the index step is answered, the state kept
                logger.exception("index %s failed", action)
                detail = f"{type(err).__name__}: {err}"[:1000].encode("utf-8", "backslashreplace").decode()
                return {"error": f"index {action} failed ({detail}); the corpus and generation "
                                 f"{self.writer.generation()} are unchanged and still serve", "status": 500}
        logger.info(f"index {action}: " + json.dumps(out))
        return out
