"""Retrieval, on a floor of its own below every stage that ranks skills (mining, the index, serving, evaluation).

- `bm25`: BM25 as one sparse product; `embeddings`: corpus embeddings and their cache (a Ray Data actor pool for
  large corpora); `categories`: a corpus's categories, its own or inferred;
- `filters`: filter values and the catalogue they apply to; `dense`: exact in-memory dense search;
  `fusion`: hybrid's fusion of dense and BM25 scores; `first_stage`: dense, BM25 or hybrid candidates;
  `rerank`: the second stage;
- `systems`: named systems (`bm25`, `finetuned+reranker`, ...) and `router`: the Python API over them.
"""
