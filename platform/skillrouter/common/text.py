"""Tokenisation shared by BM25 and the lexical filters, and BM25's analyzers."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

# CJK ideographs, kana and hangul have no spaces between words: each character is a token, so that BM25 still
# matches Chinese, Japanese and Korean skills (about 5% of the real pool). Other scripts split on word runs.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_CJK_CHAR = re.compile(f"[{_CJK}]")

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET, the stopwords of Pyserini's and Anserini's BM25 baselines
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they "
    "this to was will with".split())
# ... and the `s` that `tokenize` splits off a possessive (`week's` -> week, s), which Lucene's
# EnglishPossessiveFilter drops
_DROPPED = ENGLISH_STOPWORDS | {"s"}
STEM_CACHE_SIZE = 1 << 20  # words; a 69K-skill pool has about 400K distinct ones


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; underscores and punctuation separate words (`docker_compose` -> docker, compose)."""
    return _TOKEN.findall(text.lower())


def cjk_characters(text: str) -> int:
    """How many CJK characters `text` has: a CJK word has no spaces around it, so length checks written for
    space-separated words count each such character as a word (and as two Latin letters wide)."""
    return len(_CJK_CHAR.findall(text))


def word_count(text: str) -> int:
    """Words of a text: its space-separated runs, and one per CJK character (those scripts put no spaces
    between words)."""
    return len(text.split()) + cjk_characters(text)


_stems: dict[str, str] = {}
_stemmer_lock = threading.Lock()
_stemmer = None


def porter_stem(word: str) -> str:
    """The Porter stem of a lower-cased word (`queries` -> `queri`, `migrations` -> `migrat`)."""
    stem = _stems.get(word)
    if stem is None:
        stem = _stem(word)
        if len(_stems) < STEM_CACHE_SIZE:  # bounded: a server reads words from anyone
            _stems[word] = stem
    return stem


def _stem(word: str) -> str:
    global _stemmer
    with _stemmer_lock:  # a Snowball stemmer keeps its word in its own state: one caller at a time
        if _stemmer is None:
            import snowballstemmer

            _stemmer = snowballstemmer.stemmer("porter")
        return _stemmer.stemWord(word)


def english_terms(text: str) -> list[str]:
    """Lucene's English analyzer, as Pyserini's BM25 runs it: `tokenize`, its stopwords and possessive `s`
    dropped, Porter stems. Words under three letters (and so each CJK character) are kept: Porter changes none.
    The stems are cached: snowballstemmer is pure Python (~15 us a word), and a corpus repeats its words."""
    get = _stems.get
    return [t if len(t) < 3 else get(t) or porter_stem(t) for t in tokenize(text) if t not in _DROPPED]


ANALYZERS: dict[str, Callable[[str], list[str]]] = {"english": english_terms, "plain": tokenize}


def analyzer(name: str) -> Callable[[str], list[str]]:
    """BM25's terms of a text by analyzer name: `english` (stopwords, Porter stems) or `plain` (`tokenize`)."""
    try:
        return ANALYZERS[name]
    except KeyError:
        raise ValueError(f"unknown analyzer '{name}': {', '.join(ANALYZERS)}") from None
