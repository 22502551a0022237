"""Tokenisation shared by BM25 and the lexical filters."""

from __future__ import annotations

import re

# CJK ideographs, kana and hangul have no spaces between words: each character is a token, so that BM25 still
# matches Chinese, Japanese and Korean skills (about 5% of the real pool). Other scripts split on word runs.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; underscores and punctuation separate words (`docker_compose` -> docker, compose)."""
    return _TOKEN.findall(text.lower())
