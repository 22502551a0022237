"""Ingest skills from any supported layout into one Parquet table, quarantining what cannot be used.

Outputs in `out_dir`: `skills.parquet` (see `Skill.to_row`), `quarantine.jsonl` (one line per rejected file or
record, one reason each, naming its file (and line or row), with the raw record where it is not a file that stays
on disk) and `summary.json` (counts; `read = written + quarantined`; folders and files deliberately not read are
counted under `skipped`, with their paths). Each output is written beside its final name and renamed into place.
Streaming: records are written in batches, so a 70K-skill pool never sits in memory as Python objects.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from skillrouter.config import CorpusConfig
from skillrouter.corpus.readers import Quarantined, Skipped, describe_source, iter_source, resolve_source
from skillrouter.corpus.skill import Skill

SKILLS_FILE = "skills.parquet"
QUARANTINE_FILE = "quarantine.jsonl"
SUMMARY_FILE = "summary.json"

SKILL_SCHEMA = pa.schema([
    ("id", pa.string()), ("name", pa.string()), ("description", pa.string()), ("body", pa.string()),
    ("category", pa.string()), ("source", pa.string()), ("metadata", pa.string()), ("content_hash", pa.string()),
])


class IngestError(RuntimeError):
    """Ingestion produced nothing usable, or `strict` was set and something was quarantined."""


SKIPPED_PATHS_KEPT = 100  # per reason, in summary.json


@dataclass
class IngestSummary:
    sources: list[str]
    out_dir: str
    read: int = 0
    written: int = 0
    duplicates: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_paths: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"read {self.read:,}  written {self.written:,}  duplicates {self.duplicates:,}  "
               f"quarantined {self.quarantined:,}  ({self.seconds:.1f} s)"]
        out += [f"  quarantine reason {reason:<22} {n:>8,}" for reason, n in sorted(self.reasons.items())]
        out += [f"  skipped, not read {reason:<22} {n:>8,}  e.g. {self.skipped_paths[reason][0]}"
                for reason, n in sorted(self.skipped.items())]
        return out


def dedup_ids(items: Iterable[Skill | Quarantined | Skipped]) -> Iterator[Skill | Quarantined | Skipped]:
    """Keep the first skill of each id; later ones are quarantined as duplicates, naming the first's origin."""
    first_seen: dict[str, str] = {}
    for item in items:
        if isinstance(item, Skill):
            if item.id in first_seen:
                yield Quarantined("duplicate_id", f"id already taken by the skill at {first_seen[item.id]}",
                                  item.location or item.source, item.id, item.to_row())
                continue
            first_seen[item.id] = item.location or item.source
        yield item


def quarantine_line(item: Quarantined) -> str:
    """One JSON line for the quarantine file, whatever the record holds: text that is not valid Unicode (a lone
    surrogate) is written escaped, and a record that cannot be written at all is left out, saying why."""
    entry = item.to_json()
    try:
        line = json.dumps(entry, ensure_ascii=False, default=str)
        line.encode("utf-8")
        return line
    except UnicodeEncodeError:
        pass
    except (TypeError, ValueError, RecursionError) as exc:
        entry["record"] = None
        entry["detail"] = f"{entry['detail']} (record not kept: {type(exc).__name__})"
    try:
        return json.dumps(entry, ensure_ascii=True, default=str)
    except (TypeError, ValueError, RecursionError) as exc:
        entry["record"] = None
        entry["detail"] = f"{entry['detail']} (record not kept: {type(exc).__name__})"
        return json.dumps(entry, ensure_ascii=True, default=str)


