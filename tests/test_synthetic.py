import hashlib

import pytest

from skillrouter.common.text import tokenize
from skillrouter.corpus.ingest import read_skills
from skillrouter.corpus.synthetic import SynthConfig, SyntheticPool, write_synthetic_pool


@pytest.fixture(scope="module")
def templates():
    return read_skills("bundled")


def trigrams(text):
    t = tokenize(text)
    return {tuple(t[i:i + 3]) for i in range(len(t) - 2)}


def jaccard(a, b):
    a, b = trigrams(a), trigrams(b)
    return len(a & b) / len(a | b)


def test_deterministic_files(templates, tmp_path):
    cfg = SynthConfig(num_skills=600, seed=7)
    write_synthetic_pool(templates, cfg, tmp_path / "a", shard_size=250)
    write_synthetic_pool(templates, cfg, tmp_path / "b", shard_size=250)
    digest = lambda d: [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())]  # noqa: E731
    assert len(digest(tmp_path / "a")) == 3 and digest(tmp_path / "a") == digest(tmp_path / "b")
    other = write_synthetic_pool(templates, SynthConfig(num_skills=600, seed=8), tmp_path / "c", shard_size=250)
    assert digest(tmp_path / "c") != digest(tmp_path / "a") and other["skills"] == 600


def test_pool_is_ingestible_with_unique_ids(templates, tmp_path):
    write_synthetic_pool(templates, SynthConfig(num_skills=1000), tmp_path / "pool", shard_size=400)
    skills = read_skills(tmp_path / "pool")
    assert len(skills) == 1000 and len({s.id for s in skills}) == 1000
    assert all(s.category for s in skills)


def test_controlled_overlap(templates):
    pool = SyntheticPool(templates, SynthConfig(num_skills=3000, near_dup_rate=0.1, same_name_rate=0.3))
    skills = [pool.skill(i) for i in range(3000)]
    kinds = [s.metadata["kind"] for s in skills]
    assert abs(kinds.count("near_dup") / 3000 - 0.1) < 0.02
    assert abs(kinds.count("same_name") / 3000 - 0.3) < 0.03
    by_id = {s.id: s for s in skills}
    template_names = {t.id: t.name for t in templates}
    for s in skills[:400]:
        if s.metadata["kind"] == "near_dup":
            original = by_id[s.metadata["near_dup_of"]]
            assert original.name == s.name and jaccard(original.body, s.body) > 0.8
        elif s.metadata["kind"] == "same_name":
            assert s.name == template_names[s.metadata["template_id"]]
        else:
            assert s.name != template_names[s.metadata["template_id"]]
    # overlap is controlled, not everywhere: skills from different templates share little text
    pairs = [(a, b) for a, b in zip(skills[:300], skills[1:301])
             if "near_dup" not in (a.metadata["kind"], b.metadata["kind"])
             and a.metadata["template_id"] != b.metadata["template_id"]]
    assert len(pairs) > 100
    assert sum(jaccard(a.body, b.body) for a, b in pairs) / len(pairs) < 0.2

def test_no_overlap_knobs(templates):
    pool = SyntheticPool(templates, SynthConfig(num_skills=500, near_dup_rate=0, same_name_rate=0))
    assert {pool.kind(i) for i in range(500)} == {"variant"}


def test_bad_config():
    with pytest.raises(ValueError, match="num_skills"):
        SynthConfig(num_skills=0)
    with pytest.raises(ValueError, match="must not exceed 1"):
        SynthConfig(near_dup_rate=0.6, same_name_rate=0.6)
