"""Filters on a first stage's candidates: which values a filter may hold, and the catalogue they are applied to.

A filter keeps skills whose category (or source) equals one value, or any of a list. The values reach Milvus inside
an expression (`index.store.expression`), so a value no expression can carry (a control character, a lone
surrogate, not text) is refused here, where a request is made, before it can join a batch of other clients'.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np

from skillrouter.corpus.skill import Skill

FilterValue = str | Sequence[str] | None


class UnsafeValue(ValueError):
    """A value that cannot be compared in a Milvus expression (a control character, a lone surrogate, not text);
    refused before anything is sent."""


def value_problem(value) -> str | None:
    """Why `value` cannot be compared with a VARCHAR field in an expression, or None when it can. Control
    characters (NUL included) are refused everywhere: Lite could take them only raw, and no skill id holds one
    (`corpus.skill.id_problem`)."""
    if not isinstance(value, str):
        return f"expected text, got {type(value).__name__}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid Unicode (a lone surrogate)"
    bad = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    return None if bad is None else f"holds the control character {bad!r}"


class Catalogue:
    """The skills of one corpus (a serving generation, or a benchmark's pool), by id and by row, with their
    categories and sources for filtering."""

    def __init__(self, skills: Sequence[Skill]):
        self.skills = list(skills)
        self.rows = {s.id: i for i, s in enumerate(self.skills)}
        self.categories = np.array([s.category or "" for s in self.skills], dtype=object)
        self.sources = np.array([s.source or "" for s in self.skills], dtype=object)

    def __len__(self) -> int:
        return len(self.skills)

    def get(self, skill_id: str) -> Skill | None:
        row = self.rows.get(skill_id)
        return None if row is None else self.skills[row]

    def allowed(self, category: FilterValue = None, source: FilterValue = None) -> np.ndarray | None:
        """Rows passing the filters (the same rule as the index's: equal to one value, or to any of a list);
        None without filters."""
        if category is None and source is None:
            return None
        mask = np.ones(len(self.skills), dtype=bool)
        for values, column in ((category, self.categories), (source, self.sources)):
            if values is not None:
                mask &= np.isin(column, [values] if isinstance(values, str) else list(values))
        return mask
