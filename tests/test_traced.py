"""The traced query encoder of one-shot commands (`skillrouter route`): the encoder's vectors without transformers."""

import json
import subprocess
import sys

import numpy as np
import pytest

from skillrouter.models import traced
from skillrouter.models.encoder import Encoder, EncoderSpec

SPEC = EncoderSpec("minilm", 128)
QUERIES = ["merge these PDF files into one", "cache the CI dependencies\nand shard the tests", "ü 日本語",
           "slow " * 300]


@pytest.fixture(scope="module")
def encoder():
    return Encoder.load(SPEC)


def test_the_first_full_load_saves_a_trace_that_gives_the_encoders_vectors(tmp_path, encoder, monkeypatch):
    monkeypatch.setattr(Encoder, "load", classmethod(lambda cls, spec, **kw: encoder))
    first = traced.QueryEncoders(SPEC, tmp_path / "q")
    assert first.traced is None and not (tmp_path / "q").exists()
    first.encode(["a skill's text"])  # a corpus the cache lacked: the encoder itself, and a trace for next time
    assert (tmp_path / "q" / traced.TRACE_FILE).is_file()

    again = traced.QueryEncoders(SPEC, tmp_path / "q")
    np.testing.assert_allclose(again.encode_queries(QUERIES), encoder.encode_queries(QUERIES), atol=1e-6)
    assert again._full is None and again.traced is not None  # a few queries never loaded the model


def test_a_batch_of_queries_goes_to_the_encoder(tmp_path, encoder, monkeypatch):
    assert traced.save_traced(encoder, tmp_path / "q")
    monkeypatch.setattr(Encoder, "load", classmethod(lambda cls, spec, **kw: encoder))
    queries = traced.QueryEncoders(SPEC, tmp_path / "q")
    batch = [f"query {i}" for i in range(traced.TRACED_MAX_QUERIES + 1)]
    np.testing.assert_array_equal(queries.encode_queries(batch), encoder.encode_queries(batch))
    assert queries._full is encoder


def test_a_trace_from_another_torch_is_not_used(tmp_path, encoder):
    assert traced.save_traced(encoder, tmp_path / "q")
    info = tmp_path / "q" / traced.INFO_FILE
    info.write_text(json.dumps({**json.loads(info.read_text()), "torch": "0.0"}))
    assert traced.load_traced(tmp_path / "q") is None


def test_a_traced_query_path_loads_without_transformers(tmp_path, encoder):
    assert traced.save_traced(encoder, tmp_path / "q")
    child = (f"import sys; from skillrouter.models.traced import load_traced; "
             f"v = load_traced({str(tmp_path / 'q')!r}).encode_queries(['merge PDF files']); "
             f"print(v.shape, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["(1,", "384)", "False"]


@pytest.fixture(scope="module")
def reranker():
    from skillrouter.models.reranker import Reranker, RerankerSpec

    return Reranker.load(RerankerSpec("minilm", 96))  # a fresh head: any weights do, the trace copies them


def test_a_traced_reranker_scores_as_the_reranker_and_spares_its_load(tmp_path, reranker, monkeypatch):
    from skillrouter.corpus.ingest import read_skills
    from skillrouter.models.reranker import Reranker

    assert traced.save_traced_pairs(reranker, tmp_path / "r")
    monkeypatch.setattr(Reranker, "load", classmethod(lambda cls, spec, **kw: reranker))
    rerankers = traced.Rerankers(reranker.spec, tmp_path / "r")
    one = rerankers.for_requests(1)
    assert isinstance(one, traced.TracedPairs) and one.spec == reranker.spec and rerankers._full is None
    items = [(q, read_skills("bundled")[:5]) for q in QUERIES[:3]]
    for mine, theirs in zip(one.score_batch(items), reranker.score_batch(items)):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), atol=1e-5)
    assert rerankers.for_requests(traced.TRACED_MAX_QUERIES + 1) is reranker  # a batch: the reranker itself
