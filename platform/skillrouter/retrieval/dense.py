"""Dense search: what a first stage asks of a query encoder and a dense backend, and the exact in-memory backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from skillrouter.retrieval.bm25 import top_k
from skillrouter.retrieval.filters import Catalogue, FilterValue


class QueryEncoder(Protocol):
    def encode_queries(self, queries: Sequence[str]) -> np.ndarray: ...


class DenseSearch(Protocol):
    def search(self, vectors: np.ndarray, k: int, category: FilterValue = None,
               source: FilterValue = None) -> list[list[tuple[str, float]]]: ...


class VectorSearch:
    """Exact dense search over vectors held in memory (unit rows: inner product = cosine): one matrix product per
    batch of queries, filters masking the scores over the catalogue's columns (the index's rule), then the top k.

    The evaluation searches a benchmark's embeddings with it, and a serving replica the vectors of its pinned index
    version: Milvus Lite 3 is pure Python and its FLAT search gathers the whole matrix into a new array on every
    call (about 155 ms at 69,400 x 1,024 on the H200 host, benchmarks/README.md), where a copy held here gives the
    same ranking for the cost of the product. `ids` name the rows; a row whose id the catalogue lacks (a change
    published between two reads) is never an answer. On the CPU the product is numpy's and ties go to the lower
    row; on another `device` (a replica's GPU) the matrix is copied there once and the product and top k run there.
    """

    def __init__(self, ids: Sequence[str], vectors: np.ndarray, catalogue: Catalogue, device: str = "cpu"):
        self.ids, self.catalogue, self.device = list(ids), catalogue, str(device)
        self.rows = np.array([catalogue.rows.get(i, -1) for i in self.ids], dtype=np.int64)
        matrix = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(self.ids), -1)
        if self.device == "cpu":
            self.matrix = matrix
        else:
            import torch

            self.matrix = torch.from_numpy(matrix).to(self.device)

    @classmethod
    def of_catalogue(cls, catalogue: Catalogue, embeddings: np.ndarray, device: str = "cpu") -> VectorSearch:
        """Over every skill of `catalogue`, `embeddings` row for row."""
        return cls([s.id for s in catalogue.skills], embeddings, catalogue, device)

    def _kept(self, category: FilterValue, source: FilterValue) -> np.ndarray | None:
        """Rows that may answer (known to the catalogue, passing the filters); None when all may."""
        keep = self.rows >= 0
        allowed = self.catalogue.allowed(category, source)
        if allowed is not None:
            keep &= allowed[np.maximum(self.rows, 0)]
        return None if keep.all() else keep

    def search(self, vectors: np.ndarray, k: int, category: FilterValue = None,
               source: FilterValue = None) -> list[list[tuple[str, float]]]:
        keep = self._kept(category, source)
        if self.device == "cpu":
            scores = np.asarray(vectors, dtype=np.float32) @ self.matrix.T
            if keep is not None:
                scores[:, ~keep] = -np.inf
            idx, top = top_k(scores, k)
        else:
            import torch

            queries = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(self.matrix.device)
            scores = queries @ self.matrix.T
            if keep is not None:
                scores[:, torch.from_numpy(~keep).to(scores.device)] = -torch.inf
            top, idx = torch.topk(scores, min(k, len(self.ids)), dim=1)
        return [[(self.ids[j], float(s)) for j, s in zip(row, row_top) if s > -np.inf]
                for row, row_top in zip(idx.tolist(), top.tolist())]