def ingest(sources: list[str], out_dir: str | Path, config: CorpusConfig | None = None,
           progress: bool = True, batch_rows: int = 1024) -> IngestSummary:
    """Read every source, write valid skills to Parquet and the rest to the quarantine; see module doc.

    A source that is not a usable path raises UnsupportedSource before anything is written; past that, no bad
    file or record stops the run. Every output is written beside its final name and renamed into place, and
    whatever way the run ends, no temporary file is left behind."""
    config = config or CorpusConfig()
    for src in sources:  # every argument checked before any file is created
        describe_source(resolve_source(src))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary = IngestSummary(sources=[str(s) for s in sources], out_dir=str(out))
    reasons: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    # Write beside the final names and rename at the end: a failed run never leaves a table that looks complete.
    tmp_skills, tmp_quarantine = out / f".{SKILLS_FILE}.tmp", out / f".{QUARANTINE_FILE}.tmp"
    tmp_summary = out / f".{SUMMARY_FILE}.tmp"
    rows: list[dict] = []

    def all_items() -> Iterator[Skill | Quarantined | Skipped]:
        for src in sources:
            yield from iter_source(src, max_chars=config.max_skill_chars, max_file_bytes=config.max_file_bytes)

    try:
        writer = pq.ParquetWriter(tmp_skills, SKILL_SCHEMA, compression="zstd", write_page_checksum=True)
        try:
            with open(tmp_quarantine, "w", encoding="utf-8") as qfile:
                bar = tqdm(dedup_ids(all_items()), unit=" skills", desc="ingest", disable=not progress,
                           mininterval=0.5)
                for item in bar:
                    if isinstance(item, Skipped):
                        skipped[item.reason] += 1
                        kept = summary.skipped_paths.setdefault(item.reason, [])
                        if len(kept) < SKIPPED_PATHS_KEPT:
                            kept.append(item.location)
                        continue
                    summary.read += 1
                    if isinstance(item, Skill):
                        rows.append(item.to_row())
                        summary.written += 1
                        if len(rows) >= batch_rows:
                            writer.write_table(pa.Table.from_pylist(rows, schema=SKILL_SCHEMA))
                            rows.clear()
                    else:
                        reasons[item.reason] += 1
                        qfile.write(quarantine_line(item) + "\n")
                if rows:
                    writer.write_table(pa.Table.from_pylist(rows, schema=SKILL_SCHEMA))
        finally:
            writer.close()
        summary.quarantined = sum(reasons.values())
        summary.duplicates = reasons.get("duplicate_id", 0)
        summary.reasons = dict(reasons)
        summary.skipped = dict(skipped)
        summary.seconds = time.perf_counter() - started
        tmp_summary.write_text(json.dumps(asdict(summary), indent=2) + "\n")
        tmp_quarantine.replace(out / QUARANTINE_FILE)
        tmp_summary.replace(out / SUMMARY_FILE)
        if summary.written == 0:
            raise IngestError(f"no valid skill in {', '.join(summary.sources)}: {summary.quarantined} records "
                              f"quarantined, see {out / QUARANTINE_FILE}")
        if config.strict and summary.quarantined:
            raise IngestError(f"--strict: {summary.quarantined} records quarantined "
                              f"({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}); "
                              f"see {out / QUARANTINE_FILE}")
        tmp_skills.replace(out / SKILLS_FILE)
    finally:  # on any failure, and after the renames (then a no-op)
        for tmp in (tmp_skills, tmp_quarantine, tmp_summary):
            tmp.unlink(missing_ok=True)
    return summary


def write_skills(skills: Iterable[Skill], path: str | Path) -> Path:
    """Write skills as an ingested table, replacing `path` in one step: a reader sees the old table or the new."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(pa.Table.from_pylist([s.to_row() for s in skills], schema=SKILL_SCHEMA), tmp,
                       compression="zstd", write_page_checksum=True)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_skills(path: str | Path, max_chars: int | None = None, max_file_bytes: int | None = None) -> list[Skill]:
    """All valid skills of a source (an ingested table or any raw layout), in order, duplicates dropped."""
    defaults = CorpusConfig()
    path = Path(path)
    if path.is_dir() and (path / SKILLS_FILE).is_file():
        path = path / SKILLS_FILE
    items = iter_source(path, max_chars=max_chars or defaults.max_skill_chars,
                        max_file_bytes=max_file_bytes or defaults.max_file_bytes)
    return [s for s in dedup_ids(items) if isinstance(s, Skill)]
