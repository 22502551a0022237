from collections import Counter

import numpy as np
import pytest

from skillrouter.corpus.ingest import read_skills
from skillrouter.corpus.skill import Skill
from skillrouter.querygen.prompts import QueryPrompt
from skillrouter.querygen.sampling import stratified_sample
from skillrouter.retrieval.categories import Categories, categories_for, infer_categories, spherical_kmeans


@pytest.fixture(scope="module")
def bundled():
    return read_skills("bundled")


def test_given_categories_are_used_as_they_are(bundled):
    cats = categories_for(bundled)
    assert cats.method == "given" and len(cats.counts()) == 24


def test_inferred_categories_recover_the_real_ones(bundled):
    """Drop the labels, cluster, and check that clusters mostly agree with the categories we wrote."""
    unlabelled = [Skill(s.id, s.name, s.description, s.body) for s in bundled]
    cats = categories_for(unlabelled, k=24, seed=0)
    assert cats.method == "kmeans(k=24, vectors=lsa-29, seed=0)" and len(cats.counts()) >= 16
    truth = {s.id: s.category for s in bundled}
    # purity: each cluster's most common true category, summed over clusters
    by_cluster: dict[str, Counter] = {}
    for sid, c in cats.by_skill.items():
        by_cluster.setdefault(c, Counter())[truth[sid]] += 1
    purity = sum(c.most_common(1)[0][1] for c in by_cluster.values()) / len(bundled)
    assert purity > 0.5
    assert infer_categories(unlabelled, k=24, seed=0).by_skill == cats.by_skill  # deterministic


def test_kmeans_separates_obvious_clusters():
    rng = np.random.default_rng(0)
    centers = np.eye(3)
    x = np.concatenate([c + 0.05 * rng.standard_normal((20, 3)) for c in centers])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = spherical_kmeans(x, 3, seed=1)
    assert all(len(set(labels[i * 20:(i + 1) * 20])) == 1 for i in range(3)) and len(set(labels)) == 3


def test_stratified_sample_is_proportional_with_one_per_category():
    skills = [Skill(f"{c}{i}", "n", "d", "b", c) for c, size in (("a", 60), ("b", 30), ("c", 9), ("d", 1))
              for i in range(size)]
    cats = Categories({s.id: s.category for s in skills}, "given")
    sample = stratified_sample(skills, cats, 20, seed=3)
    counts = Counter(s.category for s in sample)
    assert len(sample) == 20 and counts["d"] == 1 and counts["a"] >= 11 and counts["b"] >= 5 and counts["c"] >= 1
    assert sample == stratified_sample(skills, cats, 20, seed=3) != stratified_sample(skills, cats, 20, seed=4)
    assert stratified_sample(skills, cats, None) == skills and len(stratified_sample(skills, cats, 2)) == 2


def test_prompt_file_is_validated(tmp_path, repo_root):
    prompt = QueryPrompt.load(repo_root / "configs" / "prompts" / "query_generation.yaml", body_chars=50)
    msgs = prompt.messages(Skill("i", "pdf-tools", "Merge PDFs.", "x" * 500 + "TAIL"), 4)
    assert msgs[0]["role"] == "system" and "Write 4 different requests" in msgs[1]["content"]
    assert "TAIL" not in msgs[1]["content"] and '"pdf-tools"' in msgs[1]["content"]
    (tmp_path / "p.yaml").write_text("system: s\nuser: no placeholders\n")
    with pytest.raises(ValueError, match="must contain {n}"):
        QueryPrompt.load(tmp_path / "p.yaml")


def test_saved_categories_are_read_back_only_for_the_same_inputs(bundled, tmp_path, monkeypatch):
    """A resumed query generation reads the inferred categories back instead of clustering the corpus again; other
    inputs (corpus, k, seed) or a damaged file cluster anew."""
    import skillrouter.retrieval.categories as categories

    unlabelled = [Skill(s.id, s.name, s.description, s.body) for s in bundled]
    path = tmp_path / "categories.json"
    first = categories.saved_categories(unlabelled, 24, 0, path)
    assert first.by_skill == infer_categories(unlabelled, k=24, seed=0).by_skill

    calls = []
    real = categories.infer_categories
    monkeypatch.setattr(categories, "infer_categories", lambda *a, **kw: calls.append(a[1:]) or real(*a, **kw))
    again = categories.saved_categories(unlabelled, 24, 0, path)
    assert calls == [] and again.by_skill == first.by_skill and again.method == first.method
    assert categories.load_categories(path, unlabelled).by_skill == first.by_skill  # mining's reader still reads it

    categories.saved_categories(unlabelled, 24, 1, path)  # another seed
    categories.saved_categories(unlabelled[:-1], 24, 1, path)  # a skill fewer
    edited = [*unlabelled[:-1], Skill(unlabelled[-1].id, unlabelled[-1].name, "edited", unlabelled[-1].body)]
    categories.saved_categories(edited, 24, 1, path)  # a skill edited
    path.write_text('{"inputs": ')  # a file cut short
    categories.saved_categories(edited, 24, 1, path)
    path.write_text('{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}")  # nested past json's recursion limit
    categories.saved_categories(edited, 24, 1, path)
    assert calls == [(24, 1)] * 5
    assert categories.saved_categories(edited, 24, 1, path).by_skill  # and the rewritten file is read back
    assert len(calls) == 5
