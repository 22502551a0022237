"""The Model Context Protocol server (the official `mcp` SDK): two tools an agent calls instead of reading every
skill in its prompt, `search_skills` and `open_skill`, the pair the SkillRouter release ships.

Two transports, one tool set (`build_server`):
- stdio, `skillrouter mcp --config PROFILE`: a local agent starts the command; the router runs in that process
  over the run's corpus (`LocalSkills`: the profile's `routing.system`, as `skillrouter route` ranks);
- streamable HTTP at `/mcp` on the Serve ingress (`HttpEndpoint`): stateless with JSON answers, so any ingress
  replica answers any message; each POST is admitted like `/v1/route` (serving.max_in_flight, 503 with
  Retry-After) and its body read against the same deadline and size limit, and `search_skills` is a route request
  through the same retriever and reranker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, Field

from skillrouter import __version__
from skillrouter.serving.schemas import MAX_TOP_K, Filters, Query

MCP_PATH = "/mcp"
LOOPBACK = ("127.0.0.1", "localhost", "::1")

INSTRUCTIONS = (
    "This server finds the agent skill (a SKILL.md: instructions, scripts, conventions) that fits a task, among "
    "many thousands. Call search_skills with the user's request in their words, then open_skill on the best hit "
    "to read its full instructions before acting. Ranks are the router's, best first.")
SEARCH_DESCRIPTION = (
    "Find the skills that best serve a task. Pass the user's request (or your own description of the task) as "
    "`query`, in plain words: the router reads each skill's full text, so details help. Returns up to `top_k` "
    "skills, best first, with id, name, one-line description, category and scores (higher is better; the "
    "reranker's score orders the list when present). Narrow with `filters` (category and/or source, one value or "
    "a list of alternatives) only when the user asked for a kind of skill. Then call open_skill with the id of "
    "the hit you choose; if none fits, search again with other words rather than guessing.")
OPEN_DESCRIPTION = (
    "Read one skill in full: its SKILL.md (front matter with name, description and category, then the body with "
    "the steps, commands and conventions to follow). Use an id that search_skills returned; ids are paths such "
    "as `devops/docker-debug` and are matched exactly.")


class Refused(Exception):
    """A tool call the backend refuses, with a reason the agent can act on (the tool's error text)."""


class SkillHit(BaseModel):
    rank: int
    skill_id: str = Field(description="pass it to open_skill")
    name: str
    description: str
    category: str | None
    retrieval_score: float | None = Field(description="first-stage score (cosine, BM25 or fused)")
    rerank_score: float | None = Field(description="cross-encoder score; null when not reranked")


SearchFn = Callable[[str, int, Filters | None], Awaitable[list[SkillHit]]]
OpenFn = Callable[[str], Awaitable[dict[str, Any] | None]]


def skill_document(skill: dict[str, Any]) -> str:
    """A skill as its SKILL.md: YAML front matter (values written as JSON strings, which YAML reads as they are),
    then the body."""
    front = [f"{key}: {json.dumps(skill[key], ensure_ascii=False)}" for key in ("name", "description", "category")
             if skill.get(key)]
    return "\n".join(["---", f"id: {json.dumps(skill['id'], ensure_ascii=False)}", *front, "---", skill["body"]])


def build_server(search: SearchFn, opener: OpenFn):
    """The MCP server with the two tools over `search(query, top_k, filters)` and `opener(id)` (None: no such
    skill)."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations

    server = MCPServer("skillrouter", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")
    read_only = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                                open_world_hint=False)

    @server.tool(name="search_skills", description=SEARCH_DESCRIPTION, annotations=read_only)
    async def search_skills(
        query: Annotated[Query, Field(description="the task, in plain words (up to 2,000 characters)")],
        top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K, description="how many skills to return")] = 5,
        filters: Annotated[Filters | None, Field(description="optional: category and/or source")] = None,
    ) -> list[SkillHit]:
        try:
            return await search(query, top_k, filters)
        except Refused as err:
            raise ToolError(str(err)) from None

    @server.tool(name="open_skill", description=OPEN_DESCRIPTION, annotations=read_only)
    async def open_skill(
        skill_id: Annotated[str, Field(min_length=1, max_length=512, description="an id from search_skills")],
    ) -> str:
        skill = await opener(skill_id)
        if skill is None:
            raise ToolError(f"no skill with id {skill_id!r}; use an id that search_skills returned")
        return skill_document(skill)

    return server


class LocalSkills:
    """The stdio server's backend: a `Router` over the corpus in this process. Filters keep the matching skills of
    the router's first `Router` ranking (up to its MAX_TOP_K), in its order."""

    def __init__(self, skills: Sequence, system: str, config):
        from skillrouter.retrieval.filters import Catalogue
        from skillrouter.retrieval.router import Router

        self.router, self.catalogue, self.system = Router(skills, system, config), Catalogue(skills), system

    def _search(self, query: str, top_k: int, filters: Filters | None) -> list[SkillHit]:
        from skillrouter.retrieval.router import MAX_TOP_K as ROUTER_MAX

        allowed = self.catalogue.allowed(filters.category, filters.source) if filters else None
        k = top_k if allowed is None else min(len(self.catalogue), ROUTER_MAX)
        routes = self.router.route(query, k)
        if allowed is not None:
            routes = [r for r in routes if allowed[self.catalogue.rows[r.skill_id]]][:top_k]
        reranked = "rerank" in self.system
        return [SkillHit(rank=i, skill_id=r.skill_id, name=r.name, description=r.description, category=r.category,
                         retrieval_score=None if reranked else r.score, rerank_score=r.score if reranked else None)
                for i, r in enumerate(routes, 1)]

    async def search(self, query: str, top_k: int, filters: Filters | None) -> list[SkillHit]:
        return await asyncio.to_thread(self._search, query, top_k, filters)

    async def open(self, skill_id: str) -> dict[str, Any] | None:
        skill = self.catalogue.get(skill_id)
        return None if skill is None else skill.to_row()


def run_stdio(load_skills: Callable[[], Sequence], system: str, config) -> None:
    """Serve the tools over stdin/stdout until the client closes them. Stdout carries the protocol alone: what
    loading the corpus and the models prints goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        backend = LocalSkills(load_skills(), system, config)
    build_server(backend.search, backend.open).run("stdio")


class HttpEndpoint:
    """`/mcp` on an ingress replica: the SDK's streamable HTTP transport, stateless with JSON answers (no session
    to pin a client to a replica, no stream to hold open). Its session manager needs a task group for its life, so
    the first request starts one in the replica's event loop. With the ingress on a loopback address the SDK's
    DNS-rebinding protection admits loopback Host and Origin headers only; elsewhere the network decides."""

    def __init__(self, search: SearchFn, opener: OpenFn, host: str, max_body_bytes: int):
        from mcp.server.transport_security import TransportSecuritySettings

        loopback = host in LOOPBACK
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=loopback,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"] if loopback else [],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"] if loopback else [])
        server = build_server(search, opener)
        server.streamable_http_app(streamable_http_path=MCP_PATH, json_response=True, stateless_http=True,
                                   transport_security=security, max_request_body_size=max_body_bytes)
        self.manager = server.session_manager
        self._running: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def _start(self) -> None:
        if self._running is None:
            self._running = running = asyncio.Event()

            async def run():
                async with self.manager.run():
                    running.set()
                    await asyncio.Event().wait()  # for the replica's life

            self._task = asyncio.get_running_loop().create_task(run())
        await self._running.wait()

    async def respond(self, scope, receive):
        """The SDK's answer to one request, as a Starlette response (JSON answers are never streamed)."""
        from starlette.responses import Response

        await self._start()
        status, headers, chunks = 500, [], []

        async def send(message):
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.manager.handle_request(scope, receive, send)
        response = Response(b"".join(chunks), status)
        response.raw_headers = [(k, v) for k, v in headers if k.lower() != b"content-length"] + \
            [(b"content-length", str(sum(map(len, chunks))).encode())]
        return response
