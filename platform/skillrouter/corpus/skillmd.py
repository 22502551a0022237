"""Parse SKILL.md files: YAML front matter (`name`, `description`, ...) followed by a markdown body.

The front matter is untrusted input, so it is read within bounds (STYLE.md, "Boundaries"): at most
`MAX_FRONT_MATTER_CHARS` characters, no aliases (`*name`: billion laughs, recursive structures), at most
`MAX_DEPTH` levels of nesting. Booleans are YAML 1.2's (`true`, `false`), so a GitHub-Actions-style key such as
`on: push` keeps its key `on`, and `yes`/`no`/`on`/`off` stay text. Keys are always text: any other scalar key is
written as YAML spells it (`true`, `null`, `1`, `1.5`, `2024-01-01`), and a key that appears twice (or two keys
that read the same, such as `1` and `"1"`) is refused rather than one of them silently kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

MAX_FRONT_MATTER_CHARS = 65_536
MAX_DEPTH = 32
_BOOL = "tag:yaml.org,2002:bool"
_SURROGATE = re.compile("[\ud800-\udfff]")


class SkillMdError(ValueError):
    """A SKILL.md that cannot be read as a skill; `reason` is a stable slug for the quarantine file."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def key_text(key: Any) -> str:
    """A mapping key as text, spelled as YAML and JSON spell it: True -> "true", None -> "null", 1 -> "1"."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    if hasattr(key, "isoformat"):  # dates and timestamps
        return key.isoformat()
    return str(key)


class FrontMatterLoader(yaml.SafeLoader):
    """SafeLoader without aliases, with a nesting limit, YAML 1.2 booleans and text keys."""

    # YAML 1.1 resolves yes/no/on/off (any case) as booleans; keep only YAML 1.2's true/false
    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"aliases are not accepted (*{event.anchor})",
                                              event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_scalar(self, node):
        value = super().construct_scalar(node)
        if _SURROGATE.search(value):
            # "\ud83d\ude80" escapes one character as a UTF-16 pair, as JSON (a subset of YAML 1.2) does; PyYAML
            # reads two lone surrogates. Join pairs; a lone one stays, and the record is refused later.
            try:
                value = value.encode("utf-16", "surrogatepass").decode("utf-16")
            except UnicodeDecodeError:
                pass
        return value

    def construct_mapping(self, node, deep=False):
        # Pair by pair rather than through a dict of raw keys, where True and 1 (or a repeated key) collapse
        # into one entry without a word.
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict, set)):
                raise yaml.constructor.ConstructorError(None, None, "a key is a collection, not text",
                                                        key_node.start_mark)
            text = key_text(key)
            if text in out:
                raise yaml.constructor.ConstructorError(None, None, f"the key {text!r} appears twice",
                                                        key_node.start_mark)
            out[text] = self.construct_object(value_node, deep=deep)
        return out


FrontMatterLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


@dataclass(frozen=True)
class SkillMd:
    front_matter: dict[str, Any]
    body: str


def load_front_matter(raw: str) -> Any:
    """YAML within the bounds above; raises SkillMdError `invalid_front_matter` for anything else."""
    if len(raw) > MAX_FRONT_MATTER_CHARS:
        raise SkillMdError("invalid_front_matter",
                           f"front matter is {len(raw):,} characters, over the limit of {MAX_FRONT_MATTER_CHARS:,}")
    try:
        return yaml.load(raw, Loader=FrontMatterLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
            first = f"{exc.problem or first} (line {exc.problem_mark.line + 2})"  # +1 for 1-based, +1 for '---'
        raise SkillMdError("invalid_front_matter", f"YAML error: {first}") from None
    except (ValueError, RecursionError) as exc:  # an int over Python's digit limit, a date like 2024-13-45
        raise SkillMdError("invalid_front_matter", f"YAML value error: {str(exc)[:200]}") from None


def parse_skill_md(text: str) -> SkillMd:
    """Split front matter from body. Raises SkillMdError for a missing or invalid front matter block."""
    text = text.lstrip("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise SkillMdError("missing_front_matter", "file does not start with a '---' front matter block")
    end = next((i for i, line in enumerate(lines[1:], start=1) if line.strip() in ("---", "...")), None)
    if end is None:
        raise SkillMdError("invalid_front_matter", "front matter block is never closed with '---'")
    meta = load_front_matter("".join(lines[1:end]))
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise SkillMdError("invalid_front_matter", f"front matter is a {type(meta).__name__}, not a mapping")
    return SkillMd(front_matter=meta, body="".join(lines[end + 1 :]).strip("\n"))
