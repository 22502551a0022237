"""Named retrieval systems, so that `skillrouter eval --system NAME` and `Router(system=NAME)` mean one thing.

A system turns a list of skills into a `Retriever`: `search(queries, k) -> (indices, scores)`, indices into that
list, best first. Fixed names: `bm25`, `bm25-nd`, `minilm` (the bundled encoder, zero-shot), `finetuned` (the
encoder trained by the profile's run), `hybrid` (reciprocal rank fusion of `minilm` and `bm25`). `dense:MODEL` is a
bi-encoder from a Hugging Face id or a local path; `hybrid:SYSTEM` fuses any dense system with `bm25`
(`hybrid:finetuned`, `hybrid:dense:MODEL`).

Any of them followed by `+reranker` (the profile's trained reranker) or `+rerank:MODEL` is retrieve-then-rerank:
the first stage's top `routing.retrieve_k` (20, as in the paper) are rescored by the cross-encoder over the full
skill text; the rest of the first stage's ranking follows them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from skillrouter.config import PipelineConfig
from skillrouter.corpus.skill import Skill
from skillrouter.mining.bm25 import BM25Index, top_k

RRF_K = 60  # Cormack et al. (2009): the constant that damps the weight of the very first ranks
FUSION_DEPTH = 100  # candidates each fused system contributes

Item = TypeVar("Item", bound=Hashable)


class Retriever(Protocol):
    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class System:
    name: str
    description: str
    build: Callable[[Sequence[Skill], PipelineConfig], Retriever]


def _bm25(field: Callable[[Skill], str]) -> Callable[[Sequence[Skill], PipelineConfig], Retriever]:
    def build(skills: Sequence[Skill], config: PipelineConfig) -> Retriever:
        c = config.bm25
        return BM25Index.build([field(s) for s in skills], k1=c.k1, b=c.b, epsilon=c.epsilon,
                               progress=len(skills) > 20_000)
    return build


class DenseRetriever:
    """Cosine similarity between an encoder's query and skill embeddings, exact (a matrix product)."""

    def __init__(self, skills: Sequence[Skill], model: str, max_length: int):
        from skillrouter.models.encoder import Encoder, EncoderSpec  # torch only for the systems that need it

        self.encoder = Encoder.load(EncoderSpec(model=model, max_length=max_length))
        self.embeddings = self.encoder.encode_skills(skills)

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_k(self.encoder.encode_queries(list(queries)) @ self.embeddings.T, k)


def _dense(model: str) -> Callable[[Sequence[Skill], PipelineConfig], Retriever]:
    def build(skills: Sequence[Skill], config: PipelineConfig) -> Retriever:
        return DenseRetriever(skills, model, config.mining.encoder_max_length)
    return build


def trained_model(config: PipelineConfig, kind: str) -> str:
    """The export of this profile's `kind` training job; a clear error when it has not run."""
    path = config.model_dir(kind)
    if not (path / "config.json").exists():
        raise ValueError(f"no trained {kind} at {path}: run `skillrouter train {kind} --config ...` first")
    return str(path)


def _finetuned(skills: Sequence[Skill], config: PipelineConfig) -> Retriever:
    return DenseRetriever(skills, trained_model(config, "encoder"), config.encoder.max_length)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Item]], k: int = RRF_K) -> list[tuple[Item, float]]:
    """Fuse rankings (items best first) by reciprocal rank fusion: score(d) = sum over rankings of 1 / (k + rank),
    ranks from 1 (Cormack, Clarke and Buettcher, SIGIR 2009). Only ranks count, so scores on different scales
    (cosine, BM25) need no calibration. Ties go to the item met first reading the rankings rank by rank."""
    scores: dict[Item, float] = {}
    for depth in range(max((len(r) for r in rankings), default=0)):
        for ranking in rankings:
            if depth < len(ranking):
                item = ranking[depth]
                scores[item] = scores.get(item, 0.0) + 1.0 / (k + depth + 1)
    return sorted(scores.items(), key=lambda kv: -kv[1])  # stable: first met wins a tie


class HybridRetriever:
    """Reciprocal rank fusion of several first stages (a dense encoder and BM25): each contributes its top
    `depth`, and the fused order is cut to k."""

    def __init__(self, retrievers: Sequence[Retriever], depth: int = FUSION_DEPTH, k: int = RRF_K):
        self.retrievers, self.depth, self.k = list(retrievers), depth, k

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        rankings = [r.search(queries, max(k, self.depth))[0] for r in self.retrievers]
        # each row holds min(k, corpus size) items: every ranking alone has at least that many
        fused = [reciprocal_rank_fusion([list(r[q]) for r in rankings], self.k)[:k] for q in range(len(queries))]
        return (np.array([[i for i, _ in f] for f in fused], dtype=np.int64),
                np.array([[s for _, s in f] for f in fused], dtype=np.float64))


