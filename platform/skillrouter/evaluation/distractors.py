"""Look-alike distractors for the hard tier of a benchmark, as in the SkillRouter paper.

A look-alike keeps a skill's id prefix, name, description and category, and damages its body: numbered steps are
deleted and rules are inverted ("Never run X" -> "Always run X"), so that it can only be told apart from the
original by reading the body. Its id is `<id>~lookalike-<k>`, its relevance to every task is 0. Generation is
deterministic: the same skill, variant and seed always give the same text.

Variant 1 deletes about 40% of the numbered steps (at least one) and inverts the rules of the constraints section
(a constraint no rule applies to is dropped). Variant 2 deletes the first steps (where the key action usually is),
flips always/never and must/must not inside the remaining steps, and drops the constraints section.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace

from skillrouter.corpus.skill import Skill

LOOKALIKE_SEP = "~lookalike-"
_SECTION = re.compile(r"^## ", re.M)
_STEP = re.compile(r"^(\d+)\. ")
# A constraint bullet's opening words -> the inverted opening (first match wins).
_CONSTRAINT_RULES: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"^- (Don't|Do not|Never) ", "- Always "),
    (r"^- Always ", "- Never "),
    (r"^- Avoid ", "- Prefer "),
    (r"^- Only ", "- Not only "),
    (r"^- No ", "- Some "),
    (r"^- Keep ", "- No need to keep "),
    (r"^- (Measure|Verify|Check|Test|Run|Use|Report|Mark|Flag|Cite|Respect|Treat|Remove|Exclude|State|Include|"
     r"Confirm|Ask|Document|Require|Pin|Set|Validate|Read|Record|Show|Prefer|Write|Start|Put|Quote|Limit|Name|"
     r"Label|Link|Match|Follow|Scope|Store) ", lambda m: f"- Don't {m.group(1).lower()} "),
))
# Inline polarity flips inside steps (variant 2), applied in one pass so a flipped word is not flipped back.
_INLINE = {"always": "never", "never": "always", "must not": "must", "don't": "do", "do not": "do",
           "avoid": "prefer", "before": "after"}
_INLINE_RE = re.compile(r"\b(" + "|".join(sorted((re.escape(k) for k in _INLINE), key=len, reverse=True)) + r")\b",
                        re.I)


def lookalike_id(skill_id: str, k: int) -> str:
    return f"{skill_id}{LOOKALIKE_SEP}{k}"


def original_id(skill_id: str) -> str:
    """The id a look-alike imitates (the id itself for an ordinary skill)."""
    return skill_id.split(LOOKALIKE_SEP, 1)[0]


def _rng(skill_id: str, variant: int, seed: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{variant}:{skill_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _sections(body: str) -> list[str]:
    """The body cut before every `## ` heading (the first piece is what precedes the first one)."""
    starts = [0] + [m.start() for m in _SECTION.finditer(body) if m.start() > 0]
    return [body[a:b] for a, b in zip(starts, starts[1:] + [len(body)])]


def _heading(section: str) -> str:
    return section.split("\n", 1)[0].lower() if section.startswith("## ") else ""


def _split_steps(section: str) -> tuple[str, list[list[str]]]:
    """A steps section as (text before the first numbered step, the steps, each with its continuation lines)."""
    head, steps = [], []
    for line in section.split("\n"):
        if _STEP.match(line):
            steps.append([line])
        elif steps:
            steps[-1].append(line)
        else:
            head.append(line)
    return "\n".join(head), steps


def _join_steps(head: str, steps: list[list[str]]) -> str:
    out = [head]
    for n, step in enumerate(steps, start=1):
        out.append(_STEP.sub(f"{n}. ", step[0], count=1))
        out.extend(step[1:])
    return "\n".join(out)


def _flip_inline(text: str) -> str:
    def sub(m: re.Match) -> str:
        word = m.group(0)
        new = _INLINE[word.lower()]
        return new[0].upper() + new[1:] if word[0].isupper() else new
    return _INLINE_RE.sub(sub, text)


def _invert_constraints(section: str) -> str:
    out = []
    for line in section.split("\n"):
        if not line.startswith("- "):
            out.append(line)
            continue
        for pattern, repl in _CONSTRAINT_RULES:
            new = pattern.sub(repl, line, count=1)
            if new != line:
                out.append(new)
                break
        # a rule no pattern can invert is dropped: the look-alike loses it
    return "\n".join(out)


def _damage(body: str, variant: int, rng: random.Random) -> tuple[str, str]:
    sections = _sections(body)
    notes = []
    for i, sec in enumerate(sections):
        heading = _heading(sec)
        if heading.startswith("## steps"):
            head, steps = _split_steps(sec)
            if len(steps) >= 2:
                if variant == 1:
                    n_drop = max(1, round(0.4 * len(steps)))
                    drop = set(rng.sample(range(len(steps)), min(n_drop, len(steps) - 1)))
                else:
                    drop = set(range(max(1, len(steps) // 3)))
                steps = [s for j, s in enumerate(steps) if j not in drop]
                notes.append(f"deleted steps {sorted(d + 1 for d in drop)}")
            if variant == 2:
                steps = [[_flip_inline(line) for line in step] for step in steps]
                notes.append("flipped always/never inside steps")
            sections[i] = _join_steps(head, steps)
        elif heading.startswith("## constraints"):
            if variant == 1:
                sections[i] = _invert_constraints(sec)
                notes.append("inverted constraints")
            else:
                sections[i] = ""
                notes.append("dropped constraints")
    ending = body[len(body.rstrip()):]  # end as the original does (readers strip the body)
    damaged = "".join(s if s.endswith("\n") or not s else s + "\n" for s in sections).rstrip() + ending
    if damaged.strip() == body.strip():  # a body without the usual sections: drop every other line
        lines = body.split("\n")
        damaged = "\n".join(line for j, line in enumerate(lines) if j % 2 == 0 or line.startswith("#"))
        notes = ["dropped every other line"]
    return damaged, "; ".join(notes)


def make_lookalike(skill: Skill, variant: int = 1, seed: int = 0) -> Skill:
    """A look-alike of `skill`: same name, description and category, damaged body, id `<id>~lookalike-<variant>`."""
    if variant not in (1, 2):
        raise ValueError(f"look-alike variant must be 1 or 2, not {variant}")
    body, damage = _damage(skill.body, variant, _rng(skill.id, variant, seed))
    return replace(skill, id=lookalike_id(skill.id, variant), body=body,
                   metadata={"lookalike_of": skill.id, "damage": damage}, location="")


def lookalike_distractors(skills: Sequence[Skill], ids: Iterable[str], per_skill: int = 2,
                          seed: int = 0) -> list[Skill]:
    """`per_skill` (1 or 2) look-alikes of each skill in `ids`, in the order of `skills`."""
    if per_skill not in (1, 2):
        raise ValueError(f"per_skill must be 1 or 2, not {per_skill}")
    wanted = set(ids)
    return [make_lookalike(s, k, seed) for s in skills if s.id in wanted for k in range(1, per_skill + 1)]
