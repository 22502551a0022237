"""The endpoints other tools already speak: OpenAI's `POST /v1/embeddings` over the served encoder and the
Cohere/Jina-style `POST /v1/rerank` over the served cross-encoder (the shapes TEI, Infinity and vLLM serve).

Their request and response models are here with their limits; the ingress (`deployments.Ingress`) admits them like
`/v1/route` (the same in-flight limit, 503 with Retry-After) and reads their bodies against the same deadline, with
a larger size limit (`MAX_COMPAT_BODY_BYTES`: a batch of documents). The work is plain Python over the models
(`embed_texts`, `score_documents`), which the Retriever and Reranker deployments call in their replicas.

Conventions followed where the APIs leave room:
- `/v1/embeddings`: `input_type` chooses the side, `query` (default: the encoder's query format, with the
  instruction a Qwen3 encoder is trained with) or `document` (the text as it is, as skills are embedded). `model`
  is echoed, never used to choose: the server serves one encoder, whose name the answer's `model` gives. Token
  arrays as input are refused (422). `encoding_format` `float` or `base64` (little-endian float32, which the OpenAI
  client asks for by default). `dimensions` is accepted only when it is the encoder's own.
- `/v1/rerank`: `relevance_score` is the sigmoid of the cross-encoder's logit (0 to 1, the order of the logits;
  for a Qwen3 reranker it is P("yes")), results best first, `top_n` of them (default: all).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from skillrouter.corpus.skill import Skill
from skillrouter.serving.mcp import MCP_PATH
from skillrouter.serving.schemas import MAX_QUERY_CHARS, MAX_ROUTE_BODY_BYTES, Query

MAX_EMBED_INPUTS = 128
MAX_DOCUMENT_CHARS = 16_000  # past any encoder's max_length; a document is truncated by the model, not refused
MAX_RERANK_DOCUMENTS = 100  # a forward pass each: on CPU, about what one request should cost
MAX_COMPAT_BODY_BYTES = 4 << 20  # MAX_EMBED_INPUTS documents of MAX_DOCUMENT_CHARS, with JSON's escapes
# POSTs counted against serving.max_in_flight, and the largest body each may send
ADMITTED_PATHS = {"/v1/route": MAX_ROUTE_BODY_BYTES, "/v1/embeddings": MAX_COMPAT_BODY_BYTES,
                  "/v1/rerank": MAX_COMPAT_BODY_BYTES, MCP_PATH: MAX_ROUTE_BODY_BYTES}

Document = Annotated[str, StringConstraints(min_length=1, max_length=MAX_DOCUMENT_CHARS)]
InputType = Literal["query", "document"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EmbeddingsRequest(_Request):
    """OpenAI's embeddings request, plus `input_type`."""

    input: Document | Annotated[list[Document], Field(min_length=1, max_length=MAX_EMBED_INPUTS)] = Field(
        description=f"a text, or a list of 1 to {MAX_EMBED_INPUTS} (each 1 to {MAX_DOCUMENT_CHARS} characters; "
                    "token arrays are not accepted)", examples=["merge these PDF files into one"])
    model: str | None = Field(None, max_length=512, description="echoed only: the server serves one encoder "
                              "(the answer's `model` names it)")
    input_type: InputType = Field("query", description="query: a user's request, in the encoder's query format "
                                  "(the instruction of a Qwen3 encoder; a query is capped at its query_max_chars); "
                                  "document: a skill's text as it is (`name | description | body` for a skill)")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: little-endian float32 bytes, base64-encoded")
    dimensions: int | None = Field(None, ge=1, description="must be the encoder's dimension when given")
    user: str | None = Field(None, max_length=256, description="accepted and ignored (OpenAI's end-user id)")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="unit-length vector (cosine = dot product); a base64 string "
                                         "with encoding_format=base64")


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int = Field(description="tokens the encoder read, after formatting and truncation")
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str = Field(description="the served encoder")
    usage: EmbeddingsUsage


class RerankRequest(_Request):
    """Cohere's and Jina's rerank request."""

    query: Query = Field(description=f"the user's request, 1 to {MAX_QUERY_CHARS} characters after trimming")
    documents: list[Document] = Field(min_length=1, max_length=MAX_RERANK_DOCUMENTS,
                                      description=f"1 to {MAX_RERANK_DOCUMENTS} texts to score against the query "
                                                  f"(each 1 to {MAX_DOCUMENT_CHARS} characters)")
    model: str | None = Field(None, max_length=512, description="echoed only: the server serves one reranker")
    top_n: int | None = Field(None, ge=1, le=MAX_RERANK_DOCUMENTS, description="results to return, best first "
                              "(default: all)")
    return_documents: bool = Field(False, description="include each result's text")


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int = Field(description="the document's position in the request")
    relevance_score: float = Field(description="sigmoid of the cross-encoder's logit, 0 to 1, higher is better")
    document: RerankDocument | None = Field(None, description="with return_documents=true")


class RerankResponse(BaseModel):
    id: str = Field(description="the request id (also in the X-Request-ID header)")
    model: str = Field(description="the served reranker")
    results: list[RerankResult]


@dataclass(frozen=True)
class TextDocument(Skill):
    """A document to score as it is: its text is its body alone (a skill's is `name | description | body`), so the
    reranker reads the caller's text in its own pair format, windows and truncation included."""

    def text(self) -> str:
        return self.body


def as_documents(texts: Sequence[str]) -> list[TextDocument]:
    return [TextDocument(id=str(i), name="", description="", body=t) for i, t in enumerate(texts)]


def embed_texts(encoder, texts: Sequence[str], input_type: InputType) -> tuple[np.ndarray, int]:
    """Unit vectors of `texts` on the query or the document side, and the tokens the encoder read."""
    formatted = [encoder.format_query(t) for t in texts] if input_type == "query" else list(texts)
    tokens = sum(len(ids) for ids in encoder.tokenize(formatted))
    return encoder.encode(formatted), tokens


def score_documents(reranker, query: str, documents: Sequence[str]) -> list[float]:
    """The cross-encoder's logit for each (query, document) pair, in the documents' order."""
    return reranker.score(query, as_documents(documents)).tolist()


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def embeddings_response(vectors: np.ndarray, body: EmbeddingsRequest, model: str, tokens: int) -> EmbeddingsResponse:
    vectors = np.asarray(vectors, dtype="<f4")
    if body.encoding_format == "base64":
        data = [base64.b64encode(v.tobytes()).decode("ascii") for v in vectors]
    else:
        data = [v.tolist() for v in vectors]
    return EmbeddingsResponse(data=[Embedding(index=i, embedding=e) for i, e in enumerate(data)], model=model,
                              usage=EmbeddingsUsage(prompt_tokens=tokens, total_tokens=tokens))


def rerank_response(logits: Sequence[float], body: RerankRequest, model: str, request_id: str) -> RerankResponse:
    """Results best first (a tie keeps the request's order), `top_n` of them."""
    order = sorted(range(len(logits)), key=lambda i: -logits[i])[: body.top_n or len(logits)]
    return RerankResponse(id=request_id, model=model, results=[
        RerankResult(index=i, relevance_score=sigmoid(logits[i]),
                     document=RerankDocument(text=body.documents[i]) if body.return_documents else None)
        for i in order])


def as_inputs(body: EmbeddingsRequest) -> list[str]:
    return [body.input] if isinstance(body.input, str) else list(body.input)
