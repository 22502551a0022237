"""The `Skill` record every stage of the pipeline reads and writes."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

SkillText = Literal["full", "name_description"]
SKILL_COLUMNS = ("id", "name", "description", "body", "category", "source", "metadata", "content_hash")
# The index stores ids as VARCHAR primary keys, whose limit counts UTF-8 bytes; an id is never cut, so a
# longer one is refused where it enters (ingestion, the admin API), not when the index meets it.
ID_MAX_BYTES = 512
_CONTROL = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))}


def id_problem(skill_id: str) -> str | None:
    """Why `skill_id` cannot name a skill (empty, over `ID_MAX_BYTES` of UTF-8, not valid Unicode, or holding a
    control character), or None when it can."""
    if not skill_id:
        return "the id is empty"
    try:
        size = len(skill_id.encode("utf-8"))
    except UnicodeEncodeError:
        return "the id is not valid Unicode (a lone surrogate)"
    if size > ID_MAX_BYTES:
        return f"the id is {size:,} bytes of UTF-8, over the index's limit of {ID_MAX_BYTES}"
    bad = next((c for c in skill_id if c in _CONTROL), None)
    if bad is not None:
        return f"the id holds the control character {bad!r}"
    return None


class CompactText:
    """A dataclass field of text kept in the smaller of two forms: the str itself, or its UTF-8 when that takes less
    memory. CPython stores a whole str at the width of its widest character, so one arrow or emoji in a body makes
    every character of it 2 or 4 bytes; 43K of the 69K pool's bodies hold one, and the pool's bodies took 0.91 GB
    as str against 0.46 GB so. Reading the field gives the same str (lone surrogates included) every time."""

    def __set_name__(self, owner, name: str):
        self.key = f"_{name}"

    def __get__(self, obj, owner=None):
        if obj is None:  # no class-level default: the field stays a required argument
            raise AttributeError(self.key)
        value = obj.__dict__[self.key]
        return value.decode("utf-8", "surrogatepass") if type(value) is bytes else value

    def __set__(self, obj, value):
        if type(value) is str and not value.isascii():
            packed = value.encode("utf-8", "surrogatepass")
            if sys.getsizeof(packed) < sys.getsizeof(value):
                value = packed
        obj.__dict__[self.key] = value


@dataclass(frozen=True)
class Skill:
    """One agent skill: a SKILL.md's front matter (name, description) and its markdown body (held compactly:
    `CompactText`)."""

    id: str
    name: str
    description: str
    body: str = CompactText()  # type: ignore[assignment]
    category: str | None = None
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    # Where a reader found it (file, and line or row), for messages such as a duplicate id's; not stored.
    location: str = field(default="", compare=False, repr=False)

    def text(self) -> str:
        """The full routing text, `name | description | body`: the paper's strongest signal."""
        return f"{self.name} | {self.description} | {self.body}"

    def name_description(self) -> str:
        """Metadata only, `name | description`: what the paper's baselines see (and lose 31-44 Hit@1 points)."""
        return f"{self.name} | {self.description}"

    def routing_text(self, fields: SkillText = "full") -> str:
        """The text a model reads: the full text, or name and description only (the paper's ablation)."""
        if fields == "full":
            return self.text()
        if fields == "name_description":
            return self.name_description()
        raise ValueError(f"unknown skill text '{fields}': full or name_description")

    @property
    def content_hash(self) -> str:
        """Hash of what a model sees; incremental indexing re-embeds a skill only when it changes."""
        return hashlib.sha256(self.text().encode("utf-8")).hexdigest()[:32]

    def to_row(self) -> dict[str, Any]:
        """A flat row for Parquet; metadata is JSON so heterogeneous sources share one schema."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "body": self.body,
            "category": self.category,
            "source": self.source,
            "metadata": json.dumps(self.metadata, ensure_ascii=False, sort_keys=True, default=str),
            "content_hash": self.content_hash,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Skill:
        meta = row.get("metadata") or {}
        if isinstance(meta, str):
            meta = json.loads(meta)
        return cls(
            id=row["id"],
            name=row["name"],
            description=row["description"],
            body=row["body"],
            category=row.get("category"),
            source=row.get("source") or "",
            metadata=meta,
        )


def corpus_version(skills: Sequence[Skill]) -> str:
    """A hash of every skill's id and content: equal for the same corpus, different when any skill changes."""
    h = hashlib.sha256()
    for s in skills:
        h.update(f"{s.id}\t{s.content_hash}\n".encode())
    return h.hexdigest()[:16]


def unordered_corpus_version(skills: Sequence[Skill]) -> str:
    """`corpus_version` of the skills sorted by id: one corpus in any order (an evaluation ranks its pool in a
    seeded random order) has one version, for the caches keyed by corpus (embeddings, BM25)."""
    return corpus_version(sorted(skills, key=lambda s: s.id))
