"""The sample corpus shipped with skillrouter, written by the project: skills in 24 categories and a dev set.

`sample/skills/<category>/<slug>/SKILL.md` holds the skills (id = `<category>/<slug>`); `sample/devset.jsonl` holds
held-out requests labelled with the skills that serve them (`task_id, instruction_text, gt_skill_ids, relevance,
task_type`). It includes families of look-alike skills whose names and descriptions overlap while their bodies
differ, so that it rewards routing on the full body as the real registries do.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).parent / "sample"
SKILLS_DIR = SAMPLE_DIR / "skills"
DEVSET_FILE = SAMPLE_DIR / "devset.jsonl"
