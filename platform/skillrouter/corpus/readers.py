"""Readers for every corpus layout skillrouter accepts, all yielding `Skill` or `Quarantined` items.

Layouts: directory trees of SKILL.md files (nested at any depth), JSONL and JSONL.gz files, Parquet files, and
the SkillRouter eval_core pool (a directory of `*.jsonl` / `*.jsonl.gz` shards, or a benchmark directory holding
one in `pool/`). Readers never raise on bad records: a record that cannot become a skill is yielded as
`Quarantined` with one reason, so that ingestion can account for every record it saw.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillrouter.corpus.skill import Skill, id_problem
from skillrouter.corpus.skillmd import SkillMdError, parse_skill_md

SKILL_FILE_NAMES = ("SKILL.md", "skill.md")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
# Fields that map onto the record itself; anything else a source carries is kept in `metadata`.
CORE_FIELDS = ("id", "skill_id", "name", "description", "body", "category", "source", "metadata", "content_hash")


@dataclass(frozen=True)
class Quarantined:
    """A record that did not become a skill, with the one reason why and what is needed to fix it."""

    reason: str
    detail: str
    location: str
    id: str | None = None
    record: dict[str, Any] | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "detail": self.detail, "location": self.location, "id": self.id,
                "record": self.record}


class UnsupportedSource(ValueError):
    """A path that is not one of the supported layouts."""


class _Reject(Exception):
    """Raised by validation; carries the quarantine reason."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail


