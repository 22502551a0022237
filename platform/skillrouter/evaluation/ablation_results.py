"""The paper's ablations as the report reads them: what `pipeline.ablations` saved under `RUN_DIR/ablations/`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from skillrouter.evaluation.runner import EvalResult, read_result
from skillrouter.models.loading import export_info

BASELINE = "baseline"
ABLATIONS_DIR = "ablations"
SUMMARY_FILE = "ablations.json"


@dataclass
class Ablation:
    """One question of the paper's ablations: evaluated rows (label, result). `against[i]` is the row that row i's
    differences are taken against (None: none); by default every row against the first."""

    name: str
    question: str
    rows: list[tuple[str, EvalResult]]
    notes: list[str] = field(default_factory=list)
    against: list[int | None] | None = None

    def reference(self, i: int) -> int | None:
        if self.against is not None:
            return self.against[i]
        return None if i == 0 else 0


def export_fingerprint(model_dir: Path) -> str | None:
    return export_info(str(model_dir)).get("fingerprint")


def report_notes(run_dir: str | Path) -> list[str]:
    """What the report must say about the ablations besides their tables: models of the baseline that are not the
    run's own, and baseline models that changed since the ablations ran (their rows are then out of date)."""
    root = Path(run_dir)
    path = root / ABLATIONS_DIR / SUMMARY_FILE
    if not path.exists():
        return []
    models = json.loads(path.read_text()).get("models", {})
    own = (root / "models").resolve()
    foreign = [kind for kind, m in models.items() if Path(m["path"]).resolve().parent != own]
    stale = [kind for kind, m in models.items() if export_fingerprint(Path(m["path"])) != m["fingerprint"]]
    notes = []
    if foreign:
        notes.append(f"The ablations' baseline {' and '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not "
                     f"the run's own (missing, or trained from other settings or data when they ran): trained for "
                     f"them under `{root / ABLATIONS_DIR / BASELINE}`, so their baseline rows may differ from the "
                     "systems above.")
    if stale:
        notes.append(f"The ablations below predate the run's current {' and '.join(stale)}: run `skillrouter "
                     "ablations` again to bring them up to date.")
    return notes


def read_ablations(run_dir: str | Path) -> list[Ablation]:
    """The ablations saved by `run_ablations` under `run_dir` (none when they have not run)."""
    root = Path(run_dir)
    path = root / ABLATIONS_DIR / SUMMARY_FILE
    if not path.exists():
        return []
    summary = json.loads(path.read_text())
    out = []
    for q in summary["questions"]:
        rows = []
        for r in q["rows"]:
            where = Path(r["result"])
            rows.append((r["label"], read_result(where if where.is_absolute() else root / where)))
        out.append(Ablation(q["name"], q["question"], rows, q.get("notes", []),
                            [r.get("against", 0 if i else None) for i, r in enumerate(q["rows"])]))
    return out
