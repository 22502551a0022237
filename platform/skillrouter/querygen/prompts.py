"""The editable query-generation prompt (a YAML file in `configs/prompts/`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from skillrouter.corpus.skill import Skill


@dataclass(frozen=True)
class QueryPrompt:
    system: str
    user: str
    body_chars: int = 4000

    @classmethod
    def load(cls, path: str | Path, body_chars: int = 4000) -> QueryPrompt:
        if not Path(path).is_file():
            raise ValueError(f"querygen.prompt_file: no such file '{path}' (relative paths start at the current "
                             f"directory; the default lives in the repository's configs/prompts/)")
        data = yaml.safe_load(Path(path).read_text())
        missing = {"system", "user"} - set(data or {})
        if missing:
            raise ValueError(f"{path}: prompt file needs keys {sorted(missing)}")
        for placeholder in ("{n}", "{body}"):
            if placeholder not in data["user"]:
                raise ValueError(f"{path}: the user prompt must contain {placeholder}")
        return cls(data["system"], data["user"], body_chars)

    def messages(self, skill: Skill, n: int) -> list[dict]:
        body = skill.body[: self.body_chars]
        user = self.user.format(name=skill.name, description=skill.description, body=body, n=n)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]