def _as_text(value: Any, key: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Reject("invalid_field", f"'{key}' must be text, got {type(value).__name__}")
    return str(value).strip()


def make_skill(record: dict[str, Any], *, source: str, max_chars: int) -> Skill:
    """Validate a raw record (id or skill_id, name, description, body, ...) into a Skill; raises `_Reject`."""
    skill_id = _as_text(record.get("id", record.get("skill_id")), "id")
    if not skill_id:
        raise _Reject("missing_id", "record has neither 'id' nor 'skill_id'")
    if (problem := id_problem(skill_id)) is not None:
        raise _Reject("invalid_id", problem)
    name = _as_text(record.get("name"), "name")
    if not name:
        raise _Reject("missing_name", "'name' is missing or empty")
    description = _as_text(record.get("description"), "description")
    if not description:
        raise _Reject("missing_description", "'description' is missing or empty")
    body = _as_text(record.get("body"), "body")
    if not body:
        raise _Reject("empty_body", "the skill body is empty")
    category = _as_text(record.get("category"), "category") or None
    size = len(name) + len(description) + len(body)
    if size > max_chars:
        raise _Reject("too_large", f"{size} characters, over the cap of {max_chars} (corpus.max_skill_chars)")
    if "\x00" in body or "\x00" in description or "\x00" in name:
        raise _Reject("binary_content", "text contains NUL bytes")
    metadata = dict(record.get("metadata") or {}) if isinstance(record.get("metadata"), dict) else {}
    metadata.update({k: v for k, v in record.items() if k not in CORE_FIELDS})
    return Skill(id=skill_id, name=name, description=description, body=body, category=category,
                 source=_as_text(record.get("source"), "source") or source, metadata=metadata)


def validate_record(record: dict[str, Any], *, location: str, source: str, max_chars: int,
                    keep_record: bool = True) -> Skill | Quarantined:
    """A raw record as a Skill, or Quarantined with the one reason it cannot be one (never raises)."""
    try:
        return make_skill(record, source=source, max_chars=max_chars)
    except _Reject as rej:
        raw_id = record.get("id", record.get("skill_id"))
        return Quarantined(rej.reason, rej.detail, location, raw_id if isinstance(raw_id, str) else None,
                           record if keep_record else None)


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise _Reject("binary_content", "file contains NUL bytes; not a text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject("not_utf8", f"invalid UTF-8 at byte {exc.start}") from None


# --- SKILL.md trees ----------------------------------------------------------------------------------------


def read_skill_md(path: Path, *, skill_id: str, source: str, max_chars: int,
                  rel_path: str | None = None) -> Skill | Quarantined:
    """Read one SKILL.md. Front matter keys other than name/description/category land in metadata."""
    location = str(path)
    try:
        text = _decode(path.read_bytes())
        parsed = parse_skill_md(text)
    except _Reject as rej:
        return Quarantined(rej.reason, rej.detail, location, skill_id)
    except SkillMdError as err:
        return Quarantined(err.reason, err.detail, location, skill_id)
    except OSError as exc:
        return Quarantined("unreadable_file", str(exc), location, skill_id)
    meta = parsed.front_matter
    record = {k: v for k, v in meta.items() if k not in ("id", "skill_id", "body", "source")}
    record.update(id=skill_id, body=parsed.body)
    extra = record.pop("metadata", None)
    record["metadata"] = {"path": rel_path or path.name, **(extra if isinstance(extra, dict) else {})}
    # The file stays where it is, so the quarantine points at it instead of copying the text.
    return validate_record(record, location=location, source=source, max_chars=max_chars, keep_record=False)


def iter_skill_tree(root: Path, *, max_chars: int) -> Iterator[Skill | Quarantined]:
    """All SKILL.md files under `root`, in sorted order; a skill's id is its folder's path relative to root."""
    source = root.resolve().name
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in filenames:
            if fname in SKILL_FILE_NAMES:
                found.append(Path(dirpath) / fname)
    for path in sorted(found):
        rel = path.parent.relative_to(root).as_posix()
        skill_id = rel if rel != "." else source
        yield read_skill_md(path, skill_id=skill_id, source=source, max_chars=max_chars,
                            rel_path=path.relative_to(root).as_posix())


# --- JSONL, JSONL.gz and eval_core pools -------------------------------------------------------------------


def iter_jsonl(path: Path, *, max_chars: int) -> Iterator[Skill | Quarantined]:
    """One skill per line; `id` or `skill_id` names it. Bad lines are quarantined with their line number."""
    source = path.name.split(".")[0]
    opener = gzip.open if path.name.endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                location = f"{path}:{lineno}"
                try:
                    obj = json.loads(_decode(raw))
                except _Reject as rej:
                    yield Quarantined(rej.reason, rej.detail, location,
                                      record={"raw": raw.decode("utf-8", "replace")})
                    continue
                except json.JSONDecodeError as exc:
                    yield Quarantined("invalid_json", str(exc), location, record={"raw": raw.decode("utf-8")})
                    continue
                if not isinstance(obj, dict):
                    yield Quarantined("invalid_json", f"line is a JSON {type(obj).__name__}, not an object",
                                      location, record={"raw": obj})
                    continue
                yield validate_record(obj, location=location, source=source, max_chars=max_chars)
    except (OSError, EOFError, zlib.error) as exc:  # truncated or corrupt gzip, unreadable file
        yield Quarantined("unreadable_file", f"stopped after line {lineno}: {exc}", str(path))


def iter_parquet(path: Path, *, max_chars: int) -> Iterator[Skill | Quarantined]:
    import pyarrow.parquet as pq

    source = path.name.split(".")[0]
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        yield Quarantined("unreadable_file", str(exc), str(path))
        return
    row = 0
    for batch in pf.iter_batches(batch_size=2048):
        for record in batch.to_pylist():
            row += 1
            if isinstance(record.get("metadata"), str):
                try:
                    record["metadata"] = json.loads(record["metadata"])
                except json.JSONDecodeError:
                    pass
            yield validate_record(record, location=f"{path}#row{row}", source=source, max_chars=max_chars)


# --- dispatch ----------------------------------------------------------------------------------------------


def _shards(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(JSONL_SUFFIXES))


def describe_source(path: Path) -> str:
    """Name the layout of `path`: skill-tree, jsonl, parquet, pool, or raise UnsupportedSource."""
    if path.is_file():
        if path.name.endswith(JSONL_SUFFIXES):
            return "jsonl"
        if path.suffix == ".parquet":
            return "parquet"
        if path.name in SKILL_FILE_NAMES:
            return "skill-tree"
        raise UnsupportedSource(f"{path}: unsupported file type (expected .jsonl, .jsonl.gz, .parquet or SKILL.md)")
    if not path.is_dir():
        raise UnsupportedSource(f"{path}: no such file or directory")
    if (path / "pool").is_dir():
        return "pool"
    if _shards(path):
        return "pool"
    if any(p.suffix == ".parquet" for p in path.iterdir()):
        return "parquet"
    return "skill-tree"


def iter_source(src: str | Path, *, max_chars: int) -> Iterator[Skill | Quarantined]:
    """Every item of one source, whatever its layout (see `describe_source`)."""
    path = resolve_source(src)
    kind = describe_source(path)
    if kind == "jsonl":
        yield from iter_jsonl(path, max_chars=max_chars)
    elif kind == "parquet":
        files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
        for f in files:
            yield from iter_parquet(f, max_chars=max_chars)
    elif kind == "pool":
        pool = path / "pool" if (path / "pool").is_dir() else path
        for shard in _shards(pool):
            yield from iter_jsonl(shard, max_chars=max_chars)
    elif path.is_file():  # a single SKILL.md
        yield read_skill_md(path, skill_id=path.parent.name, source=path.parent.name, max_chars=max_chars)
    else:
        yield from iter_skill_tree(path, max_chars=max_chars)


def resolve_source(src: str | Path) -> Path:
    """`bundled` names the sample corpus shipped in the package; anything else is a path."""
    if str(src) == "bundled":
        from skillrouter.corpus.sample import SKILLS_DIR

        return SKILLS_DIR
    return Path(src).expanduser()
