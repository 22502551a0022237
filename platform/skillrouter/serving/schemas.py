"""Request and response models of the HTTP API. Their limits are the API's limits, and FastAPI publishes them in
the OpenAPI schema (`GET /openapi.json`). Every model forbids unknown keys: a misspelt field is an error, not a
silently ignored option."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_QUERY_CHARS = 2000
MAX_TOP_K = 50
MAX_FILTER_VALUES = 50
MAX_ROUTE_BODY_BYTES = 64 << 10  # a 2,000-character query and its options fit many times over
MAX_ADMIN_BODY_BYTES = 64 << 20  # an upsert of up to MAX_UPSERT skills with full bodies
MAX_UPSERT = 1000
MAX_DELETE = 10_000

FirstStage = Literal["dense", "bm25", "hybrid"]
FilterValue = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
FilterValues = Annotated[list[FilterValue], Field(min_length=1, max_length=MAX_FILTER_VALUES)]
Query = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_QUERY_CHARS)]
SkillId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=512)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Filters(_Strict):
    """Restrict the answer to skills of some categories or sources: one value or a list (any of them)."""

    category: FilterValue | FilterValues | None = Field(
        None, description="one category, or several (any of them)", examples=["ci-cd"])
    source: FilterValue | FilterValues | None = Field(None, description="one source, or several")


class RouteRequest(_Strict):
    query: Query = Field(description=f"the user's request, 1 to {MAX_QUERY_CHARS} characters after trimming",
                         examples=["Our CI takes 25 minutes; cache the dependencies."])
    top_k: int = Field(10, ge=1, le=MAX_TOP_K, description="skills to return")
    rerank: bool | None = Field(None, description="rescore the first stage's top candidates with the "
                                "cross-encoder; default: yes when the server runs a reranker")
    first_stage: FirstStage | None = Field(None, description="dense (encoder + Milvus), bm25, or hybrid "
                                           "(both fused: serving.fusion); default: the server's")
    filters: Filters | None = None


class RoutedSkill(BaseModel):
    rank: int
    skill_id: str
    name: str
    description: str
    category: str | None
    retrieval_score: float = Field(description="first-stage score: cosine (dense), BM25, or the fused score (hybrid)")
    rerank_score: float | None = Field(description="cross-encoder logit; null when not reranked (reranking "
                                       "off, or a candidate below the reranked head)")


class Timings(BaseModel):
    embed: float = Field(description="query encoding, ms (0 for bm25)")
    search: float = Field(description="Milvus and/or BM25 search and fusion, ms")
    rerank: float = Field(description="cross-encoder scoring, ms (0 when not reranked)")
    total: float = Field(description="the whole request inside the ingress, ms")


class RouteResponse(BaseModel):
    request_id: str = Field(description="also in the X-Request-ID response header and in the server's logs")
    first_stage: FirstStage
    reranked: bool
    index_generation: int = Field(description="the index generation the retriever answered from")
    results: list[RoutedSkill]
    timings_ms: Timings


class SkillOut(BaseModel):
    id: str
    name: str
    description: str
    body: str
    category: str | None
    source: str
    metadata: dict[str, Any]
    content_hash: str


class SkillIn(BaseModel):
    """A skill to add or replace; validated as ingestion validates records (non-empty name, description, body,
    under corpus.max_skill_chars, no NUL bytes)."""

    model_config = ConfigDict(extra="forbid")

    id: SkillId
    name: str
    description: str
    body: str
    category: str | None = None
    source: str | None = Field(None, description="default: 'api'")
    metadata: dict[str, Any] = Field(default_factory=dict)


class UpsertRequest(_Strict):
    action: Literal["upsert"]
    skills: list[SkillIn] = Field(min_length=1, max_length=MAX_UPSERT)


class DeleteRequest(_Strict):
    action: Literal["delete"]
    ids: list[SkillId] = Field(min_length=1, max_length=MAX_DELETE)


class RebuildRequest(_Strict):
    action: Literal["rebuild"]


IndexRequest = Annotated[UpsertRequest | DeleteRequest | RebuildRequest, Field(discriminator="action")]


class IndexResponse(BaseModel):
    request_id: str
    action: Literal["upsert", "delete", "rebuild"]
    generation: int = Field(description="the new index generation; replicas answer from it once loaded")
    version: str = Field(description="the Milvus collection the alias points to")
    skills: int = Field(description="skills in the corpus and the index after the change")
    added: int = 0
    changed: int = 0
    deleted: int = 0
    not_found: list[str] = Field(default_factory=list, description="ids asked to be deleted that were absent")
    seconds: float


class ErrorResponse(BaseModel):
    detail: str | list[dict[str, Any]]
    request_id: str | None = None


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    generation: int | None = None
    skills: int | None = None
    index: str | None = None
    encoder: str | None = None
    reranker: str | None = None
    first_stage: FirstStage | None = None
    detail: str | None = None
