"""Readers for every corpus layout skillrouter accepts, all yielding `Skill`, `Quarantined` or `Skipped` items.

Layouts: a folder (SKILL.md files at any depth, plus JSONL, JSONL.gz and Parquet files at its top level), a
single JSONL, JSONL.gz, Parquet or SKILL.md file, the SkillRouter eval_core benchmark directory (its `pool/`
shards), and an earlier ingest's output folder (its `skills.parquet`). Readers never raise on bad input: a file
or record that cannot become a skill is yielded as `Quarantined` with one reason and its location (file, and
line or row), and a folder deliberately not entered is yielded as `Skipped`, so that ingestion accounts for all.

Every read is bounded before it happens: only regular files are opened (a FIFO, device or socket is refused
from its `lstat`, and opening never blocks), a SKILL.md or JSONL line over `max_file_bytes` is refused unread,
front matter is parsed without aliases and to a limited depth (see `skillmd`), JSON nesting is bounded by
Python's recursion limit and metadata by `MAX_METADATA_DEPTH`. Symlinks are followed only to regular files
inside the tree; symlinked folders are not entered.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillrouter.corpus.skill import Skill, id_problem
from skillrouter.corpus.skillmd import SkillMdError, key_text, parse_skill_md

SKILL_FILE_NAME = "skill.md"  # matched without regard to case: SKILL.md, Skill.md, skill.md
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
DATA_SUFFIXES = (*JSONL_SUFFIXES, ".parquet")
# Version-control internals: never skills, often huge. Not entered; counted in the summary as skipped.
SKIPPED_FOLDERS = frozenset({".git", ".hg", ".svn"})
# Fields that map onto the record itself; anything else a source carries is kept in `metadata`.
CORE_FIELDS = ("id", "skill_id", "name", "description", "body", "category", "source", "metadata", "content_hash")
DEFAULT_MAX_FILE_BYTES = 4 * 1024 * 1024  # CorpusConfig.max_file_bytes
MAX_METADATA_DEPTH = 32
PARQUET_BATCH_ROWS = 256
try:
    PATH_MAX = os.pathconf("/", "PC_PATH_MAX")
except (OSError, ValueError, AttributeError):
    PATH_MAX = 4096


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


@dataclass(frozen=True)
class Skipped:
    """A folder or file deliberately not read (not a record): a `.git` folder, a symlinked folder, a data file
    below a tree's top level. Ingestion counts these in its summary, by reason, with their paths."""

    reason: str
    location: str


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


