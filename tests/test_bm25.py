import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from skillrouter.common.text import tokenize
from skillrouter.retrieval.bm25 import BM25Index, top_k


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    # A Zipf-like vocabulary, so that common terms get rank_bm25's negative-idf epsilon treatment.
    words = np.array([f"w{i}" for i in range(400)])
    p = 1 / np.arange(1, 401)
    p /= p.sum()
    docs = [" ".join(rng.choice(words, size=rng.integers(3, 120), p=p)) for _ in range(400)]
    queries = [" ".join(rng.choice(words, size=rng.integers(1, 6), p=p)) for _ in range(200)]
    return docs, queries + ["w1 w1 w1 w7", "unknownword", "W3, w3!"]


def test_scores_equal_rank_bm25(corpus):
    docs, queries = corpus
    ref = BM25Okapi([tokenize(d) for d in docs], k1=1.2, b=0.6, epsilon=0.3)
    ours = BM25Index.build(docs, k1=1.2, b=0.6, epsilon=0.3)
    expected = np.array([ref.get_scores(tokenize(q)) for q in queries])
    np.testing.assert_allclose(ours.scores(queries), expected, rtol=1e-10, atol=1e-10)


def test_identical_top_k_on_sample(corpus):
    docs, queries = corpus
    ref = BM25Okapi([tokenize(d) for d in docs])
    expected = np.array([ref.get_scores(tokenize(q)) for q in queries])
    want_idx, _ = top_k(expected, 10)
    got_idx, got_scores = BM25Index.build(docs).search(queries, 10, batch_size=32)
    assert (got_idx == want_idx).all()
    assert (np.diff(got_scores, axis=1) <= 0).all()


def test_top_k_breaks_ties_by_index():
    scores = np.array([[0.0, 1.0, 1.0, 0.5, 1.0, 0.0]])
    idx, vals = top_k(scores, 2)
    assert idx.tolist() == [[1, 2]] and vals.tolist() == [[1.0, 1.0]]
    idx, _ = top_k(scores, 5)
    assert idx.tolist() == [[1, 2, 4, 3, 0]]
    idx, _ = top_k(scores, 99)
    assert idx.shape == (1, 6)


def test_unknown_and_repeated_tokens():
    index = BM25Index.build(["apple banana", "banana cherry", "cherry date elderberry fig"])
    s = index.scores(["zzz", "cherry", "cherry cherry"])
    assert (s[0] == 0).all()
    np.testing.assert_allclose(s[2], 2 * s[1])


def test_tokenizer_handles_code_and_cjk():
    assert tokenize("docker_compose up --build, K8s!") == ["docker", "compose", "up", "build", "k8s"]
    assert tokenize("用 Python 写测试") == ["用", "python", "写", "测", "试"]


def test_empty_corpus_is_an_error():
    with pytest.raises(ValueError, match="empty corpus"):
        BM25Index.build([])
