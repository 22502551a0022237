"""The three-layer false-negative filter of SkillRouter, applied to every mined candidate against the positive."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skillrouter.filtering.jaccard import NearDuplicates
from skillrouter.filtering.names import normalise_name

SAME_NAME, BODY_JACCARD, EMBEDDING_COSINE = "same_name", "body_jaccard", "embedding_cosine"
LAYERS = (SAME_NAME, BODY_JACCARD, EMBEDDING_COSINE)


class FalseNegativeFilter:
    """`reason(positive, candidate)` names the first layer that says the candidate may serve the query too:
    (1) the same normalised name, (2) body trigram Jaccard above the threshold, (3) embedding cosine above it."""

    def __init__(self, names: Sequence[str], near_duplicates: NearDuplicates, embeddings: np.ndarray,
                 cosine_threshold: float = 0.92):
        self.names = [normalise_name(n) for n in names]
        self.near_duplicates = near_duplicates
        self.embeddings, self.cosine_threshold = embeddings, cosine_threshold

    def reason(self, positive: int, candidate: int) -> str | None:
        if self.names[positive] == self.names[candidate]:
            return SAME_NAME
        if (positive, candidate) in self.near_duplicates:
            return BODY_JACCARD
        if float(self.embeddings[positive] @ self.embeddings[candidate]) > self.cosine_threshold:
            return EMBEDDING_COSINE
        return None