def _plain(value: Any, depth: int = 0) -> Any:
    """Metadata as JSON values with text keys (see `skillmd.key_text`), sets sorted, dates as ISO text, anything
    else as its str(); raises `_Reject` for nesting over MAX_METADATA_DEPTH or two keys that read the same."""
    if depth > MAX_METADATA_DEPTH:
        raise _Reject("invalid_metadata", f"metadata nested deeper than {MAX_METADATA_DEPTH} levels")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            text = key_text(key)
            if text in out:
                raise _Reject("invalid_metadata", f"two metadata keys read as {text!r}")
            out[text] = _plain(item, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(item, depth + 1) for item in value), key=repr)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def make_skill(record: dict[str, Any], *, source: str, max_chars: int, location: str = "") -> Skill:
    """Validate a raw record (id or skill_id, name, description, body, ...) into a Skill; raises `_Reject`.

    The size cap counts name, description, body, category and the metadata as JSON; every text must be valid
    Unicode (a lone surrogate cannot be written as UTF-8)."""
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
    skill_source = _as_text(record.get("source"), "source") or source
    given = record.get("metadata")
    metadata = dict(given) if isinstance(given, dict) else ({} if given is None else {"metadata": given})
    metadata.update({k: v for k, v in record.items() if k not in CORE_FIELDS})
    metadata = _plain(metadata)
    try:
        metadata_json = json.dumps(metadata, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _Reject("invalid_metadata", f"metadata cannot be written as JSON: {str(exc)[:200]}") from None
    text_size = len(name) + len(description) + len(body) + len(category or "")
    if text_size + len(metadata_json) > max_chars:
        raise _Reject("too_large", f"{text_size + len(metadata_json):,} characters (text {text_size:,}, metadata "
                                   f"{len(metadata_json):,}), over the cap of {max_chars:,} (corpus.max_skill_chars)")
    if "\x00" in body or "\x00" in description or "\x00" in name:
        raise _Reject("binary_content", "text contains NUL bytes")
    for key, value in (("name", name), ("description", description), ("body", body), ("category", category),
                       ("source", skill_source), ("metadata", metadata_json)):
        if value and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _Reject("invalid_text", f"'{key}' holds a lone surrogate at character {exc.start}: not valid "
                                              "Unicode, so it cannot be written as UTF-8") from None
    return Skill(id=skill_id, name=name, description=description, body=body, category=category,
                 source=skill_source, metadata=metadata, location=location)


def validate_record(record: dict[str, Any], *, location: str, source: str, max_chars: int,
                    keep_record: bool = True) -> Skill | Quarantined:
    """A raw record as a Skill, or Quarantined with the one reason it cannot be one (never raises)."""
    try:
        return make_skill(record, source=source, max_chars=max_chars, location=location)
    except _Reject as rej:
        reason, detail = rej.reason, rej.detail
    except Exception as exc:  # a value no check foresaw: still one record, still accounted for
        reason, detail = "invalid_record", f"{type(exc).__name__}: {str(exc)[:200]}"
    raw_id = record.get("id", record.get("skill_id"))
    return Quarantined(reason, detail, location, raw_id if isinstance(raw_id, str) else None,
                       record if keep_record else None)


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise _Reject("binary_content", "file contains NUL bytes; not a text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject("not_utf8", f"invalid UTF-8 at byte {exc.start}") from None


# --- bounded, regular-file-only reads ----------------------------------------------------------------------


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


def _os_reject(exc: OSError, path: str) -> _Reject:
    if exc.errno == errno.ENAMETOOLONG:
        return _Reject("path_too_long", f"the path is {len(os.fsencode(path)):,} bytes, over the system's limit "
                                        f"(PATH_MAX {PATH_MAX:,}); not read")
    if exc.errno == errno.ELOOP:
        return _Reject("symlink_loop", "a symlink loop (or a symlink where a file was expected); not read")
    if exc.errno == errno.ENOENT:
        return _Reject("unreadable_file", "no such file (a dangling symlink, or removed while reading)")
    return _Reject("unreadable_file", exc.strerror or str(exc))


def _regular_target(path: str, lstat_result: os.stat_result | None, root_real: str | None) -> tuple[str, int]:
    """The path to open for `path` and its size: `path` itself when it is a regular file, or the target of a
    symlink that resolves to a regular file inside `root_real` (any target when `root_real` is None)."""
    try:
        st = lstat_result or os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(path, strict=True)
            if root_real is not None and not (real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)):
                raise _Reject("symlink_outside_tree", f"a symlink to {real}, outside the tree {root_real}; not read")
            path, st = real, os.lstat(real)
    except OSError as exc:
        raise _os_reject(exc, path) from None
    if not stat.S_ISREG(st.st_mode):
        raise _Reject("not_a_regular_file", f"{_kind(st.st_mode)}, not a regular file; not opened")
    return path, st.st_size


def _open_regular(path: str, max_bytes: int | None = None) -> int:
    """A read-only descriptor of the regular file `path` (no symlink followed, never blocking: a FIFO swapped in
    after the check is refused rather than waited on); `file_too_large` over `max_bytes`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _os_reject(exc, path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Reject("not_a_regular_file", f"{_kind(st.st_mode)}, not a regular file; not read")
        if max_bytes is not None and st.st_size > max_bytes:
            raise _too_large(st.st_size, max_bytes)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _too_large(size: int, max_bytes: int, what: str = "the file") -> _Reject:
    return _Reject("file_too_large", f"{what} is {size:,} bytes, over the cap of {max_bytes:,} "
                                     "(corpus.max_file_bytes); not read")


def _read_bounded(path: str, max_bytes: int) -> bytes:
    """The whole of a regular file of at most `max_bytes` (checked from its size before reading, and again while
    reading, should it grow)."""
    fd = _open_regular(path, max_bytes)
    try:
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise _too_large(total, max_bytes, "the file grew while read: it")
        return b"".join(chunks)
    except OSError as exc:
        raise _os_reject(exc, path) from None
    finally:
        os.close(fd)


# --- SKILL.md files ----------------------------------------------------------------------------------------


def _read_skill_file(location: str, open_path: str, *, skill_id: str, source: str, max_chars: int,
                     max_file_bytes: int, rel_path: str) -> Skill | Quarantined:
    try:
        parsed = parse_skill_md(_decode(_read_bounded(open_path, max_file_bytes)))
    except _Reject as rej:
        return Quarantined(rej.reason, rej.detail, location, skill_id)
    except SkillMdError as err:
        return Quarantined(err.reason, err.detail, location, skill_id)
    meta = parsed.front_matter
    record = {k: v for k, v in meta.items() if k not in ("id", "skill_id", "body", "source")}
    record.update(id=skill_id, body=parsed.body)
    extra = record.pop("metadata", None)
    extra = extra if isinstance(extra, dict) else ({} if extra is None else {"metadata": extra})
    record["metadata"] = {"path": rel_path, **extra}
    # The file stays where it is, so the quarantine points at it instead of copying the text.
    return validate_record(record, location=location, source=source, max_chars=max_chars, keep_record=False)


def read_skill_md(path: Path, *, skill_id: str, source: str, max_chars: int, rel_path: str | None = None,
                  max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Skill | Quarantined:
    """Read one SKILL.md. Front matter keys other than name/description/category land in metadata."""
    try:
        open_path, _ = _regular_target(str(path), None, None)
    except _Reject as rej:
        return Quarantined(rej.reason, rej.detail, str(path), skill_id)
    return _read_skill_file(str(path), open_path, skill_id=skill_id, source=source, max_chars=max_chars,
                            max_file_bytes=max_file_bytes, rel_path=rel_path or path.name)


# --- folders -----------------------------------------------------------------------------------------------


def _is_skill_file(name: str) -> bool:
    return name.lower() == SKILL_FILE_NAME


def _is_data_file(name: str) -> bool:
    return name.lower().endswith(DATA_SUFFIXES)


def _listing(path: str) -> list[os.DirEntry]:
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def _walk(root: str) -> Iterator[tuple[str, tuple[str, ...], os.DirEntry, Any]]:
    """(event, rel_parts, entry, detail) for a folder, depth first in sorted order (the order of sorted paths),
    without recursion: `skill` and `data` (a data file at the top level) entries to read, `skip` (with a reason)
    and `unlistable` (with a reason and detail) entries to account for."""
    stack: list[tuple[str, tuple[str, ...], Iterator[os.DirEntry]]] = [(root, (), iter(_listing(root)))]
    while stack:
        dpath, rel, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        name = entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_link = not is_dir and entry.is_symlink()
        except OSError:
            is_dir = is_link = False
        if is_dir:
            if name in SKIPPED_FOLDERS:
                yield "skip", rel + (name,), entry, "vcs_folder"
                continue
            child = os.path.join(dpath, name)
            try:
                listing = _listing(child)
            except OSError as exc:
                rej = _os_reject(exc, child)
                yield "unlistable", rel + (name,), entry, ("unreadable_folder" if rej.reason == "unreadable_file"
                                                           else rej.reason, rej.detail)
                continue
            stack.append((child, rel + (name,), iter(listing)))
        elif _is_skill_file(name):
            yield "skill", rel, entry, ""
        elif _is_data_file(name):
            yield ("data" if not rel else "skip"), rel, entry, "data_file_below_top_level"
        elif is_link:
            try:
                points_to_dir = stat.S_ISDIR(os.stat(entry.path).st_mode)
            except OSError:
                points_to_dir = False  # dangling: not a folder, and not named like a skill file
            if points_to_dir:
                yield "skip", rel + (name,), entry, "symlinked_folder"


def iter_tree(root: Path, *, max_chars: int,
              max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Iterator[Skill | Quarantined | Skipped]:
    """A folder: every SKILL.md under `root` (any case; a skill's id is its folder's path relative to root, the
    root's own name for a SKILL.md at the top), and every JSONL/Parquet file at the top level, in sorted order."""
    root_str = str(root)
    root_real = os.path.realpath(root_str)
    source = os.path.basename(root_real) or root_str
    try:
        events = _walk(root_str)
        for event, rel, entry, detail in events:
            path = entry.path
            if event == "skip":
                yield Skipped(detail, path)
            elif event == "unlistable":
                reason, why = detail
                yield Quarantined(reason, f"folder not listed: {why}; any skill below it is not read", path)
            elif event == "skill":
                rel_dir = "/".join(rel)
                skill_id = rel_dir or source
                try:
                    lst = entry.stat(follow_symlinks=False)
                    open_path, _ = _regular_target(path, lst, root_real)
                except OSError as exc:
                    item = Quarantined(*_reason(_os_reject(exc, path)), path, skill_id)
                except _Reject as rej:
                    item = Quarantined(rej.reason, rej.detail, path, skill_id)
                else:
                    item = _read_skill_file(path, open_path, skill_id=skill_id, source=source, max_chars=max_chars,
                                            max_file_bytes=max_file_bytes,
                                            rel_path=f"{rel_dir}/{entry.name}" if rel_dir else entry.name)
                yield item
            else:  # a data file at the top level
                try:
                    open_path, _ = _regular_target(path, entry.stat(follow_symlinks=False), root_real)
                except OSError as exc:
                    yield Quarantined(*_reason(_os_reject(exc, path)), path)
                    continue
                except _Reject as rej:
                    yield Quarantined(rej.reason, rej.detail, path)
                    continue
                yield from _data_file(Path(path), open_path, max_chars=max_chars, max_file_bytes=max_file_bytes)
    except OSError as exc:  # the root itself cannot be listed
        yield Quarantined(*_reason(_os_reject(exc, root_str)), root_str)


def _reason(rej: _Reject) -> tuple[str, str]:
    return rej.reason, rej.detail


# --- JSONL, JSONL.gz and Parquet ---------------------------------------------------------------------------


def _bounded_lines(fh, limit: int) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line, length) for each line; the line is None when it is over `limit` bytes, in which case
    it is skipped in chunks, never held whole."""
    lineno = 0
    while raw := fh.readline(limit + 1):
        lineno += 1
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield lineno, raw, len(raw)
            continue
        size = len(raw)
        while chunk := fh.readline(1 << 16):
            size += len(chunk)
            if chunk.endswith(b"\n"):
                break
        yield lineno, None, size


def iter_jsonl(path: Path, *, max_chars: int, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
               open_path: str | None = None) -> Iterator[Skill | Quarantined]:
    """One skill per line; `id` or `skill_id` names it. Bad lines are quarantined with their line number; a line
    over `max_file_bytes` is skipped unparsed."""
    source = path.name.split(".")[0]
    lineno = 0
    try:
        if open_path is None:  # a path given by the user: a symlink to a regular file anywhere is fine
            open_path, _ = _regular_target(str(path), None, None)
        fd = _open_regular(open_path)
    except _Reject as rej:
        yield Quarantined(rej.reason, rej.detail, str(path))
        return
    try:
        with os.fdopen(fd, "rb") as raw_fh:
            fh = gzip.GzipFile(fileobj=raw_fh, mode="rb") if path.name.lower().endswith(".gz") else raw_fh
            with fh:
                for lineno, raw, size in _bounded_lines(fh, max_file_bytes):
                    location = f"{path}:{lineno}"
                    if raw is None:
                        yield Quarantined("line_too_large", f"the line is {size:,} bytes, over the cap of "
                                          f"{max_file_bytes:,} (corpus.max_file_bytes); not parsed", location)
                        continue
                    if not raw.strip():
                        continue
                    yield _json_line(raw, location, source, max_chars)
    except (OSError, EOFError, zlib.error) as exc:  # truncated or corrupt gzip, unreadable file
        yield Quarantined("unreadable_file", f"stopped after line {lineno}: {exc}", str(path))


def _json_line(raw: bytes, location: str, source: str, max_chars: int) -> Skill | Quarantined:
    try:
        obj = json.loads(_decode(raw))
    except _Reject as rej:
        return Quarantined(rej.reason, rej.detail, location, record={"raw": raw.decode("utf-8", "replace")})
    except json.JSONDecodeError as exc:
        return Quarantined("invalid_json", str(exc), location, record={"raw": raw.decode("utf-8")})
    except RecursionError:
        return Quarantined("invalid_json", "nested too deeply to parse", location,
                           record={"raw": raw.decode("utf-8")[:1000]})
    except ValueError as exc:  # an integer over Python's digit limit
        return Quarantined("invalid_json", str(exc)[:200], location, record={"raw": raw.decode("utf-8")[:1000]})
    if not isinstance(obj, dict):
        return Quarantined("invalid_json", f"line is a JSON {type(obj).__name__}, not an object", location,
                           record={"raw": raw.decode("utf-8")[:1000]})
    return validate_record(obj, location=location, source=source, max_chars=max_chars)


def iter_parquet(path: Path, *, max_chars: int, open_path: str | None = None,
                 batch_rows: int = PARQUET_BATCH_ROWS) -> Iterator[Skill | Quarantined]:
    """Rows in batches; a row group that cannot be decoded (a corrupt page) is quarantined as one entry naming
    its rows, and reading goes on with the next."""
    import pyarrow.parquet as pq

    source = path.name.split(".")[0]
    try:
        _regular_target(open_path or str(path), None, None)
        pf = pq.ParquetFile(open_path or str(path), page_checksum_verification=True)  # where the file has them
        groups = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    except _Reject as rej:
        yield Quarantined(rej.reason, rej.detail, str(path))
        return
    except Exception as exc:  # pyarrow raises several types for a damaged file
        yield Quarantined("unreadable_file", str(exc)[:500], str(path))
        return
    first = 0
    for group, num_rows in enumerate(groups):
        row = first
        try:
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[group]):
                for record in batch.to_pylist():
                    row += 1
                    if isinstance(record.get("metadata"), str):
                        try:
                            record["metadata"] = json.loads(record["metadata"])
                        except (ValueError, RecursionError):
                            pass  # kept as the text it is
                    yield validate_record(record, location=f"{path}#row{row}", source=source, max_chars=max_chars)
        except Exception as exc:  # a corrupt page or an undecodable value, found mid-file
            last = first + num_rows
            yield Quarantined("unreadable_rows", f"row group {group}, rows {row + 1}-{last} of this file could not "
                              f"be decoded: {str(exc)[:300]}", f"{path}#rows{row + 1}-{last}")
        first += num_rows


def _data_file(path: Path, open_path: str, *, max_chars: int,
               max_file_bytes: int) -> Iterator[Skill | Quarantined]:
    if path.name.lower().endswith(".parquet"):
        yield from iter_parquet(path, max_chars=max_chars, open_path=open_path)
    else:
        yield from iter_jsonl(path, max_chars=max_chars, max_file_bytes=max_file_bytes, open_path=open_path)


# --- dispatch ----------------------------------------------------------------------------------------------


def _shards(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.lower().endswith(JSONL_SUFFIXES))


def describe_source(path: Path) -> str:
    """Name the layout of `path` (jsonl, parquet, skill-md, pool, ingested or directory), or raise
    UnsupportedSource. Only looks at the path's `stat`: nothing is opened."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UnsupportedSource(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise UnsupportedSource(f"{path}: {exc.strerror or exc}") from None
    if stat.S_ISREG(st.st_mode):
        name = path.name.lower()
        if name.endswith(JSONL_SUFFIXES):
            return "jsonl"
        if name.endswith(".parquet"):
            return "parquet"
        if name == SKILL_FILE_NAME:
            return "skill-md"
        raise UnsupportedSource(f"{path}: unsupported file type (expected .jsonl, .jsonl.gz, .parquet or SKILL.md)")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsupportedSource(f"{path}: {_kind(st.st_mode)}, not a file or a folder")
    if (path / "pool").is_dir():
        return "pool"
    if (path / "skills.parquet").is_file() and (path / "summary.json").is_file():  # ingest's own output
        return "ingested"
    return "directory"


def iter_source(src: str | Path, *, max_chars: int,
                max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Iterator[Skill | Quarantined | Skipped]:
    """Every item of one source, whatever its layout (see `describe_source`). Raises UnsupportedSource before
    yielding anything when `src` is not a usable path."""
    path = resolve_source(src)
    kind = describe_source(path)
    return _guard(path, _iter_kind(path, kind, max_chars, max_file_bytes))


def _iter_kind(path: Path, kind: str, max_chars: int,
               max_file_bytes: int) -> Iterator[Skill | Quarantined | Skipped]:
    if kind == "jsonl":
        yield from iter_jsonl(path, max_chars=max_chars, max_file_bytes=max_file_bytes)
    elif kind == "parquet":
        yield from iter_parquet(path, max_chars=max_chars)
    elif kind == "ingested":
        yield from iter_parquet(path / "skills.parquet", max_chars=max_chars)
    elif kind == "pool":
        for shard in _shards(path / "pool"):
            yield from _guard(shard, iter_jsonl(shard, max_chars=max_chars, max_file_bytes=max_file_bytes))
    elif kind == "skill-md":
        folder = Path(os.path.abspath(path)).parent.name
        yield read_skill_md(path, skill_id=folder, source=folder, max_chars=max_chars, max_file_bytes=max_file_bytes)
    else:
        yield from iter_tree(path, max_chars=max_chars, max_file_bytes=max_file_bytes)


def _guard(path: Path, items: Iterator[Skill | Quarantined | Skipped]) -> Iterator[Skill | Quarantined | Skipped]:
    """A reader that fails where no check foresaw ends its source with one quarantine entry naming the source,
    instead of ending the whole ingest: what it yielded before stays."""
    try:
        yield from items
    except Exception as exc:
        yield Quarantined("read_error", f"reading stopped: {type(exc).__name__}: {str(exc)[:300]}", str(path))


def resolve_source(src: str | Path) -> Path:
    """`bundled` names the sample corpus shipped in the package; anything else is a path."""
    if str(src) == "bundled":
        from skillrouter.corpus.sample import SKILLS_DIR

        return SKILLS_DIR
    return Path(src).expanduser()
