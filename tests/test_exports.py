"""Exports other tools load: an encoder export is `SentenceTransformer(path)` giving skillrouter's own vectors on the
bundled corpus (MiniLM: mean pooling; Qwen3: last token and the query prompt), a BERT-style reranker export is
`CrossEncoder(path)` giving its scores, and each has a model card."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from skillrouter.corpus.ingest import read_skills
from skillrouter.models.encoder import Encoder, EncoderSpec
from skillrouter.models.exports import write_exports
from skillrouter.models.reranker import Reranker, RerankerSpec

pytest.importorskip("sentence_transformers")

SKILLS = read_skills("bundled")
QUERIES = ["merge these PDF files into one", "our CI takes 25 minutes, cache the dependencies",
           "why does my docker container exit at once", "tune a slow SQL query"]
INFO = {"base_model": "minilm", "max_length": 64, "steps": 10, "world_size": 1, "groups": 160,
        "skill_text": "full", "device": "CPU", "final": {"loss": 0.52}, "fingerprint": "ec70d611"}


def export(model, tokenizer, path, kind: str, base: str = "minilm"):
    """What a training job leaves: the weights and the tokenizer, then skillrouter's extra files."""
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    write_exports(path, {**INFO, "kind": kind, "base_model": base}, {"lr": 2e-5, "temperature": 0.05})
    return path


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("which", ["minilm", "qwen3"])
def test_encoder_export_loads_as_sentence_transformer(which, tmp_path, tiny_qwen3):
    from sentence_transformers import SentenceTransformer

    # 64 tokens: every text is cut, so truncation is compared too (and the test stays fast on 2 cores)
    source = Encoder.load(EncoderSpec(model="minilm" if which == "minilm" else str(tiny_qwen3), max_length=64))
    path = export(source.model, source.tokenizer, tmp_path / "encoder", "encoder", which)
    ours = Encoder.load(EncoderSpec(model=str(path), max_length=64))
    st = SentenceTransformer(str(path), device="cpu")
    assert st.max_seq_length == 64 and (st.prompts["query"] == "") == (which == "minilm")
    q_ours, q_st = ours.encode_queries(QUERIES), st.encode(QUERIES, prompt_name="query", convert_to_numpy=True)
    skills = SKILLS[::3]  # a third of the bundled corpus, every category: the test stays short on 2 busy cores
    s_ours = ours.encode_skills(skills)
    s_st = st.encode([s.text() for s in skills], batch_size=16, convert_to_numpy=True)
    assert cosines(q_ours, q_st).min() >= 0.9999 and cosines(s_ours, s_st).min() >= 0.9999
    assert np.allclose(np.linalg.norm(s_st, axis=1), 1, atol=1e-4)  # normalised: the similarity is a dot product
    # the same ranking of the corpus for each query
    assert (np.argsort(-(q_st @ s_st.T), axis=1)[:, :5] == np.argsort(-(q_ours @ s_ours.T), axis=1)[:, :5]).all()
    card = (path / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: \"sentence-transformers\"" in card
    assert ("sentence-transformers/all-MiniLM-L6-v2" in card) == (which == "minilm") and "| steps | 10 |" in card


def test_bert_reranker_export_loads_as_cross_encoder(tmp_path):
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    source = Reranker.load(RerankerSpec(model="minilm", max_length=512))  # a fresh head: random, seeded
    path = export(source.model, source.tokenizer, tmp_path / "reranker", "reranker")
    ours = Reranker.load(RerankerSpec(model=str(path), max_length=512))
    ce = CrossEncoder(str(path), device="cpu")
    # texts within the tokenizer's 512 tokens, which CrossEncoder truncates at (skillrouter at its max_length)
    skills = [replace(s, body=s.body[:300]) for s in SKILLS[:8]]
    for query in QUERIES[:2]:
        expected = ours.score(query, skills).numpy()
        got = ce.predict([(query, s.text()) for s in skills], convert_to_numpy=True)
        assert np.allclose(got, expected, atol=1e-4), (got, expected)  # logits, not their sigmoid
    config = json.loads((path / "config.json").read_text())
    assert config["sentence_transformers"]["activation_fn"] == "torch.nn.modules.linear.Identity"
    card = (path / "README.md").read_text()
    assert 'pipeline_tag: "text-ranking"' in card and "CrossEncoder(PATH)" in card
    assert "| temperature | 0.05 |" in card


def test_the_run_evaluation_goes_into_the_card_without_changing_the_models_version(tmp_path):
    """The report stage writes the run's table into each export's card; caches keyed by the weights' version
    (embeddings, reranker scores, evaluation provenance) must not see a new model for it."""
    from skillrouter.models.exports import set_card_evaluation, write_model_card
    from skillrouter.models.loading import model_version

    out = tmp_path / "encoder"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (out / "model.safetensors").write_bytes(b"weights")
    write_model_card(out, {"kind": "encoder", "base_model": "minilm", "steps": 32})
    version = model_version(str(out))
    assert set_card_evaluation(out, "| system | Hit@1 |\n| --- | ---: |\n| finetuned | 79.6 |")
    card = (out / "README.md").read_text()
    assert card.count("## Evaluation") == 1 and "| finetuned | 79.6 |" in card and "| steps | 32 |" in card
    assert "report.md` holds its evaluation" not in card  # the placeholder is replaced, not kept beside
    assert model_version(str(out)) == version
    (out / "model.safetensors").write_bytes(b"retrained")
    assert model_version(str(out)) != version  # the weights still count
    assert not set_card_evaluation(tmp_path / "no-card", "x")
