"""Named retrieval systems, so that `skillrouter eval --system NAME` and `Router(system=NAME)` mean one thing.

A system turns a list of skills into a `Retriever`: `search(queries, k) -> (indices, scores)`, indices into that
list, best first. Fixed names: `bm25`, `bm25-nd`, `minilm` (the bundled encoder, zero-shot). `dense:MODEL` is a
bi-encoder from a Hugging Face id or a local path (a fine-tuned checkpoint, say).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from skillrouter.config import PipelineConfig
from skillrouter.corpus.skill import Skill
from skillrouter.mining.bm25 import BM25Index, top_k


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


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in [
        System("bm25", "BM25 over the full skill text: name | description | body", _bm25(Skill.text)),
        System("bm25-nd", "BM25 over name | description only (the paper's metadata-only baseline)",
               _bm25(Skill.name_description)),
        System("minilm", "the bundled all-MiniLM-L6-v2 bi-encoder, zero-shot, over the full text", _dense("minilm")),
    ]
}


def get_system(name: str) -> System:
    if name.startswith("dense:") and len(name) > len("dense:"):
        model = name.removeprefix("dense:")
        return System(name, f"bi-encoder {model}", _dense(model))
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ValueError(f"unknown system '{name}'; available: {', '.join(sorted(SYSTEMS))}, "
                         f"or dense:MODEL") from None
