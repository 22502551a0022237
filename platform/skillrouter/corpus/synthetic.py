"""Grow the sample corpus into a large pool (80K+ skills) with controlled overlap, for scale tests.

Each synthetic skill is derived from a bundled template skill, deterministically from (seed, index), so any
record can be regenerated alone and two runs with one seed write identical files. Three kinds, in proportions
set by `SynthConfig`, mirror the real registries (69K skills, 50K distinct names, 6% near-duplicates):
- `variant`: a template specialised to a stack, platform and team, under a modified name, with a section borrowed
  from another skill of its category (bodies overlap in part, as forks and rewrites do);
- `same_name`: like a variant but published under the template's exact name: only the body tells them apart;
- `near_dup`: a lightly edited copy of an earlier synthetic skill, same name; `near_dup_of` names the original.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from skillrouter.corpus.skill import Skill

STACKS = ["Python", "TypeScript", "Go", "Rust", "Java", "Kotlin", "C#", "Ruby", "PHP", "Swift", "Scala",
          "Elixir", "C++", "Dart", "R", "Julia"]
PLATFORMS = ["AWS", "Google Cloud", "Azure", "Kubernetes", "bare-metal servers", "Vercel", "Cloudflare",
             "a laptop", "GitHub Actions runners", "an air-gapped network", "Heroku", "DigitalOcean"]
TEAMS = ["a fintech team", "a healthcare startup", "an e-commerce platform", "a research lab", "a game studio",
         "a public-sector agency", "an agency shipping client sites", "a data platform team", "a solo maintainer",
         "an open-source project", "a logistics company", "a media newsroom"]
OWNERS = ["acme", "northwind", "contoso", "initech", "globex", "umbrella", "hooli", "vandelay", "wayne",
          "stark", "tyrell", "soylent", "cyberdyne", "wonka", "oscorp", "aperture"]
NAME_AFFIXES = ["pro", "lite", "v2", "helper", "assistant", "toolkit", "workflow", "guide", "expert", "kit",
                "automation", "advanced", "quick", "team", "playbook", "next"]
NOTES = [
    "Prefer the {stack} ecosystem's standard tooling; do not introduce a new dependency without asking.",
    "Everything runs on {platform}, so paths, credentials and limits follow its conventions.",
    "Written for {team}: keep outputs short enough to paste into a ticket or a pull request.",
    "When an input is missing, ask one precise question instead of guessing.",
    "Record every command you ran and its exit code in the final summary.",
    "Stop and report if a step would delete data or change production settings.",
    "Follow the repository's existing style before any external style guide.",
    "Cite the file and line for every finding so a reviewer can check it quickly.",
]


@dataclass(frozen=True)
class SynthConfig:
    num_skills: int = 80_000
    seed: int = 0
    near_dup_rate: float = 0.06
    same_name_rate: float = 0.25

    def __post_init__(self):
        if self.num_skills < 1:
            raise ValueError(f"num_skills must be positive, got {self.num_skills}")
        for key in ("near_dup_rate", "same_name_rate"):
            value = getattr(self, key)
            if not 0 <= value <= 1:
                raise ValueError(f"{key} must be in [0, 1], got {value}")
        if self.near_dup_rate + self.same_name_rate > 1:
            raise ValueError("near_dup_rate + same_name_rate must not exceed 1")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _sections(body: str) -> list[str]:
    """Split a markdown body at its `## ` headings (the first chunk keeps the title)."""
    parts = re.split(r"(?m)^(?=## )", body)
    return [p.strip("\n") for p in parts if p.strip()]


class SyntheticPool:
    """Deterministic generator: `skill(i)` is the i-th synthetic skill for this config and template set."""

    def __init__(self, templates: Sequence[Skill], config: SynthConfig):
        if not templates:
            raise ValueError("the synthetic pool needs at least one template skill")
        self.templates = sorted(templates, key=lambda s: s.id)
        self.config = config
        self.by_category: dict[str, list[Skill]] = defaultdict(list)
        for t in self.templates:
            self.by_category[t.category or ""].append(t)
        self.skill = lru_cache(maxsize=4096)(self._make)

    def _rng(self, i: int) -> random.Random:
        return random.Random(f"{self.config.seed}:{i}")  # string seeds hash stably across processes

    def kind(self, i: int) -> str:
        u = self._rng(i).random()
        if i > 0 and u < self.config.near_dup_rate:
            return "near_dup"
        if u < self.config.near_dup_rate + self.config.same_name_rate:
            return "same_name"
        return "variant"

    def _make(self, i: int) -> Skill:
        rng = self._rng(i)
        rng.random()  # the draw `kind` used
        kind = self.kind(i)
        owner = rng.choice(OWNERS)
        if kind == "near_dup":
            return self._near_dup(i, rng, owner)
        t = rng.choice(self.templates)
        stack, platform, team = rng.choice(STACKS), rng.choice(PLATFORMS), rng.choice(TEAMS)
        if kind == "same_name":
            name = t.name
        else:
            affix = rng.choice(NAME_AFFIXES + [_slug(stack), _slug(platform)])
            name = f"{affix}-{t.name}" if rng.random() < 0.5 else f"{t.name}-{affix}"
        fill = {"stack": stack, "platform": platform, "team": team}
        description = f"{t.description} Tailored to {stack} work on {platform}."
        sections = _sections(t.body)
        peers = [p for p in self.by_category[t.category or ""] if p.id != t.id]
        if peers and len(sections) > 2:
            borrowed = _sections(rng.choice(peers).body)
            if len(borrowed) > 1:
                sections.insert(rng.randrange(1, len(sections)), rng.choice(borrowed[1:]))
        notes = rng.sample(NOTES, 3)
        context = (f"## Context\nThis version is maintained by {owner} for {team}, working in {stack} on "
                   f"{platform}.\n" + "\n".join(f"- {n.format(**fill)}" for n in notes))
        sections.insert(1, context)
        return Skill(id=f"{owner}/skills/{_slug(name)}-{i:06d}", name=name, description=description,
                     body="\n\n".join(sections), category=t.category, source=f"synthetic:{owner}",
                     metadata={"template_id": t.id, "kind": kind, "near_dup_of": None})

    def _near_dup(self, i: int, rng: random.Random, owner: str) -> Skill:
        j = rng.randrange(i)
        original = self.skill(j)
        root = original.metadata["near_dup_of"] or original.id
        lines = original.body.split("\n")
        # A light edit: drop one line and append a maintainer note, keeping well over 80% of the body.
        if len(lines) > 4:
            del lines[rng.randrange(1, len(lines))]
        lines.append(f"\nMirrored by {owner}; report problems upstream.")
        return Skill(id=f"{owner}/mirror/{_slug(original.name)}-{i:06d}", name=original.name,
                     description=original.description, body="\n".join(lines), category=original.category,
                     source=f"synthetic:{owner}", metadata={**original.metadata, "kind": "near_dup",
                                                             "near_dup_of": root})


def write_synthetic_pool(templates: Sequence[Skill], config: SynthConfig, out_dir: str | Path,
                         shard_size: int = 10_000) -> dict:
    """Write the pool as eval_core shards (`skills-NNNNN.jsonl.gz`) and return summary statistics."""
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pool = SyntheticPool(templates, config)
    kinds, names, lengths = Counter(), set(), []
    for shard_start in range(0, config.num_skills, shard_size):
        path = out / f"skills-{shard_start // shard_size:05d}.jsonl.gz"
        # mtime=0 keeps the gzip header, and so the file, identical across runs
        with gzip.GzipFile(path, "wb", mtime=0) as fh:
            for i in range(shard_start, min(shard_start + shard_size, config.num_skills)):
                s = pool.skill(i)
                kinds[s.metadata["kind"]] += 1
                names.add(s.name)
                lengths.append(len(s.body))
                row = {"id": s.id, "name": s.name, "description": s.description, "body": s.body,
                       "category": s.category, "source": s.source, **s.metadata}
                fh.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    return {"out_dir": str(out), "skills": config.num_skills, "distinct_names": len(names), "kinds": dict(kinds),
            "median_body_chars": statistics.median(lengths), "seconds": round(time.perf_counter() - started, 1)}
