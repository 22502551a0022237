"""Choose which skills get queries: a category-stratified, seeded sample."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from skillrouter.corpus.skill import Skill
from skillrouter.retrieval.categories import Categories


def stratified_sample(skills: Sequence[Skill], categories: Categories, num_skills: int | None,
                      seed: int = 0) -> list[Skill]:
    """`num_skills` skills allocated to categories in proportion to their size (largest remainder), at least one
    per category while there is room, shuffled within each category by `seed`. All skills when None."""
    if num_skills is None or num_skills >= len(skills):
        return list(skills)
    groups: dict[str, list[Skill]] = defaultdict(list)
    for s in skills:
        groups[categories.by_skill[s.id]].append(s)
    names = sorted(groups)
    rng = random.Random(seed)
    for name in names:
        rng.shuffle(groups[name])
    quota = {name: num_skills * len(groups[name]) / len(skills) for name in names}
    alloc = {name: int(q) for name, q in quota.items()}
    if num_skills >= len(names):
        for name in names:
            alloc[name] = max(alloc[name], 1)
    # Hand out what is left by largest remainder; take back from the largest groups when the minimum overshot.
    by_remainder = sorted(names, key=lambda n: (quota[n] - int(quota[n]), len(groups[n])), reverse=True)
    i = 0
    while sum(alloc.values()) < num_skills:
        name = by_remainder[i % len(names)]
        if alloc[name] < len(groups[name]):
            alloc[name] += 1
        i += 1
    while sum(alloc.values()) > num_skills:
        name = max(names, key=lambda n: alloc[n])
        alloc[name] -= 1
    chosen = {s.id for name in names for s in groups[name][: alloc[name]]}
    return [s for s in skills if s.id in chosen]
