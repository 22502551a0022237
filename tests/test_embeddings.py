"""Corpus embeddings of the dense systems (`route`, `eval`): through the cache, in process or on a Ray Data pool."""

import re

import numpy as np
import pytest

from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import read_skills
from skillrouter.models.encoder import Encoder, EncoderSpec
from skillrouter.retrieval import embeddings
from skillrouter.retrieval.router import Router


@pytest.fixture(scope="module")
def skills():
    return read_skills("bundled")[:24]


def _config(tmp_path) -> PipelineConfig:
    config = PipelineConfig()
    config.mining.cache_dir = str(tmp_path / "cache")
    config.mining.encoder_max_length, config.mining.encoder_windows = 128, 2
    return config


def test_a_dense_router_embeds_the_corpus_once_then_reads_the_cache(tmp_path, skills, monkeypatch):
    config = _config(tmp_path)
    first = Router(skills, "minilm", config).route("merge PDF files", 5)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1
    embedded = []
    plain = Encoder.encode

    def counting(self, texts, *args, **kwargs):
        embedded.append(len(texts))
        return plain(self, texts, *args, **kwargs)
    monkeypatch.setattr(Encoder, "encode", counting)
    again = Router(skills, "minilm", config).route("merge PDF files", 5)
    # the skills came from the cache and the query went through the trace the first router saved (models.traced)
    assert again == first and embedded == []
    # name | description is another text: its own cache entry, not the full text's rows
    Router(skills, "minilm-nd", config)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2 and embedded[-1] == len(skills)


def test_a_large_corpus_goes_to_the_ray_data_pool(tmp_path, skills, monkeypatch):
    config = _config(tmp_path)
    pooled = []

    def pool(batch, spec, **kwargs):
        pooled.append((len(batch), kwargs["actors"], kwargs["fields"]))
        return np.eye(len(batch), 384, dtype=np.float32)
    monkeypatch.setattr(embeddings, "IN_PROCESS_MAX", len(skills) - 1)
    monkeypatch.setattr(embeddings, "embed_pool", pool)
    Router(skills, "minilm-nd", config)
    assert pooled == [(len(skills), None, "name_description")]  # None: sized to the cluster's cores or GPUs


@pytest.mark.slow
def test_the_ray_data_pool_gives_the_in_process_rows(ray_cluster, skills):
    spec = EncoderSpec("minilm", 128, windows=2)  # windows are cut in the actors, not the driver
    arrived, lines = [], []
    pooled = embeddings.embed_pool(skills, spec, actors=None, batch_size=4, progress=False, log=lines.append,
                                   on_rows=lambda positions, rows: arrived.append((positions.copy(), rows.copy())))
    # where the actors' time went, and what they ran on (a GPU actor in fp32 would be 7x slow, unseen otherwise)
    assert re.search(r"actors spent [\d.]+ s cutting windows and [\d.]+ s in the encoder \(cpu float32\)$", lines[-1])
    encoder = Encoder.load(spec)
    np.testing.assert_allclose(pooled, encoder.encode_skills(skills, batch_size=16), atol=1e-5)
    # an index build writes each batch as it arrives: every skill once, with the rows it ends up with
    assert len(arrived) > 1 and sorted(np.concatenate([p for p, _ in arrived])) == list(range(len(skills)))
    for positions, rows in arrived:
        np.testing.assert_array_equal(rows, pooled[positions])
    nd = embeddings.embed_pool(skills, spec, fields="name_description", actors=2, batch_size=4, progress=False)
    np.testing.assert_allclose(nd, encoder.encode_skills(skills, 16, fields="name_description"), atol=1e-5)
    # as on a GPU cluster: CPU actors cut and tokenize each block, the encoder actor only runs forwards
    lines.clear()
    split = embeddings.embed_pool(skills, spec, actors=1, batch_size=4, progress=False, prepare_actors=1,
                                  log=lines.append)
    np.testing.assert_allclose(split, pooled, atol=1e-5)
    assert "corpus embeddings: 1 CPU actor(s) cut windows and tokenize for the encoder" in lines



def test_one_cache_entry_serves_a_corpus_in_any_order(tmp_path, skills):
    """The evaluation ranks its pool in a seeded random order: the rows come back in the caller's order, from the
    entry the corpus's own order filled."""
    spec = EncoderSpec("minilm", 128)
    embed, calls, _ = _recording_embed(spec)
    ordered = embeddings.embed_skills(skills, spec, tmp_path, embed=embed, log=lambda _: None)
    shuffled = [skills[i] for i in np.random.default_rng(0).permutation(len(skills))]
    again = embeddings.embed_skills(shuffled, spec, tmp_path, embed=embed, log=lambda _: None)
    assert len(calls) == 1 and len(list(tmp_path.rglob("*.npy"))) == 1  # embedded once
    rows = {s.id: row for s, row in zip(skills, ordered)}
    assert all(np.array_equal(rows[s.id], row) for s, row in zip(shuffled, again))


