import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from skillrouter.common.text import ENGLISH_STOPWORDS, analyzer, english_terms, tokenize
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


@pytest.fixture(scope="module")
def english_corpus():
    """English words with inflections and stopwords, so that the english analyzer merges and drops terms."""
    rng = np.random.default_rng(1)
    words = np.array("query queries queried migration migrations migrate slow slowly index indexes indexing the a of "
                     "and to is postgres postgresql table tables order orders ordering page pages join joins plan "
                     "planner week's report reports 用 写 测试".split())
    docs = [" ".join(rng.choice(words, size=rng.integers(3, 60))) for _ in range(300)]
    queries = [" ".join(rng.choice(words, size=rng.integers(1, 8))) for _ in range(100)]
    return docs, queries + ["The queries of the migrations", "the a of", "Postgres query got slow"]


@pytest.mark.parametrize("name", ["plain", "english"])
def test_scores_equal_rank_bm25(corpus, english_corpus, name):
    """rank_bm25 fed the analyzer's terms gives the index's scores, for either analyzer."""
    terms = analyzer(name)
    for docs, queries in (corpus, english_corpus):
        ref = BM25Okapi([terms(d) for d in docs], k1=1.2, b=0.6, epsilon=0.3)
        ours = BM25Index.build(docs, k1=1.2, b=0.6, epsilon=0.3, analyzer=name)
        expected = np.array([ref.get_scores(terms(q)) for q in queries])
        np.testing.assert_allclose(ours.scores(queries), expected, rtol=1e-10, atol=1e-10)


def test_identical_top_k_on_sample(corpus):
    docs, queries = corpus
    ref = BM25Okapi([tokenize(d) for d in docs])
    expected = np.array([ref.get_scores(tokenize(q)) for q in queries])
    want_idx, _ = top_k(expected, 10)
    got_idx, got_scores = BM25Index.build(docs, analyzer="plain").search(queries, 10, batch_size=32)
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


def test_english_analyzer_stems_inflections():
    assert english_terms("query queries queried") == ["queri"] * 3
    assert english_terms("Migrations migration") == ["migrat"] * 2
    assert english_terms("indexes index indexing") == ["index"] * 3


def test_english_analyzer_drops_stopwords_and_possessives():
    assert len(ENGLISH_STOPWORDS) == 33  # Lucene's English set
    assert english_terms("the query of a table and its index") == ["queri", "tabl", "it", "index"]
    assert english_terms("last week's migration, the team\u2019s plan") == ["last", "week", "migrat", "team", "plan"]
    assert tokenize("the query") == ["the", "query"]  # the plain tokenizer keeps everything


def test_english_analyzer_keeps_cjk_and_short_tokens():
    assert english_terms("用 Python 写测试") == ["用", "python", "写", "测", "试"]
    assert english_terms("k8s v2 go") == ["k8", "v2", "go"]  # Porter drops a final s, as Lucene's does


def test_english_index_matches_inflections():
    """A query's `queries` finds a skill that only says `query`: the plain analyzer does not."""
    docs = ["optimize a slow query", "write release notes", "cache dependencies in ci"]
    english = BM25Index.build(docs).scores(["slow queries"])[0]
    plain = BM25Index.build(docs, analyzer="plain").scores(["queries"])[0]
    assert english.argmax() == 0 and english[0] > english[1:].max()
    assert (plain == 0).all()
    assert BM25Index.build(docs).analyzer == "english"


def test_english_analyzer_reads_hostile_text_and_its_stem_cache_stays_bounded(monkeypatch):
    """A route request's text reaches the analyzer as it is: quotes, backslashes, control characters, a huge word
    and a flood of distinct words are read without error, and the stem cache never grows past its bound."""
    from skillrouter.common import text

    hostile = 'Postgres\'s "queries"\x00\x1b[31m back\\slash \u202e\ufeff 数据库 ' + "q" * 100_000
    terms = english_terms(hostile)
    assert terms[:4] == ["postgr", "queri", "31m", "back"] and terms[-1] == "q" * 100_000
    docs = ["optimize a slow query", "write release notes"]
    scores = BM25Index.build(docs).scores([hostile, "\x00\\", ""])
    assert np.isfinite(scores).all() and scores[0].argmax() == 0 and (scores[1:] == 0).all()
    monkeypatch.setattr(text, "_stems", {})
    monkeypatch.setattr(text, "STEM_CACHE_SIZE", 50)
    flood = english_terms(" ".join(f"word{i}ing" for i in range(500)))
    assert flood[0] == "word0" and len(flood) == 500 and len(text._stems) == 50


def test_unknown_analyzer_is_an_error():
    with pytest.raises(ValueError, match="unknown analyzer 'klingon'"):
        BM25Index.build(["a doc"], analyzer="klingon")


def test_empty_corpus_is_an_error():
    with pytest.raises(ValueError, match="empty corpus"):
        BM25Index.build([])


def test_one_corpus_in_any_order_builds_bm25_once_per_process(english_corpus, monkeypatch):
    """A pipeline's mining, selection and each evaluated system read one pool: the last index is reused with its
    columns in the caller's order; other text, parameters or content build anew."""
    from dataclasses import replace

    from skillrouter.config import BM25Config
    from skillrouter.corpus.skill import Skill
    from skillrouter.retrieval import bm25

    monkeypatch.setattr(bm25, "MEMO_MIN_SKILLS", 1)
    monkeypatch.setattr(bm25, "_LAST", [])
    built = []
    plain_build = BM25Index.build.__func__

    def counting(cls, texts, *args, **kwargs):
        built.append(len(texts))
        return plain_build(cls, texts, *args, **kwargs)
    monkeypatch.setattr(BM25Index, "build", classmethod(counting))
    docs, queries = english_corpus
    skills = [Skill(f"s/{i:03d}", f"n{i}", "", doc) for i, doc in enumerate(docs)]
    params = BM25Config()
    first = bm25.build_bm25(skills, params)
    shuffled = [skills[i] for i in np.random.default_rng(2).permutation(len(skills))]
    again = bm25.build_bm25(shuffled, params)
    assert len(built) == 1
    fresh = plain_build(BM25Index, [s.text() for s in shuffled], analyzer=params.analyzer)
    np.testing.assert_allclose(again.scores(queries), fresh.scores(queries))  # columns follow the caller's order
    assert bm25.build_bm25(skills, params) is first and len(built) == 1
    bm25.build_bm25(skills, params, text=Skill.name_description)
    bm25.build_bm25(skills, BM25Config(k1=1.2))
    bm25.build_bm25([replace(skills[0], body="edited"), *skills[1:]], BM25Config(k1=1.2))
    assert len(built) == 4
