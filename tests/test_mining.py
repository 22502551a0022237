from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skillrouter.config import MiningConfig, load_config
from skillrouter.corpus.ingest import read_skills
from skillrouter.filtering.filter import FalseNegativeFilter
from skillrouter.filtering.jaccard import NearDuplicates, trigram_shingles
from skillrouter.mining.job import GROUP_SCHEMA
from skillrouter.mining.negatives import BM25, CATEGORY, DENSE, RANDOM, MiningIndex, mine_batch
from skillrouter.retrieval.bm25 import BM25Index


def make_index(names=None, categories=None, n=30, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    texts = [f"skill {i} " + " ".join(f"topic{i}x{j}" for j in range(6)) for i in range(n)]
    names = names or [f"name-{i}" for i in range(n)]
    cats = np.array(categories if categories is not None else [i % 3 for i in range(n)])
    near = NearDuplicates([trigram_shingles(t) for t in texts])
    index = MiningIndex([f"s{i}" for i in range(n)], cats, emb, BM25Index.build(texts),
                        FalseNegativeFilter(names, near, emb, 0.92))
    return index, emb, texts


def query_for(emb, i, rng, noise=0.3):
    q = emb[i] + noise * rng.standard_normal(emb.shape[1]).astype(np.float32)
    return q / np.linalg.norm(q)


def mine(index, emb, positives, cfg=None, queries=None, seed=1):
    cfg = cfg or MiningConfig()
    rng = np.random.default_rng(seed)
    qe = np.stack([query_for(emb, p, rng) for p in positives])
    queries = queries or [f"topic{p}x1 topic{p}x2" for p in positives]
    return mine_batch(index, [f"q{k}" for k in range(len(positives))], queries, [f"s{p}" for p in positives], qe,
                      cfg)


def test_ten_negatives_by_source_and_rules():
    index, emb, _ = make_index()
    groups, stats = mine(index, emb, [0, 5, 11])
    for g, pos in zip(groups, [0, 5, 11]):
        ids = [n["skill_id"] for n in g]
        assert Counter(n["source"] for n in g) == {DENSE: 4, BM25: 3, CATEGORY: 2, RANDOM: 1}
        assert f"s{pos}" not in ids and len(set(ids)) == 10
        cat = index.categories[pos]
        assert all(index.categories[int(n["skill_id"][1:])] == cat for n in g if n["source"] == CATEGORY)
        assert all(index.categories[int(n["skill_id"][1:])] != cat for n in g if n["source"] == RANDOM)
        dense = [n["score"] for n in g if n["source"] == DENSE]
        assert dense == sorted(dense, reverse=True)
    assert stats["queries"] == 3 and stats["negatives"] == 30 and stats["backfilled"] == 0


def test_dense_are_the_nearest_and_bm25_the_best_matches():
    index, emb, _ = make_index()
    rng = np.random.default_rng(1)
    qe = query_for(emb, 4, rng)
    groups, _ = mine_batch(index, ["q"], ["topic7x1 topic7x3 topic9x2"], ["s4"], qe[None], MiningConfig())
    scores = emb @ qe
    order = [i for i in np.argsort(-scores) if i != 4]
    assert [n["skill_id"] for n in groups[0] if n["source"] == DENSE] == [f"s{i}" for i in order[:4]]
    taken = {n["skill_id"] for n in groups[0] if n["source"] == DENSE} | {"s4"}
    ranked = [f"s{i}" for i in index.bm25.search(["topic7x1 topic7x3 topic9x2"], 30)[0][0]]
    bm25 = [n["skill_id"] for n in groups[0] if n["source"] == BM25]
    assert bm25 == [sid for sid in ranked if sid not in taken][:3] and "s7" in taken | set(bm25)


def test_filtered_candidates_are_replaced_from_the_same_source():
    index, emb, _ = make_index()
    rng = np.random.default_rng(1)
    qe = query_for(emb, 4, rng)
    nearest = [int(i) for i in np.argsort(-(emb @ qe)) if i != 4][:2]
    names = [f"name-{i}" for i in range(30)]
    names[nearest[0]] = "NAME_4"  # same normalised name as the positive: a false negative
    filtered, _, _ = make_index(names=names)
    groups, stats = mine_batch(filtered, ["q"], ["topic4x1"], ["s4"], qe[None], MiningConfig())
    dense = [n["skill_id"] for n in groups[0] if n["source"] == DENSE]
    assert f"s{nearest[0]}" not in dense and f"s{nearest[1]}" == dense[0] and len(dense) == 4
    assert stats["removed_same_name"] == 1 and stats["backfilled"] == 0


def test_without_the_false_negative_filter_flagged_candidates_stay_and_are_counted():
    """`mining.filter_false_negatives=false`: the same draws, but a flagged candidate is kept where the filter would
    have replaced it by the source's next one; the counters say how many were kept, by layer."""
    index, emb, _ = make_index()
    rng = np.random.default_rng(1)
    qe = query_for(emb, 4, rng)
    nearest = [int(i) for i in np.argsort(-(emb @ qe)) if i != 4][:5]
    names = [f"name-{i}" for i in range(30)]
    names[nearest[0]] = names[nearest[2]] = "NAME_4"  # two look-alikes of the positive among its nearest
    index, _, _ = make_index(names=names)
    filtered, on = mine_batch(index, ["q"], ["topic4x1"], ["s4"], qe[None], MiningConfig())
    unfiltered, off = mine_batch(index, ["q"], ["topic4x1"], ["s4"], qe[None],
                                 MiningConfig(filter_false_negatives=False))
    dense_on = [n["skill_id"] for n in filtered[0] if n["source"] == DENSE]
    dense_off = [n["skill_id"] for n in unfiltered[0] if n["source"] == DENSE]
    assert dense_off == [f"s{i}" for i in nearest[:4]]  # the four nearest, look-alikes included
    assert dense_on == [f"s{i}" for i in nearest if i not in (nearest[0], nearest[2])] + dense_on[3:]
    assert on["removed_same_name"] == 2 and on["kept_same_name"] == 0
    assert off["removed_same_name"] == 0 and off["kept_same_name"] == 2
    flagged = [n for n in unfiltered[0] if index.filter.reason(4, int(n["skill_id"][1:]))]
    assert len(flagged) == off["kept_same_name"] + off["kept_body_jaccard"] + off["kept_embedding_cosine"]
    assert len(unfiltered[0]) == len(filtered[0]) == 10 and off["examined"] == 10 and on["examined"] == 12


def test_backfill_when_a_category_is_too_small():
    cats = [0] * 28 + [1, 1]  # the positive's category has one other member
    index, emb, _ = make_index(categories=cats)
    groups, stats = mine(index, emb, [28])
    sources = Counter(n["source"] for n in groups[0])
    # the one category-mate is taken by dense or by category; either way the category's gap is back-filled
    assert len(groups[0]) == 10 and sources[CATEGORY] <= 1 and stats["backfilled"] == 2 - sources[CATEGORY]
    assert sources[DENSE] == 4 + stats["backfilled"] and stats["short_groups"] == 0


def test_short_group_when_the_corpus_is_tiny():
    index, emb, _ = make_index(n=6, categories=[0, 0, 0, 1, 1, 2])
    groups, stats = mine(index, emb, [0])
    assert len(groups[0]) == 5 and stats["short_groups"] == 1  # every other skill, once


def test_deterministic_and_independent_of_batching():
    index, emb, _ = make_index()
    one, _ = mine(index, emb, [0, 5, 11, 17])
    again, _ = mine(index, emb, [0, 5, 11, 17])
    assert one == again
    rng = np.random.default_rng(1)
    qe = np.stack([query_for(emb, p, rng) for p in [0, 5, 11, 17]])
    split = [mine_batch(index, [f"q{k}"], [f"topic{p}x1 topic{p}x2"], [f"s{p}"], qe[k:k + 1], MiningConfig())[0][0]
             for k, p in enumerate([0, 5, 11, 17])]
    # the same negatives from the same sources; a score may differ in its last float32 digits, since BLAS sums a
    # batch's matrix product in another order than a single row's (seen: 6th decimal, numpy 2.4 + OpenBLAS 0.3.31)
    assert [[(n["skill_id"], n["source"]) for n in g] for g in split] == \
        [[(n["skill_id"], n["source"]) for n in g] for g in one]
    assert np.allclose([n["score"] for g in split for n in g], [n["score"] for g in one for n in g], atol=1e-5)
    other, _ = mine(index, emb, [0, 5, 11, 17], cfg=MiningConfig(seed=9))
    assert [n for g in other for n in g if n["source"] in (CATEGORY, RANDOM)] != \
        [n for g in one for n in g if n["source"] in (CATEGORY, RANDOM)]


def test_counts_follow_the_config():
    index, emb, _ = make_index()
    cfg = MiningConfig(dense_negatives=2, bm25_negatives=0, category_negatives=3, random_negatives=2)
    groups, _ = mine(index, emb, [3], cfg=cfg)
    assert Counter(n["source"] for n in groups[0]) == {DENSE: 2, CATEGORY: 3, RANDOM: 2}


@pytest.fixture(scope="module")
def bundled_queries(tmp_path_factory, ray_cluster, repo_root):
    from skillrouter.querygen.job import run_query_generation

    out = tmp_path_factory.mktemp("queries")
    cfg = load_config(repo_root / "configs" / "minilm.yaml", ["querygen.generator=offline", "querygen.num_skills=40"])
    run_query_generation(read_skills("bundled"), cfg, out, log=lambda *_: None)
    return pq.read_table(out / "queries.parquet")


def test_end_to_end_on_the_bundled_corpus(ray_cluster, repo_root, tmp_path, bundled_queries):
    from skillrouter.mining.job import GROUPS_FILE, run_mining

    skills = read_skills("bundled")
    cfg = load_config(repo_root / "configs" / "minilm.yaml", [f"mining.cache_dir={tmp_path / 'cache'}"])
    stats = run_mining(skills, bundled_queries, cfg, tmp_path / "mined", log=lambda *_: None)
    groups = pq.read_table(tmp_path / "mined" / GROUPS_FILE).to_pylist()
    assert len(groups) == bundled_queries.num_rows == stats["queries"]
    assert all(len(g["negatives"]) == 10 for g in groups)
    assert all(g["positive_id"] not in {n["skill_id"] for n in g["negatives"]} for g in groups)
    assert stats["by_source"] == {"dense": 4 * len(groups), "bm25": 3 * len(groups), "category": 2 * len(groups),
                                  "random": len(groups)}
    # the bundled corpus publishes skills under shared names: the name layer has work to do
    assert stats["removed_by_layer"]["same_name"] > 0 and 0 < stats["removed_share"] < 0.2
    sample = (tmp_path / "mined" / "mining_sample.md").read_text()
    assert sample.count("**positive**") == 12 and " dense " in sample
    assert list((tmp_path / "cache").rglob("*.npy"))  # corpus embeddings cached for training and indexing
    again = run_mining(skills, bundled_queries, cfg, tmp_path / "again", log=lambda *_: None)
    assert again["timings"]["corpus_embedding_s"] < stats["timings"]["corpus_embedding_s"]
    assert pq.read_table(tmp_path / "again" / GROUPS_FILE).to_pylist() == groups  # deterministic


def test_reranker_negatives_from_the_first_stage_head(repo_root, tmp_path, bundled_queries):
    """`reranker.negatives_from: bm25`: each group's negatives are BM25's top routing.retrieve_k for its query,
    never the positive nor a skill the false-negative filter flags, in a seeded order; a group whose head holds
    nothing else keeps its mined negatives."""
    from skillrouter.filtering.names import normalise_name
    from skillrouter.mining.rerank_negatives import FIRST_STAGE, first_stage_negatives
    from skillrouter.retrieval.systems import get_system

    skills = read_skills("bundled")
    by_id = {s.id: s for s in skills}
    rows = bundled_queries.slice(0, 40).to_pylist()
    spare = next(s.id for s in skills if s.id not in {r["skill_id"] for r in rows})
    mined = [{"skill_id": spare, "source": "random", "score": 0.0}]
    groups = pa.table({"query_id": [r["query_id"] for r in rows], "query": [r["query"] for r in rows],
                       "positive_id": [r["skill_id"] for r in rows], "negatives": [mined] * len(rows)},
                      schema=GROUP_SCHEMA)
    # one window per skill: the filter's cosine layer needs the mining encoder's rows, not their best quality
    cfg = load_config(repo_root / "configs" / "minilm.yaml", [f"mining.cache_dir={tmp_path / 'cache'}",
                                                              "mining.encoder_windows=1"])
    lines = []
    out = first_stage_negatives(groups, skills, cfg, "bm25", lines.append).to_pylist()
    heads, _ = get_system("bm25").build(skills, cfg).search(groups.column("query").to_pylist(), 20)
    for group, head in zip(out, heads):
        ids = [n["skill_id"] for n in group["negatives"]]
        positive = by_id[group["positive_id"]]
        assert group["positive_id"] not in ids and len(ids) == len(set(ids)) > 0
        assert set(ids) <= {skills[i].id for i in head}
        assert all(n["source"] == FIRST_STAGE for n in group["negatives"])
        assert all(normalise_name(by_id[i].name) != normalise_name(positive.name) for i in ids)
    # the filter had work: the bundled corpus shares names across categories
    assert "same_name" in lines[-1] and "top 20 for 40 training queries" in lines[-1]
    # seeded per query: the same run again is identical, another seed orders some head otherwise
    assert first_stage_negatives(groups, skills, cfg, "bm25", lines.append).to_pylist() == out
    cfg.seed += 1
    other = first_stage_negatives(groups, skills, cfg, "bm25", lines.append).to_pylist()
    assert [sorted(n["skill_id"] for n in g["negatives"]) for g in other] == \
        [sorted(n["skill_id"] for n in g["negatives"]) for g in out]
    assert [g["negatives"] for g in other] != [g["negatives"] for g in out]
    # a head of one skill: the positive itself for most of these queries, which then keep their mined negatives
    cfg.routing.retrieve_k = 1
    one = first_stage_negatives(groups, skills, cfg, "bm25", lines.append).to_pylist()
    kept = [g for g in one if g["negatives"] == mined]
    assert kept and f"{len(kept)} kept their mined negatives" in lines[-1]
    assert all(len(g["negatives"]) == 1 for g in one)


def test_reranker_negatives_from_an_unknown_system_is_named(repo_root):
    from skillrouter.training.job import training_data

    cfg = load_config(repo_root / "configs" / "minilm.yaml", ["reranker.negatives_from=bm26"])
    groups = pa.table({"query_id": ["q"], "query": ["x"], "positive_id": ["a"],
                       "negatives": [[{"skill_id": "b", "source": "random", "score": 0.0}]]}, schema=GROUP_SCHEMA)
    cfg.routing.validation_share = 0.0
    with pytest.raises(ValueError, match="reranker.negatives_from: unknown system 'bm26'"):
        training_data(groups, [], cfg, "reranker")
    assert training_data(groups, [], cfg, "encoder").to_pylist() == groups.to_pylist()  # the encoder reads mined
