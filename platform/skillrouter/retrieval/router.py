"""The Python API: `Router(skills, system).route(query, top_k)` returns ranked skills."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from skillrouter.common.tables import format_table, shorten
from skillrouter.config import PipelineConfig
from skillrouter.corpus.skill import Skill
from skillrouter.retrieval.systems import get_system

MAX_TOP_K = 1000


@dataclass(frozen=True)
class Route:
    rank: int
    skill_id: str
    name: str
    score: float
    description: str
    category: str | None


class Router:
    """Routes requests to skills with one named system (see `skillrouter.retrieval.systems`)."""

    def __init__(self, skills: Sequence[Skill], system: str = "bm25", config: PipelineConfig | None = None):
        if not skills:
            raise ValueError("a router needs at least one skill")
        self.skills = list(skills)
        self.system = system
        self.retriever = get_system(system).build(self.skills, config or PipelineConfig())

    def route(self, query: str, top_k: int = 10) -> list[Route]:
        return self.route_batch([query], top_k)[0]

    def route_batch(self, queries: Sequence[str], top_k: int = 10) -> list[list[Route]]:
        if not 1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
        for q in queries:
            if not isinstance(q, str) or not q.strip():
                raise ValueError("query is empty")
        indices, scores = self.retriever.search(list(queries), top_k)
        return [[self._route(rank, i, score) for rank, (i, score) in enumerate(zip(row_idx, row_scores), start=1)]
                for row_idx, row_scores in zip(indices, scores)]

    def _route(self, rank: int, index: int, score: float) -> Route:
        s = self.skills[index]
        return Route(rank, s.id, s.name, float(score), s.description, s.category)


def routes_table(routes: list[Route], width: int = 60) -> str:
    return format_table(["rank", "skill", "score", "description"],
                        [[r.rank, r.skill_id, r.score, shorten(r.description, width)] for r in routes],
                        floatfmt=".2f")
