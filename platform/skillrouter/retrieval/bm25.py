"""BM25 with rank_bm25's `BM25Okapi` scores, as one sparse matrix product instead of a Python pass per query.

rank_bm25 scores a query by looping over its tokens and, for each, over every document's term dictionary: about
350 ms per query at 80K skills. Here the per-(document, term) weights

    idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl))

are computed once into a sparse term-by-document matrix, and a batch of queries is scored with one sparse product.
The idf follows BM25Okapi exactly: log(N - df + 0.5) - log(df + 0.5), with negative values replaced by
epsilon * (mean idf over the vocabulary). Repeated query tokens count once per occurrence, as in rank_bm25.
Documents and queries are read into terms by one analyzer (`common.text.analyzer`): rank_bm25 fed the same
terms gives the same scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from skillrouter.common.text import analyzer as get_analyzer
from skillrouter.config import BM25Config
from skillrouter.corpus.skill import Skill, unordered_corpus_version


class BM25Index:
    """A term-by-document BM25 weight matrix over a fixed corpus; `search` returns top-k document indices."""

    def __init__(self, weights: sp.csr_matrix, vocab: dict[str, int], analyzer: str = "english"):
        self.weights = weights  # (vocab, docs): a row is one term's postings, so queries slice rows
        self.vocab = vocab
        self.analyzer = analyzer  # queries are read into terms as the documents were
        self.terms = get_analyzer(analyzer)

    @property
    def num_docs(self) -> int:
        return self.weights.shape[1]

    @classmethod
    def build(cls, texts: Sequence[str], k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25,
              analyzer: str = "english", progress: bool = False) -> BM25Index:
        """`texts` is read once, in order (a lazy sequence keeps a large corpus from being copied as text), into
        terms by `analyzer` (`english` or `plain`, `common.text`). Memory is bounded by the postings: int32 term
        ids, and one float64 array at a time beside the result."""
        if not len(texts):
            raise ValueError("cannot build a BM25 index over an empty corpus")
        terms_of = get_analyzer(analyzer)
        vocab: dict[str, int] = {}
        indptr = [0]
        term_chunks, tf_chunks = [], []
        doc_len = np.empty(len(texts), dtype=np.float64)
        for i, text in enumerate(tqdm(texts, desc="bm25", unit=" docs", disable=not progress, mininterval=0.5)):
            tokens = terms_of(text)
            doc_len[i] = len(tokens)
            ids = np.fromiter((vocab.setdefault(t, len(vocab)) for t in tokens), dtype=np.int32, count=len(tokens))
            terms, tf = np.unique(ids, return_counts=True)
            term_chunks.append(terms)
            tf_chunks.append(tf.astype(np.int32))
            indptr.append(indptr[-1] + len(terms))
        del tokens, ids
        terms = np.concatenate(term_chunks)
        del term_chunks
        tf = np.concatenate(tf_chunks).astype(np.float64)
        del tf_chunks
        n_docs, n_terms = len(texts), len(vocab)
        df = np.bincount(terms, minlength=n_terms)
        idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
        idf[idf < 0] = epsilon * idf.mean()
        avgdl = doc_len.mean() if doc_len.sum() else 1.0
        # idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl)), the same operations in the same order as
        # rank_bm25 (bit for bit), in place
        norm = np.repeat(k1 * (1 - b + b * doc_len / avgdl), np.diff(indptr))
        norm += tf
        data = idf[terms]
        data *= tf
        del tf
        data *= k1 + 1
        data /= norm
        del norm
        # the (docs, terms) CSR's arrays read as its transpose, a (terms, docs) CSC: no copy before the conversion
        term_doc = sp.csc_matrix((data, terms, np.asarray(indptr)), shape=(n_terms, n_docs))
        del data, terms
        return cls(term_doc.tocsr(), vocab, analyzer)

    def query_matrix(self, queries: Sequence[str]) -> sp.csr_matrix:
        """Query-by-term counts; terms outside the vocabulary score zero in rank_bm25 and are dropped."""
        rows, cols = [], []
        for qi, query in enumerate(queries):
            for tok in self.terms(query):
                col = self.vocab.get(tok)
                if col is not None:
                    rows.append(qi)
                    cols.append(col)
        data = np.ones(len(rows), dtype=np.float64)  # duplicates are summed: repeated tokens count again
        return sp.csr_matrix((data, (rows, cols)), shape=(len(queries), len(self.vocab)))

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """Dense (queries, docs) BM25 scores, equal to rank_bm25's `get_scores` for each query."""
        return (self.query_matrix(queries) @ self.weights).toarray()

    def search(self, queries: Sequence[str], k: int, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (indices, scores) per query, best first; ties go to the lower document index."""
        k = min(k, self.num_docs)
        idx_out = np.empty((len(queries), k), dtype=np.int64)
        score_out = np.empty((len(queries), k), dtype=np.float64)
        for start in range(0, len(queries), batch_size):
            scores = self.scores(queries[start:start + batch_size])
            idx, top = top_k(scores, k)
            idx_out[start:start + len(idx)] = idx
            score_out[start:start + len(idx)] = top
        return idx_out, score_out


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of a dense score matrix, sorted by score descending, then index ascending."""
    n = scores.shape[1]
    k = min(k, n)
    if k < n:
        # argpartition leaves ties at the k-th score in arbitrary order; keep the lowest indices among them so
        # that results are deterministic and match a stable sort of the full row.
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
        out_idx = np.empty((scores.shape[0], k), dtype=np.int64)
        for r in range(scores.shape[0]):
            above = np.flatnonzero(scores[r] > kth[r])
            tied = np.flatnonzero(scores[r] == kth[r])[: k - len(above)]
            cand = np.concatenate([above, tied])
            out_idx[r] = cand[np.lexsort((cand, -scores[r, cand]))]
    else:
        out_idx = np.lexsort((np.broadcast_to(np.arange(n), scores.shape), -scores), axis=1)
    return out_idx, np.take_along_axis(scores, out_idx, axis=1)


class _Texts(Sequence):
    """Each skill's text, made when read: a 70K-skill pool's full texts would be another half gigabyte."""

    def __init__(self, skills: Sequence[Skill], text: Callable[[Skill], str]):
        self.skills, self.text = skills, text

    def __len__(self) -> int:
        return len(self.skills)

    def __getitem__(self, i):
        return self.text(self.skills[i])

    def __iter__(self):
        return map(self.text, self.skills)


# The last index built, kept for the next caller over the same corpus in this process: in one pipeline run,
# mining, selection and every BM25-based system of each evaluated tier read one 69K pool (28 s a build on an H100
# host). One entry: an index of the pool holds a few hundred MB.
_LAST: list[tuple[tuple, list[str], BM25Index]] = []
MEMO_MIN_SKILLS = 2000  # smaller corpora build in well under a second: not worth holding


def build_bm25(skills: Sequence[Skill], params: BM25Config, text: Callable[[Skill], str] = Skill.text) -> BM25Index:
    """BM25 over each skill's `text` (by default the full text) with the profile's analyzer and parameters; the
    same corpus in any order, with the same text and parameters, reuses this process's last index (its columns
    put in the caller's order)."""
    ids = [s.id for s in skills]
    memo = len(skills) >= MEMO_MIN_SKILLS and len(set(ids)) == len(ids)
    if memo:
        key = (text, params.k1, params.b, params.epsilon, params.analyzer, unordered_corpus_version(skills))
        if _LAST and _LAST[0][0] == key:
            _, order, index = _LAST[0]
            if order == ids:
                return index
            column = {sid: j for j, sid in enumerate(order)}
            return BM25Index(index.weights[:, [column[sid] for sid in ids]].tocsr(), index.vocab, index.analyzer)
    index = BM25Index.build(_Texts(skills, text), k1=params.k1, b=params.b, epsilon=params.epsilon,
                            analyzer=params.analyzer, progress=len(skills) > 20_000)
    if memo:
        _LAST[:] = [(key, ids, index)]
    return index
