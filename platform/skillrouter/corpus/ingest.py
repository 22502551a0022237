"""Ingest skills from any supported layout into one Parquet table, quarantining what cannot be used.

Outputs in `out_dir`: `skills.parquet` (see `Skill.to_row`), `quarantine.jsonl` (one line per rejected record,
one reason each, with the raw record where it is not a file that stays on disk) and `summary.json`.
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
from skillrouter.corpus.readers import Quarantined, iter_source
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


@dataclass
class IngestSummary:
    sources: list[str]
    out_dir: str
    read: int = 0
    written: int = 0
    duplicates: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"read {self.read:,}  written {self.written:,}  duplicates {self.duplicates:,}  "
               f"quarantined {self.quarantined:,}  ({self.seconds:.1f} s)"]
        out += [f"  quarantine reason {reason:<22} {n:>8,}" for reason, n in sorted(self.reasons.items())]
        return out


def dedup_ids(items: Iterable[Skill | Quarantined]) -> Iterator[Skill | Quarantined]:
    """Keep the first skill of each id; later ones are quarantined as duplicates, naming the first's origin."""
    first_seen: dict[str, str] = {}
    for item in items:
        if isinstance(item, Skill):
            if item.id in first_seen:
                yield Quarantined("duplicate_id", f"id already taken by a skill from {first_seen[item.id]}",
                                  item.source, item.id, item.to_row())
                continue
            first_seen[item.id] = item.source
        yield item


def ingest(sources: list[str], out_dir: str | Path, config: CorpusConfig | None = None,
           progress: bool = True, batch_rows: int = 1024) -> IngestSummary:
    """Read every source, write valid skills to Parquet and the rest to the quarantine; see module doc."""
    config = config or CorpusConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary = IngestSummary(sources=[str(s) for s in sources], out_dir=str(out))
    reasons: Counter[str] = Counter()
    # Write beside the final names and rename at the end: a failed run never leaves a table that looks complete.
    tmp_skills, tmp_quarantine = out / f".{SKILLS_FILE}.tmp", out / f".{QUARANTINE_FILE}.tmp"
    writer = pq.ParquetWriter(tmp_skills, SKILL_SCHEMA, compression="zstd")
    rows: list[dict] = []

    def flush() -> None:
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=SKILL_SCHEMA))
            rows.clear()

    def all_items() -> Iterator[Skill | Quarantined]:
        for src in sources:
            yield from iter_source(src, max_chars=config.max_skill_chars)

    try:
        with open(tmp_quarantine, "w", encoding="utf-8") as qfile:
            bar = tqdm(dedup_ids(all_items()), unit=" skills", desc="ingest", disable=not progress,
                       mininterval=0.5)
            for item in bar:
                summary.read += 1
                if isinstance(item, Skill):
                    rows.append(item.to_row())
                    summary.written += 1
                    if len(rows) >= batch_rows:
                        flush()
                else:
                    reasons[item.reason] += 1
                    qfile.write(json.dumps(item.to_json(), ensure_ascii=False, default=str) + "\n")
            flush()
    finally:
        writer.close()
    summary.quarantined = sum(reasons.values())
    summary.duplicates = reasons.get("duplicate_id", 0)
    summary.reasons = dict(reasons)
    summary.seconds = time.perf_counter() - started
    tmp_quarantine.replace(out / QUARANTINE_FILE)
    (out / SUMMARY_FILE).write_text(json.dumps(asdict(summary), indent=2) + "\n")
    if summary.written == 0:
        tmp_skills.unlink()
        raise IngestError(f"no valid skill in {', '.join(summary.sources)}: {summary.quarantined} records "
                          f"quarantined, see {out / QUARANTINE_FILE}")
    if config.strict and summary.quarantined:
        tmp_skills.unlink()
        raise IngestError(f"--strict: {summary.quarantined} records quarantined "
                          f"({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}); see {out / QUARANTINE_FILE}")
    tmp_skills.replace(out / SKILLS_FILE)
    return summary


def write_skills(skills: Iterable[Skill], path: str | Path) -> Path:
    """Write skills as an ingested table, replacing `path` in one step: a reader sees the old table or the new."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist([s.to_row() for s in skills], schema=SKILL_SCHEMA), tmp,
                   compression="zstd")
    tmp.replace(path)
    return path


def read_skills(path: str | Path, max_chars: int | None = None) -> list[Skill]:
    """All valid skills of a source (an ingested table or any raw layout), in order, duplicates dropped."""
    cap = max_chars or CorpusConfig().max_skill_chars
    path = Path(path)
    if path.is_dir() and (path / SKILLS_FILE).is_file():
        path = path / SKILLS_FILE
    return [s for s in dedup_ids(iter_source(path, max_chars=cap)) if isinstance(s, Skill)]
