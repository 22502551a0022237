"""Named retrieval systems, so that `skillrouter eval --system NAME` and `Router(system=NAME)` mean one thing.

A system turns a list of skills into a `Retriever`: `search(queries, k) -> (indices, scores)`, indices into that
list, best first. Later stages (dense encoders, rerankers, hybrids) register here under their own names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from skillrouter.config import PipelineConfig
from skillrouter.corpus.skill import Skill
from skillrouter.mining.bm25 import BM25Index


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


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in [
        System("bm25", "BM25 over the full skill text: name | description | body", _bm25(Skill.text)),
        System("bm25-nd", "BM25 over name | description only (the paper's metadata-only baseline)",
               _bm25(Skill.name_description)),
    ]
}


def get_system(name: str) -> System:
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ValueError(f"unknown system '{name}'; available: {', '.join(sorted(SYSTEMS))}") from None
