"""Skill categories: the corpus's own where it has them, otherwise inferred by k-means over skill vectors.

The real pool has no categories, yet stratified sampling and same-category negatives need them. Inference
embeds each skill (`lsa`: TF-IDF of `name | description | body` reduced by a truncated SVD, fast on a CPU; an
encoder's embeddings can be passed in instead) and runs spherical k-means with k-means++ seeding. The result
records how it was obtained, so later stages and reports can say which categories they used.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.sparse.linalg import svds

from skillrouter.corpus.skill import Skill, corpus_version
from skillrouter.retrieval.bm25 import BM25Index


@dataclass
class Categories:
    by_skill: dict[str, str]
    method: str  # "given", or how they were inferred, e.g. "kmeans(k=32, vectors=lsa-128, seed=0)"

    def counts(self) -> Counter:
        return Counter(self.by_skill.values())


def lsa_dims(num_skills: int) -> int:
    """Few dimensions for a small corpus: with ~N/8 the clusters follow topics rather than single documents
    (measured on the bundled corpus: 29 dimensions 0.64 purity against its categories, 128 dimensions 0.41)."""
    return min(128, max(8, num_skills // 8))


def lsa_vectors(skills: Sequence[Skill], dims: int | None = None, seed: int = 0) -> np.ndarray:
    """Unit-length LSA vectors: the BM25-weighted term matrix (saturated tf, idf) reduced by a truncated SVD."""
    # plain terms: the dimensions and the purity below were measured with them
    weights = BM25Index.build([s.text() for s in skills], analyzer="plain").weights.T.tocsr()  # docs x terms
    dims = max(1, min(dims or lsa_dims(len(skills)), min(weights.shape) - 1))
    u, sigma, _ = svds(weights.astype(np.float32), k=dims, random_state=seed)
    vectors = u * sigma
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def spherical_kmeans(vectors: np.ndarray, k: int, seed: int = 0, iterations: int = 30) -> np.ndarray:
    """Cluster unit vectors by cosine; returns a label per row. k-means++ seeding, fixed seed."""
    n = len(vectors)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    centers = [vectors[rng.integers(n)]]
    best = 1 - vectors @ centers[0]
    for _ in range(1, k):
        probs = np.maximum(best, 0) ** 2
        pick = rng.choice(n, p=probs / probs.sum()) if probs.sum() > 0 else rng.integers(n)
        centers.append(vectors[pick])
        best = np.minimum(best, 1 - vectors @ vectors[pick])
    centers = np.stack(centers)
    labels = np.zeros(n, dtype=np.int64)
    for it in range(iterations):
        new = np.argmax(vectors @ centers.T, axis=1)
        if it > 0 and (new == labels).all():
            break
        labels = new
        for c in range(k):
            members = vectors[labels == c]
            if len(members):
                mean = members.sum(axis=0)
                centers[c] = mean / max(np.linalg.norm(mean), 1e-12)
    return labels


def infer_categories(skills: Sequence[Skill], k: int = 32, seed: int = 0,
                     vectors: np.ndarray | None = None, vectors_name: str | None = None) -> Categories:
    if vectors is None:
        vectors = lsa_vectors(skills, seed=seed)
        vectors_name = f"lsa-{vectors.shape[1]}"
    labels = spherical_kmeans(np.asarray(vectors, dtype=np.float32), k, seed)
    return Categories({s.id: f"cluster-{label:03d}" for s, label in zip(skills, labels)},
                      f"kmeans(k={k}, vectors={vectors_name}, seed={seed})")


def load_categories(path: str | Path, skills: Sequence[Skill]) -> Categories | None:
    """Categories saved by an earlier stage (`categories.json`), if they cover every skill of `skills`."""
    path = Path(path)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    by_skill = data.get("by_skill", {})
    if any(s.id not in by_skill for s in skills):
        return None
    return Categories({s.id: by_skill[s.id] for s in skills}, data.get("method", "unknown"))


def categories_for(skills: Sequence[Skill], k: int = 32, seed: int = 0) -> Categories:
    """The corpus's categories when every skill has one; inferred ones otherwise."""
    if all(s.category for s in skills):
        return Categories({s.id: s.category for s in skills}, "given")
    return infer_categories(skills, k, seed)


def saved_categories(skills: Sequence[Skill], k: int, seed: int, path: str | Path) -> Categories:
    """`categories_for`, written to `path` (`categories.json`) with what they were computed from, and read back
    from it while the corpus, k and seed are the same: inferring them takes half a minute over the 69K pool, which
    a resumed query generation would otherwise pay again. A file from other inputs, or unreadable, is replaced."""
    path, inputs = Path(path), {"corpus": corpus_version(skills), "k": k, "seed": seed}
    try:
        data = json.loads(path.read_text())
        if data.get("inputs") == inputs and set(data["by_skill"]) == {s.id for s in skills}:
            return Categories({s.id: data["by_skill"][s.id] for s in skills}, data["method"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):  # json's nesting limit
        pass
    cats = categories_for(skills, k, seed)
    path.write_text(json.dumps({"method": cats.method, "inputs": inputs, "by_skill": cats.by_skill}) + "\n")
    return cats

