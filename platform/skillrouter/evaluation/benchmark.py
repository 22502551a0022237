"""Benchmarks in the SkillRouter eval_core layout, and the bundled dev set in the same shape.

Layout of a benchmark directory:
    tasks.jsonl      {"task_id", "instruction_text", ...} per line
    relevance.json   {task_id: {"gt_skill_ids": [...], "relevance": {skill_id: grade}, "task_type": ...}}
    pool/            *.jsonl / *.jsonl.gz shards of skills (`id` or `skill_id`, name, description, body)
Tasks of type `generic_only` are skipped, as in the release. Relevance ids absent from the pool can never be
retrieved: they stay in the labels (so they count as misses) and are reported in `missing_ids`.

Two labelled sets come with the sample corpus: `bundled` (the dev set) and `realistic` (requests as users write them,
in their words rather than the skills': symptoms and goals, a third of them needing two or more skills). The
realistic set has an easy tier (the sample corpus as the pool) and a hard tier (`realistic-hard`: each needed
skill also has look-alike distractors with its name and description and a damaged body, see `distractors.py`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from skillrouter.corpus.ingest import read_skills
from skillrouter.corpus.sample import DEVSET_FILE, SAMPLE_DIR, SKILLS_DIR
from skillrouter.corpus.skill import Skill, corpus_version

SKIPPED_TASK_TYPES = {"generic_only"}
REALISTIC_FILE = SAMPLE_DIR / "realistic.jsonl"
REALISTIC_TIERS = ("easy", "hard")


class BenchmarkError(ValueError):
    """A benchmark directory that does not follow the eval_core layout."""


@dataclass(frozen=True)
class Task:
    task_id: str
    query: str
    gt_skill_ids: tuple[str, ...]
    relevance: dict[str, float]
    task_type: str  # "single" or "multi" (needs two or more skills)


@dataclass
class Benchmark:
    name: str
    tasks: list[Task]
    skills: list[Skill]
    missing_ids: dict[str, list[str]] = field(default_factory=dict)  # task_id -> relevance ids not in the pool
    skipped: dict[str, int] = field(default_factory=dict)  # why tasks were left out -> how many


def _task_type(entry: dict, gt: tuple[str, ...]) -> str:
    declared = entry.get("task_type")
    if declared in ("single", "multi"):
        return declared
    return "multi" if len(gt) > 1 else "single"


def build_tasks(texts: dict[str, str], relevance: dict[str, dict], pool_ids: set[str],
                name: str, skills: list[Skill]) -> Benchmark:
    tasks, missing, skipped = [], {}, {}
    for task_id, query in texts.items():
        entry = relevance.get(task_id)
        if entry is None:
            skipped["no_relevance"] = skipped.get("no_relevance", 0) + 1
            continue
        if entry.get("task_type") in SKIPPED_TASK_TYPES:
            skipped[entry["task_type"]] = skipped.get(entry["task_type"], 0) + 1
            continue
        gt = tuple(entry.get("gt_skill_ids") or [])
        grades = {str(k): float(v) for k, v in (entry.get("relevance") or {}).items()}
        for s in gt:  # a needed skill is relevant even where the grades omit it
            grades.setdefault(s, max(grades.values(), default=1.0) or 1.0)
        if not gt:
            skipped["no_gt_skills"] = skipped.get("no_gt_skills", 0) + 1
            continue
        absent = sorted(s for s in grades if s not in pool_ids)
        if absent:
            missing[task_id] = absent
        tasks.append(Task(task_id, query, gt, grades, _task_type(entry, gt)))
    if not tasks:
        raise BenchmarkError(f"{name}: no task left to evaluate (skipped: {skipped or 'none'})")
    return Benchmark(name, tasks, skills, missing, skipped)


def load_eval_core(directory: str | Path) -> Benchmark:
    """Load `tasks.jsonl`, `relevance.json` and the `pool/` shards of an eval_core benchmark directory."""
    root = Path(directory)
    for needed in ("tasks.jsonl", "relevance.json", "pool"):
        if not (root / needed).exists():
            raise BenchmarkError(f"{root}: missing '{needed}' (expected the eval_core layout: tasks.jsonl, "
                                 f"relevance.json, pool/)")
    texts = {}
    with open(root / "tasks.jsonl", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                texts[str(row["task_id"])] = row["instruction_text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise BenchmarkError(f"{root / 'tasks.jsonl'}:{lineno}: bad task line ({exc})") from None
    try:
        relevance = json.loads((root / "relevance.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{root / 'relevance.json'}: invalid JSON ({exc})") from None
    skills = read_skills(root / "pool")
    return build_tasks(texts, relevance, {s.id for s in skills}, root.name, skills)


def _read_labelled(path: Path) -> tuple[dict[str, str], dict[str, dict]]:
    """Requests and labels of a bundled set: one JSON row per task with its text and its relevance entry."""
    texts, relevance = {}, {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                texts[row["task_id"]] = row["instruction_text"]
                relevance[row["task_id"]] = row
    return texts, relevance


def load_bundled() -> Benchmark:
    """The bundled dev set over the bundled sample corpus."""
    skills = read_skills(SKILLS_DIR)
    texts, relevance = _read_labelled(DEVSET_FILE)
    return build_tasks(texts, relevance, {s.id for s in skills}, "bundled-dev", skills)


REALISTIC_SPLITS = ("all", "dev", "test")
DEV_SHARE = 1 / 3  # of the realistic tasks, for choosing what to serve; the rest are reported


def realistic_split(task_id: str) -> str:
    """`dev` or `test`: a fixed third of the realistic tasks (by a hash of the id) is the development split that
    the main job chooses its served system on, so the `test` split it reports first was never used to choose."""
    return "dev" if int(hashlib.sha256(task_id.encode()).hexdigest(), 16) % 3 == 0 else "test"


def load_realistic(tier: str = "easy", lookalikes: int = 2, seed: int = 0, split: str = "all") -> Benchmark:
    """The realistic set over the bundled sample corpus; the hard tier adds `lookalikes` (1 or 2) look-alike
    distractors of every skill a task needs (relevance 0, ids `<id>~lookalike-<k>`). `split`: all tasks, or the
    `dev` or `test` part (`realistic_split`)."""
    if tier not in REALISTIC_TIERS:
        raise BenchmarkError(f"unknown tier '{tier}': one of {', '.join(REALISTIC_TIERS)}")
    if split not in REALISTIC_SPLITS:
        raise BenchmarkError(f"unknown split '{split}': one of {', '.join(REALISTIC_SPLITS)}")
    skills = read_skills(SKILLS_DIR)
    texts, relevance = _read_labelled(REALISTIC_FILE)
    if split != "all":
        texts = {t: q for t, q in texts.items() if realistic_split(t) == split}
    if tier == "hard":
        from skillrouter.evaluation.distractors import lookalike_distractors

        needed = {s for entry in relevance.values() for s in entry.get("gt_skill_ids") or []}
        pool = skills + lookalike_distractors(skills, needed, lookalikes, seed)
        # a seeded order, so that a system breaking score ties by pool position does not favour the originals
        skills = sorted(pool, key=lambda s: hashlib.sha256(f"{seed}:{s.id}".encode()).hexdigest())
    name = f"realistic-{tier}" + ("" if split == "all" else f"-{split}")
    return build_tasks(texts, relevance, {s.id for s in skills}, name, skills)


def load_benchmark(spec: str | Path) -> Benchmark:
    """`bundled`, `realistic` (or `realistic-easy`), `realistic-hard`, either with `-dev` or `-test` for a split
    (`realistic-test`, `realistic-hard-dev`, ...), or an eval_core directory."""
    named = {"bundled": load_bundled}
    for tier in REALISTIC_TIERS:
        for split in REALISTIC_SPLITS:
            suffix = "" if split == "all" else f"-{split}"
            named[f"realistic-{tier}{suffix}"] = lambda tier=tier, split=split: load_realistic(tier, split=split)
            if tier == "easy":
                named[f"realistic{suffix}"] = named[f"realistic-{tier}{suffix}"]
    return named[str(spec)]() if str(spec) in named else load_eval_core(spec)


def add_distractors(bench: Benchmark, sources: list[str]) -> Benchmark:
    """Grow the pool with skills from other sources (ids already in the pool are kept as they were).

    The bundled dev set over its own 239 skills is easy for lexical matching; routing the same requests among
    tens of thousands of real skills is the paper's setting. Distractors carry no labels, so a distractor that
    would also serve a request counts as a miss, as in the SkillRouter benchmark.
    """
    if not sources:
        return bench
    seen = {s.id for s in bench.skills}
    extra = []
    for src in sources:
        for s in read_skills(src):
            if s.id not in seen:
                seen.add(s.id)
                extra.append(s)
    name = f"{bench.name}+{len(extra)}-distractors"
    return Benchmark(name, bench.tasks, bench.skills + extra, bench.missing_ids, bench.skipped)


def benchmark_version(bench: Benchmark) -> str:
    """A hash of the tasks (ids, requests, labels) and the pool's content: equal for the same benchmark."""
    h = hashlib.sha256(corpus_version(bench.skills).encode())
    for t in bench.tasks:
        h.update(json.dumps([t.task_id, t.query, t.gt_skill_ids, sorted(t.relevance.items()), t.task_type]).encode())
    return h.hexdigest()[:16]


def export_eval_core(bench: Benchmark, out_dir: str | Path) -> Path:
    """Write a benchmark in the eval_core layout, so any tool that reads the release reads ours."""
    out = Path(out_dir)
    (out / "pool").mkdir(parents=True, exist_ok=True)
    with open(out / "tasks.jsonl", "w", encoding="utf-8") as fh:
        for t in bench.tasks:
            fh.write(json.dumps({"task_id": t.task_id, "instruction_text": t.query}, ensure_ascii=False) + "\n")
    relevance = {t.task_id: {"gt_skill_ids": list(t.gt_skill_ids), "relevance": t.relevance,
                             "task_type": t.task_type} for t in bench.tasks}
    (out / "relevance.json").write_text(json.dumps(relevance, indent=1, ensure_ascii=False) + "\n")
    with gzip.open(out / "pool" / "skills-00000.jsonl.gz", "wt", encoding="utf-8") as fh:
        for s in bench.skills:
            row = {"id": s.id, "name": s.name, "description": s.description, "body": s.body,
                   "category": s.category, "source": s.source, **s.metadata}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out
