"""Reject generated queries that would teach the router to match names instead of needs.

A query must not contain the skill's name (after normalising case, separators and plurals: `PDF-Tools`,
`pdf tools` and `pdf_tool` are one name) nor any of its distinctive identifier tokens: name tokens that are rare in
the corpus, such as a product or library name (`openpyxl`), which would give the answer away as surely as the
name. Queries that are empty, too short, too long or duplicated are rejected too. Each rejection has one reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from skillrouter.common.text import cjk_characters, tokenize, word_count
from skillrouter.corpus.skill import Skill

# Reasons, stable strings: they key the summary's rejection counts.
EMPTY, TOO_SHORT, TOO_LONG, DUPLICATE = "empty", "too_short", "too_long", "duplicate"
NAMES_SKILL, IDENTIFIER = "names_skill", "identifier_token"


def singular(token: str) -> str:
    """A crude English singular, enough to match `pdfs`/`pdf`, `indexes`/`index`, `policies`/`policy`."""
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 4 and token.endswith(("xes", "ches", "shes", "sses")):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def normalise(text: str) -> list[str]:
    return [singular(t) for t in tokenize(text)]


def _contains(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


@dataclass
class LeakGuard:
    """Checks queries for one skill. Build with `for_skill`; `check` returns a rejection reason or None."""

    name_tokens: list[str]
    identifiers: set[str]
    min_chars: int = 20
    max_chars: int = 600
    min_words: int = 4
    seen: set[str] = field(default_factory=set)

    @classmethod
    def for_skill(cls, skill: Skill, document_frequency: dict[str, int] | None = None, num_docs: int = 0,
                  max_df: float = 0.002, **limits) -> LeakGuard:
        """`document_frequency` (token -> number of skills whose text has it, see `document_frequencies`) marks
        which name tokens are rare enough to identify the skill; without it only the whole name is checked."""
        name_tokens = normalise(skill.name)
        limit = max(1, int(max_df * num_docs))
        identifiers = {tok for tok in set(name_tokens)
                       if document_frequency is not None and len(tok) >= 4 and tok not in COMMON_WORDS
                       and document_frequency.get(tok, 0) <= limit}
        return cls(name_tokens=name_tokens, identifiers=identifiers, **limits)

    def check(self, query: str) -> str | None:
        text = " ".join(query.split())
        if not text:
            return EMPTY
        if len(text) > self.max_chars:
            return TOO_LONG
        # Chinese, Japanese, Korean: each character a word, and as wide as two Latin letters
        if len(text) + cjk_characters(text) < self.min_chars or word_count(text) < self.min_words:
            return TOO_SHORT
        tokens = normalise(text)
        if self._names_skill(tokens):
            return NAMES_SKILL
        if self.identifiers & set(tokens):
            return IDENTIFIER
        key = " ".join(tokens)
        if key in self.seen:
            return DUPLICATE
        return None

    def _names_skill(self, tokens: list[str]) -> bool:
        if len(self.name_tokens) == 1:
            # A one-word name that is an ordinary word ("pdf", "changelog") cannot be avoided by a real request.
            return self.name_tokens[0] in self.identifiers and self.name_tokens[0] in tokens
        joined = "".join(self.name_tokens)  # the name written as one word: "pdftools"
        return _contains(tokens, self.name_tokens) or joined in tokens

    def accept(self, query: str) -> str | None:
        """`check`, and remember an accepted query so that a later copy is a duplicate."""
        reason = self.check(query)
        if reason is None:
            self.seen.add(" ".join(normalise(query)))
        return reason


def document_frequencies(skills: Iterable[Skill]) -> tuple[dict[str, int], int]:
    """How many skills mention each name token anywhere in their text (only name tokens are counted)."""
    skills = list(skills)
    vocab = {t for s in skills for t in normalise(s.name)}
    df = dict.fromkeys(vocab, 0)
    for s in skills:
        for tok in {singular(t) for t in set(tokenize(s.text()))} & vocab:
            df[tok] += 1
    return df, len(skills)


# Words that appear in skill names without identifying one: never treated as identifiers on their own.
COMMON_WORDS = set(re.findall(r"\w+", """
agent analysis analyze analyzer api app apps assistant audit auto automate automation best build builder check
checker checklist clean cleanup code config create creator data debug debugger debugging deploy deployment design
designer dev developer doc docs document documentation edit editor expert file files fix fixer format formatter
generate generator guide helper images improve manage manager migration monitor optimize optimizer plan planner
practice pro project quick report reporter review reviewer run runner script setup skill smart spec support task
team template test tester testing tool toolkit tools update validate validator workflow write writer writing
""")) | {singular(w) for w in re.findall(r"\w+", "files tools docs images apps practices")}
