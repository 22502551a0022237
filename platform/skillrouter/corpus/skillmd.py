"""Parse SKILL.md files: YAML front matter (`name`, `description`, ...) followed by a markdown body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml


class SkillMdError(ValueError):
    """A SKILL.md that cannot be read as a skill; `reason` is a stable slug for the quarantine file."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SkillMd:
    front_matter: dict[str, Any]
    body: str


def parse_skill_md(text: str) -> SkillMd:
    """Split front matter from body. Raises SkillMdError for a missing or invalid front matter block."""
    text = text.lstrip("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise SkillMdError("missing_front_matter", "file does not start with a '---' front matter block")
    end = next((i for i, line in enumerate(lines[1:], start=1) if line.strip() in ("---", "...")), None)
    if end is None:
        raise SkillMdError("invalid_front_matter", "front matter block is never closed with '---'")
    raw = "".join(lines[1:end])
    try:
        meta = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SkillMdError("invalid_front_matter", f"YAML error: {first}") from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise SkillMdError("invalid_front_matter", f"front matter is a {type(meta).__name__}, not a mapping")
    return SkillMd(front_matter=meta, body="".join(lines[end + 1 :]).strip("\n"))
