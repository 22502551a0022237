"""The resumable record of a query-generation run: an append-only JSONL log in parts, one per worker.

Every HTTP attempt is logged when it ends (`request`: its usage, answered or not: a 429 or a time-out may still be
billed), every answer as soon as it arrives (`answer`: its accepted queries, rejections and the raw text that was
paid for), and every finished skill once (`done`: ok or failed). The `request` lines are the spend: the budget of a
rerun starts from their sum, so a limit holds across every run into the same folder. Replaying the log rebuilds each
skill's state, so a rerun after a kill sends no request whose answer is already stored: a finished skill is
skipped, and an unfinished one continues from its accepted queries and attempt count. A line cut short by a kill
is ignored. Parts are per worker so that no two processes ever append to one file.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from skillrouter.querygen.budget import Usage

OK, FAILED = "ok", "failed"


@dataclass
class SkillState:
    skill_id: str
    queries: list[str] = field(default_factory=list)
    attempts: int = 0
    usage: Usage = field(default_factory=Usage)  # every attempt's, answered or not
    answer_usage: Usage = field(default_factory=Usage)  # of answers only: the spend of logs older than `request`
    logged_requests: bool = False
    rejected: Counter = field(default_factory=Counter)
    status: str | None = None  # OK, FAILED, or None while unfinished
    reason: str | None = None
    generator: str = ""
    model: str = ""

    @property
    def done(self) -> bool:
        return self.status in (OK, FAILED)


class LogWriter:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        # One write and a flush per record: a killed process loses at most the line it was writing.
        self._fh.write(json.dumps({**record, "ts": round(time.time(), 3)}, ensure_ascii=False) + "\n")
        self._fh.flush()

    def answer(self, state: SkillState, accepted: list[str], rejected: dict[str, int], usage: Usage,
               raw: str) -> None:
        self.write({"type": "answer", "skill_id": state.skill_id, "attempt": state.attempts, "queries": accepted,
                    "rejected": rejected, "usage": usage.to_json(), "raw": raw, "generator": state.generator,
                    "model": state.model})

    def request(self, skill_id: str, usage: Usage) -> None:
        self.write({"type": "request", "skill_id": skill_id, "usage": usage.to_json()})

    def finish(self, state: SkillState) -> None:
        self.write({"type": "done", "skill_id": state.skill_id, "status": state.status, "reason": state.reason})

    def close(self) -> None:
        self._fh.close()


def replay(parts_dir: Path) -> dict[str, SkillState]:
    """Rebuild every logged skill's state from all parts."""
    states: dict[str, SkillState] = {}
    for part in sorted(parts_dir.glob("*.jsonl")) if parts_dir.is_dir() else []:
        with open(part, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the tail of a killed writer
                st = states.setdefault(rec["skill_id"], SkillState(rec["skill_id"]))
                if rec["type"] == "answer":
                    st.queries.extend(q for q in rec["queries"] if q not in st.queries)
                    st.attempts = max(st.attempts, rec["attempt"])
                    st.answer_usage = st.answer_usage + Usage(**rec["usage"])
                    st.rejected.update(rec["rejected"])
                    st.generator, st.model = rec["generator"], rec["model"]
                elif rec["type"] == "request":
                    st.usage = st.usage + Usage(**rec["usage"])
                    st.logged_requests = True
                elif rec["type"] == "done" and not st.done:
                    st.status, st.reason = rec["status"], rec["reason"]
    for st in states.values():
        if not st.logged_requests:
            st.usage = st.answer_usage
    return states


def spent(states: dict[str, SkillState]) -> Usage:
    """What every run logged in this folder has paid for, whichever skills it was for."""
    return sum((st.usage for st in states.values()), Usage())