class RerankRetriever:
    """A first stage's top `retrieve_k` rescored by a cross-encoder; the first stage's order after them."""

    def __init__(self, first: Retriever, skills: Sequence[Skill], model: str, max_length: int, retrieve_k: int):
        from skillrouter.models.reranker import Reranker, RerankerSpec

        self.first, self.skills, self.retrieve_k = first, list(skills), retrieve_k
        self.reranker = Reranker.load(RerankerSpec(model=model, max_length=max_length))

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        indices, first_scores = self.first.search(queries, max(k, self.retrieve_k))
        out_idx, out_scores = [], []
        heads = [idx[: self.retrieve_k] for idx in indices]
        scored = self.reranker.score_batch([(q, [self.skills[i] for i in head]) for q, head in zip(queries, heads)])
        for idx, head, scores in zip(indices, heads, scored):
            scores = scores.numpy()
            order = np.argsort(-scores, kind="stable")
            tail = idx[self.retrieve_k:k]
            # the tail keeps its first-stage order below every reranked score
            tail_scores = scores.min() - 1.0 - np.arange(len(tail), dtype=np.float64)
            out_idx.append(np.concatenate([head[order], tail])[:k])
            out_scores.append(np.concatenate([scores[order], tail_scores])[:k])
        return np.array(out_idx), np.array(out_scores)


def _reranked(first: System, model: str | None) -> System:
    def build(skills: Sequence[Skill], config: PipelineConfig) -> Retriever:
        path = model or trained_model(config, "reranker")
        return RerankRetriever(first.build(skills, config), skills, path, config.reranker.max_length,
                               config.routing.retrieve_k)
    what = model or "the profile's trained reranker"
    return System(f"{first.name}+{'rerank:' + model if model else 'reranker'}",
                  f"{first.description}, top-k reranked by {what}", build)


def _hybrid(dense: System) -> System:
    def build(skills: Sequence[Skill], config: PipelineConfig) -> Retriever:
        return HybridRetriever([dense.build(skills, config), SYSTEMS["bm25"].build(skills, config)])
    return System(f"hybrid:{dense.name}" if dense.name != "minilm" else "hybrid",
                  f"reciprocal rank fusion (k={RRF_K}) of {dense.name} and bm25, top {FUSION_DEPTH} of each", build)


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in [
        System("bm25", "BM25 over the full skill text: name | description | body", _bm25(Skill.text)),
        System("bm25-nd", "BM25 over name | description only (the paper's metadata-only baseline)",
               _bm25(Skill.name_description)),
        System("minilm", "the bundled all-MiniLM-L6-v2 bi-encoder, zero-shot, over the full text", _dense("minilm")),
        System("finetuned", "the encoder fine-tuned by this profile's run (encoder.output_dir)", _finetuned),
    ]
}
SYSTEMS["hybrid"] = _hybrid(SYSTEMS["minilm"])


def get_system(name: str) -> System:
    first, plus, second = name.partition("+")
    if plus:
        if second == "reranker":
            return _reranked(get_system(first), None)
        if second.startswith("rerank:") and len(second) > len("rerank:"):
            return _reranked(get_system(first), second.removeprefix("rerank:"))
        raise ValueError(f"unknown second stage '{second}' in '{name}': use +reranker or +rerank:MODEL")
    if name.startswith("hybrid:") and len(name) > len("hybrid:"):
        dense = get_system(name.removeprefix("hybrid:"))
        if dense.name in ("bm25", "bm25-nd") or dense.name.startswith("hybrid"):
            raise ValueError(f"'{name}': hybrid fuses a dense system (minilm, finetuned, dense:MODEL) with bm25")
        return _hybrid(dense)
    if name.startswith("dense:") and len(name) > len("dense:"):
        model = name.removeprefix("dense:")
        return System(name, f"bi-encoder {model}", _dense(model))
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ValueError(f"unknown system '{name}'; available: {', '.join(sorted(SYSTEMS))}, "
                         f"or dense:MODEL, or hybrid:DENSE; any of them +reranker or +rerank:MODEL") from None
