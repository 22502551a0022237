"""A deterministic, offline query generator: requests built from a skill's own text.

For the embedded default and for users without an LLM endpoint. It mines what skill authors already write about
their users' requests: example prompts quoted in the body (`User: ...`), "use when" clauses of the description,
the bullets of a "When to use" section, the description itself, and the body's headings and steps. Each is
rewritten into a first-person request, the skill's name and identifier tokens are scrubbed, and the leak guard has
the last word. It is weaker than an LLM: its requests reuse the author's wording, which makes them lexically
closer to the skill than what users type. Use it to bootstrap; prefer the LLM path for training data you ship.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

from skillrouter.common.text import cjk_characters, word_count
from skillrouter.corpus.skill import Skill
from skillrouter.querygen.leak_guard import LeakGuard

GENERATOR = "offline-v2"  # v2: Chinese, Japanese and Korean texts counted and kept as written

_EXAMPLE = re.compile(r"""(?im)^\s*(?:[-*>]\s*)*(?:\*\*|_)?(?:user|prompt|request|example(?: request| prompt)?|ask)
                          (?:\*\*|_)?\s*[:>]\s*(?:\*\*)?\s*["“']?(?P<q>[^\n]{12,400}?)["”']?\s*$""", re.X)
_USE_WHEN = re.compile(r"(?i)\b(?:use (?:this skill |it )?(?:when|whenever|if|for)|trigger(?:ed)? when|"
                       r"when the user (?:asks|wants|needs)(?: to)?)\s+(?P<clause>[^.;\n]{8,240})")
_HEADING = re.compile(r"(?m)^#{1,4}\s+(?P<h>.+?)\s*$")
_SECTION = re.compile(r"(?ims)^#{1,4}\s*when to use[^\n]*\n(?P<body>.*?)(?=^#{1,4}\s|\Z)")
_BULLET = re.compile(r"(?m)^\s*(?:[-*+]|\d+[.)])\s+(?P<item>.+?)\s*$")
_NUMBERING = re.compile(r"(?i)^(?:step\s*)?\d+(?:\.\d+)*[.):]?\s+")  # "1)", "1.2", "Step 3:"
_MARKUP = re.compile(r"[*_`#>|]+|\[(.*?)\]\([^)]*\)")
_SKIP_HEADINGS = {"when to use", "steps", "examples", "example", "constraints", "output format", "inputs",
                  "overview", "pitfalls", "notes", "references", "usage", "instructions", "context"}

_PRONOUNS = [(r"\b(?:the|a) user(?:'s)? (\w+?)s\b", r"I \1"), (r"\bsomeone (\w+?)s\b", r"I \1"),
             (r"\byou are\b", "I am"), (r"\byou're\b", "I'm"), (r"\byou have\b", "I have"),
             (r"\byou need\b", "I need"), (r"\byou want\b", "I want"), (r"\byour\b", "my"), (r"\byou\b", "I"),
             (r"\bthe user(?:'s)?\b", "I")]
_OPENERS = ["Can you {x}?", "I need to {x}.", "Help me {x}.", "Please {x}.", "How do I {x}?", "I'd like to {x}."]
_SITUATIONS = ["{x}. Can you help?", "{x}. What should I do?", "{x}. How should I handle it?", "{x}. Where do I start?"]


def _clean(text: str) -> str:
    text = _MARKUP.sub(lambda m: m.group(1) or " ", text)
    return " ".join(text.split()).strip(" .:;-")


def _first_person(text: str) -> str:
    for pattern, repl in _PRONOUNS:
        text = re.sub(pattern, repl, text, flags=re.I)
    return text


def _imperative(sentence: str) -> str:
    """`Generates reports for X` -> `generate reports for X`: descriptions often open in the third person."""
    words = sentence.split()
    if not words or cjk_characters(words[0]):  # no English verb to turn
        return sentence
    first = words[0].lower()
    if first.endswith("ies") and len(first) > 4:
        first = first[:-3] + "y"
    elif first.endswith(("ches", "shes", "sses", "xes")):
        first = first[:-2]
    elif first.endswith("s") and not first.endswith("ss") and len(first) > 3:
        first = first[:-1]
    return " ".join([first, *words[1:]])


def candidates(skill: Skill) -> Iterator[tuple[str, str]]:
    """(source, request) pairs in order of how much they sound like a user: quoted prompts first."""
    for m in _EXAMPLE.finditer(skill.body):
        yield "example", _clean(m.group("q"))
    for text in (skill.description, skill.body):
        for m in _USE_WHEN.finditer(text):
            yield "use_when", _first_person(_clean(m.group("clause")))
    for section in _SECTION.finditer(skill.body):
        for b in _BULLET.finditer(section.group("body")):
            yield "when_to_use", _first_person(_clean(b.group("item")))
    first_sentence = re.split(r"(?<=[.!?])\s|(?<=[。！？])", skill.description.strip(), maxsplit=1)[0]
    yield "description", _imperative(_clean(first_sentence))
    for m in _HEADING.finditer(skill.body):
        heading = _NUMBERING.sub("", _clean(m.group("h")))
        if heading.lower() not in _SKIP_HEADINGS and word_count(heading) >= 3:
            yield "heading", _imperative(heading)


def _as_request(source: str, text: str, rng: random.Random) -> str:
    if cjk_characters(text) * 2 > len(text):  # written in Chinese, Japanese or Korean: no English frame around it
        return text.rstrip(" .")
    if source == "example":
        return text if text[-1:] in ".?!" else text + "."
    text = text.rstrip(" .?!")
    if not text:
        return ""
    if re.match(r"(?i)^(i|my|i'm|we|our)\b", text):
        return text[0].upper() + text[1:] + "."
    lowered = text[0].lower() + text[1:] if not text[:2].isupper() else text
    if source in ("use_when", "when_to_use"):  # conditions: "a launch needs capacity validation"
        if re.match(r"^\w+ing\b", lowered):
            return f"I need help {lowered}."
        return rng.choice(_SITUATIONS).format(x=text[0].upper() + text[1:])
    if source == "heading":
        return f"I need help with {lowered}."
    return rng.choice(_OPENERS).format(x=lowered)


def _scrub_name(text: str, skill: Skill) -> str:
    """Remove `the <name> skill`-style mentions; the leak guard still rejects whatever it misses."""
    words = re.split(r"[-_\s]+", skill.name.strip())
    pattern = r"[-_\s]*".join(re.escape(w) for w in words if w)
    if not pattern:
        return text
    text = re.sub(rf"(?i)\b(?:the|this|a)?\s*{pattern}s?\b(?:\s+skill)?", "", text)
    return " ".join(text.split())


def generate_offline(skill: Skill, n: int, guard: LeakGuard, seed: int = 0) -> tuple[list[str], dict[str, int]]:
    """Up to `n` requests for `skill`; returns them with the count of rejected candidates by reason."""
    rng = random.Random(f"{seed}:{skill.id}")
    accepted: list[str] = []
    rejected: dict[str, int] = {}
    for source, text in candidates(skill):
        if len(accepted) >= n:
            break
        # Scrub the name before phrasing the request, so that a heading like "PDF Tools Workflow" cannot leave a
        # contentless "I need help with Workflow."; what is left must still say something.
        text = _scrub_name(text, skill)
        query = _as_request(source, text, rng) if word_count(text) >= 3 else text  # the guard: too_short
        reason = guard.accept(query)
        if reason is None:
            accepted.append(query)
        else:
            rejected[reason] = rejected.get(reason, 0) + 1
    return accepted, rejected
