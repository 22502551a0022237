"""Candidate retrieval for routing and hard-negative mining: BM25 (rank_bm25 semantics, vectorised)."""