def _recording_embed(spec: EncoderSpec):
    """An in-process `embed` for `embed_skills` that records the texts of each call; its encoder."""
    encoder = Encoder.load(spec, device="cpu")
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return encoder.encode(texts)
    return embed, calls, encoder


@pytest.mark.slow
def test_a_changed_corpus_embeds_only_the_skills_no_earlier_entry_holds(ray_cluster, tmp_path, skills):
    """A registry update or an evaluation's look-alikes: rows of unchanged texts come from earlier entries, under
    any id, and only new or edited texts reach the encoder, in process or on the Ray Data pool."""
    from dataclasses import replace

    spec = EncoderSpec("minilm", 128)
    embed, embedded, encoder = _recording_embed(spec)
    quiet = {"log": lambda _: None}
    first = embeddings.embed_skills(skills[:20], spec, tmp_path, embed=embed, **quiet)
    edited = replace(skills[3], body=skills[3].body + "\nAlso check the exit code.")
    copy = replace(skills[5], id="mirror/" + skills[5].id)  # the same text under another id
    changed = [*skills[:3], edited, *skills[4:20], *skills[20:22], copy]
    arrived = []
    rows = embeddings.embed_skills(changed, spec, tmp_path, embed=embed,
                                   on_rows=lambda pos, r: arrived.append((pos.copy(), r.copy())), **quiet)
    # one encoder call for the edited skill and the two new ones; the copy and the 19 unchanged skills reused
    assert len(embedded) == 2 and sorted(embedded[1]) == sorted(
        t for s in (edited, *skills[20:22]) for t in embeddings.skill_texts([s], spec)[0])
    by_id = {s.id: row for s, row in zip(skills[:20], first)}
    for position, skill in enumerate(changed):
        if skill is not edited and skill.id in by_id:
            np.testing.assert_array_equal(rows[position], by_id[skill.id])
    np.testing.assert_array_equal(rows[-1], by_id[skills[5].id])
    np.testing.assert_allclose(rows, encoder.encode_skills(changed), atol=1e-5)
    # an index build is handed every skill once, reused rows first
    assert sorted(np.concatenate([p for p, _ in arrived]).tolist()) == list(range(len(changed)))
    for positions, part in arrived:
        np.testing.assert_array_equal(part, rows[positions])
    # the Ray Data pool embeds only the two new skills, and its rows reach `on_rows` at their caller's positions
    pooled, arrived = [*skills[22:24], *reversed(changed)], []
    rows = embeddings.embed_skills(pooled, spec, tmp_path, actors=1, batch_size=4, use_gpu=False,
                                   on_rows=lambda pos, r: arrived.append((pos.copy(), r.copy())), **quiet)
    assert len(embedded) == 2 and [len(p) for p, _ in arrived] == [len(changed), 2]
    assert sorted(arrived[1][0].tolist()) == [0, 1]
    np.testing.assert_allclose(rows, encoder.encode_skills(pooled), atol=1e-5)
    for positions, part in arrived:
        np.testing.assert_array_equal(part, rows[positions])
    # name | description is another text: the full text's rows are not its rows
    embeddings.embed_skills(skills[:20], spec, tmp_path, fields="name_description", embed=embed, **quiet)
    assert len(embedded[-1]) == 20
    # an entry whose keys and rows disagree (cut short, or written by hand) is skipped, not trusted
    for keys in tmp_path.rglob("*.keys"):
        with open(keys, "wb") as f:
            np.save(f, np.zeros(3, dtype="S16"))
    embeddings.embed_skills(skills[:2] + skills[22:24], spec, tmp_path, embed=embed, **quiet)
    assert len(embedded[-1]) == 4


def test_a_pool_block_travels_compressed_and_unpacks_to_the_same_skills(skills):
    """`pack_block`: the Ray Data pool's blocks are zstd-compressed Arrow tables of the skills' columns."""
    from skillrouter.corpus.skill import Skill

    odd = [Skill("x/1", "caf\u00e9", "\u2192 arrows", "\U0001F600 " * 500, None),
           Skill("x/2", "n", "", "\u4e2d\u6587" * 300, "cat")]
    pool = list(skills) + odd
    rows = np.array([len(pool) - 1, 0, len(pool) - 2, 5])
    payload = embeddings.pack_block(pool, rows)
    assert isinstance(payload, bytes) and len(payload) < sum(len(pool[i].body.encode()) for i in rows)
    table = embeddings.unpack_block(payload)
    assert table["idx"].to_pylist() == rows.tolist()
    columns = embeddings.SKILL_COLUMNS
    assert list(zip(*(table[c].to_pylist() for c in columns))) == [tuple(getattr(pool[i], c) for c in columns)
                                                                  for i in rows]
    assert table["category"][2].as_py() is None
