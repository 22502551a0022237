"""Layer 2: body word-trigram Jaccard above a threshold, found at scale with MinHash LSH and confirmed exactly.

Shingles are word trigrams of the body, hashed to 32 bits with CRC-32 (stable across processes, unlike `hash`).
`MinHash.bulk` builds the signatures, `LeanMinHash` keeps them small and `MinHashLSH.insertion_session` indexes them;
every LSH candidate pair is then verified with the exact Jaccard of the shingle sets, so the filter never removes
a pair on an estimate. The LSH looks for candidates at a lower threshold than the one that decides: banded LSH
tuned for 0.6 (18 bands of 7 rows at 128 permutations) finds a pair of Jaccard 0.61 only 44% of the time, tuned
for 0.4 (32 bands of 4) 99%, and exact verification removes the extra candidates. `lsh_recall` measures what it
still misses against exact Jaccard on a sample.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from datasketch import LeanMinHash, MinHash, MinHashLSH
from tqdm import tqdm

from skillrouter.common.text import tokenize


def trigram_shingles(text: str) -> np.ndarray:
    """Sorted unique CRC-32 hashes of the word trigrams of `text` (empty below three words)."""
    words = tokenize(text)
    grams = {zlib.crc32(f"{a} {b} {c}".encode()) for a, b, c in zip(words, words[1:], words[2:])}
    return np.fromiter(sorted(grams), dtype=np.uint32, count=len(grams))


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 or len(b) == 0:
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


class NearDuplicates:
    """All pairs of a corpus whose body trigram Jaccard exceeds `threshold`, as neighbour sets by index."""

    def __init__(self, shingles: Sequence[np.ndarray], threshold: float = 0.6, num_perm: int = 128,
                 lsh_threshold: float | None = None, seed: int = 1, progress: bool = False):
        self.threshold = threshold
        lsh_threshold = max(0.05, threshold - 0.2) if lsh_threshold is None else lsh_threshold
        self.neighbours: dict[int, set[int]] = {}
        usable = [i for i, s in enumerate(shingles) if len(s)]
        # hashfunc=int: the shingles are already 32-bit hashes, so datasketch need not hash them again.
        sigs = MinHash.bulk([shingles[i].tolist() for i in usable], num_perm=num_perm, seed=seed, hashfunc=int)
        lsh = MinHashLSH(threshold=lsh_threshold, num_perm=num_perm)
        with lsh.insertion_session() as session:
            for i, sig in zip(usable, sigs):
                session.insert(i, LeanMinHash(sig))
        self.candidates = 0
        for i, sig in tqdm(list(zip(usable, sigs)), desc="lsh", disable=not progress, mininterval=1):
            for j in lsh.query(sig):
                if j <= i:
                    continue
                self.candidates += 1
                if exact_jaccard(shingles[i], shingles[j]) > threshold:
                    self.neighbours.setdefault(i, set()).add(j)
                    self.neighbours.setdefault(j, set()).add(i)

    def __contains__(self, pair: tuple[int, int]) -> bool:
        a, b = pair
        return b in self.neighbours.get(a, ())

    @property
    def num_pairs(self) -> int:
        return sum(len(v) for v in self.neighbours.values()) // 2


class ExactJaccard:
    """`(i, j) in pairs`: whether bodies i and j exceed `threshold` by exact trigram Jaccard, computed when asked
    (shingles kept once made). For a few candidates per query over a corpus, where the all-pairs LSH is not built."""

    def __init__(self, bodies: Sequence[str], threshold: float = 0.6):
        self.bodies, self.threshold = bodies, threshold
        self.shingles: dict[int, np.ndarray] = {}

    def _of(self, i: int) -> np.ndarray:
        if i not in self.shingles:
            self.shingles[i] = trigram_shingles(self.bodies[i])
        return self.shingles[i]

    def __contains__(self, pair: tuple[int, int]) -> bool:
        a, b = pair
        return exact_jaccard(self._of(a), self._of(b)) > self.threshold


def exact_pairs(shingles: Sequence[np.ndarray], threshold: float) -> set[tuple[int, int]]:
    """Every pair above `threshold` by exact Jaccard, through one sparse product (for samples of a few thousand)."""
    rows, cols = [], []
    for i, s in enumerate(shingles):
        rows.extend([i] * len(s))
        cols.extend(s.tolist())
    _, col_ids = np.unique(np.asarray(cols, dtype=np.uint64), return_inverse=True)
    x = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, col_ids)),
                      shape=(len(shingles), int(col_ids.max()) + 1 if len(cols) else 0))
    inter = sp.triu(x @ x.T, k=1).tocoo()
    sizes = np.array([len(s) for s in shingles], dtype=np.float64)
    jac = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    keep = jac > threshold
    return set(zip(inter.row[keep].tolist(), inter.col[keep].tolist()))


def lsh_recall(shingles: Sequence[np.ndarray], threshold: float = 0.6, num_perm: int = 128,
               lsh_threshold: float | None = None) -> dict:
    """Share of the exact above-threshold pairs of `shingles` that LSH (+ exact verification) finds."""
    truth = exact_pairs(shingles, threshold)
    found = NearDuplicates(shingles, threshold, num_perm, lsh_threshold)
    hits = sum((i, j) in found for i, j in truth)
    return {"exact_pairs": len(truth), "found": hits, "recall": hits / len(truth) if truth else 1.0,
            "lsh_candidates": found.candidates}
