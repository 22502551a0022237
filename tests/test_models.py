import numpy as np
import pytest
import torch

from skillrouter.corpus.skill import Skill
from skillrouter.models import packing
from skillrouter.models.encoder import DEFAULT_TASK, Encoder, EncoderSpec, last_token_pool, mean_pool
from skillrouter.models.packing import pack, pack_batches

TEXTS = ["merge pdf files", "a much longer request about kubernetes deployments and safe rollouts", "x"]


@pytest.fixture(scope="module")
def qwen(tiny_qwen3):
    return Encoder.load(EncoderSpec(model=str(tiny_qwen3), max_length=64), device="cpu")


@pytest.fixture(scope="module")
def minilm():
    return Encoder.load(EncoderSpec(model="minilm", max_length=128), device="cpu")


def test_qwen3_query_format_and_cap(qwen):
    assert qwen.decoder
    q = qwen.format_query("y" * 2000)
    assert q == f"Instruct: {DEFAULT_TASK}\nQuery:" + "y" * 1500
    skill = Skill("i", "pdf-tools", "Merge PDFs.", "Use qpdf.")
    assert qwen.format_skill(skill) == "pdf-tools | Merge PDFs. | Use qpdf."  # no instruction on documents


def test_qwen3_right_padding_equals_the_masked_left_padded_reference(qwen):
    ours = qwen.encode(TEXTS, batch_size=3)
    tok = qwen.tokenizer
    tok.padding_side = "left"
    try:
        batch = tok(TEXTS, padding=True, return_tensors="pt")
    finally:
        tok.padding_side = "right"
    with torch.no_grad():
        hidden = qwen.model(**batch).last_hidden_state[:, -1]
    reference = torch.nn.functional.normalize(hidden.float(), dim=-1).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    alone = np.stack([qwen.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(ours, alone, atol=1e-5)  # batching changes nothing
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_minilm_mean_pooling_matches_a_manual_computation(minilm):
    assert not minilm.decoder and minilm.dim == 384
    assert minilm.format_query("merge pdf files") == "merge pdf files"  # no instruction for BERT-style models
    ours = minilm.encode(TEXTS, batch_size=2)
    for text, row in zip(TEXTS, ours):
        batch = minilm.tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            hidden = minilm.model(**batch).last_hidden_state[0]
        manual = hidden.mean(dim=0)
        np.testing.assert_allclose(row, (manual / manual.norm()).numpy(), atol=1e-5)


def test_minilm_is_a_real_pretrained_encoder(minilm):
    q = minilm.encode_queries(["merge several PDF files into one document"])
    docs = minilm.encode(["Combine PDF documents into a single file", "Bake a chocolate cake"])
    assert (q @ docs.T)[0, 0] > (q @ docs.T)[0, 1] + 0.3


def test_pooling_helpers():
    hidden = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert torch.equal(last_token_pool(hidden, right), torch.stack([hidden[0, 1], hidden[1, 2]]))
    assert torch.equal(last_token_pool(hidden, left), hidden[:, -1])
    assert torch.allclose(mean_pool(hidden, right)[0], hidden[0, :2].mean(dim=0))


def test_token_budget_batches(qwen):
    batches = qwen.batches(TEXTS * 4, batch_size=64, max_batch_tokens=40)
    for idx, batch in batches:
        assert batch["input_ids"].numel() <= 40 or len(idx) == 1
    lengths = [int(b["attention_mask"].sum(dim=1).max()) for _, b in batches]
    assert lengths == sorted(lengths, reverse=True)  # longest first
    assert sorted(i for idx, _ in batches for i in idx) == list(range(12))


def test_packing_lays_sequences_end_to_end():
    packed = pack([[5, 6, 7], [8], [9, 10]])
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9, 10]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 0, 0, 1]]  # positions restart: rotary sees them unpacked
    assert packed.cu_seq_lens.tolist() == [0, 3, 4, 6] and packed.max_length == 3
    assert packed.last_positions.tolist() == [2, 3, 5]
    assert pack_batches([3, 4, 5, 9, 1], 8) == [[0, 1], [2], [3], [4]]  # a sequence over budget goes alone
    assert pack_batches([3, 4], None) == [[0, 1]] and pack_batches([], 8) == []
    with pytest.raises(ValueError, match="empty"):
        pack([[1], []])


def test_a_packed_row_equals_the_padded_batch(tiny_qwen3):
    """Each packed sequence attends only to itself (grouped KV heads included): pooled embeddings match the
    padded forward, and a padded call still works on a model with packing enabled."""
    encoder = Encoder.load(EncoderSpec(model=str(tiny_qwen3), max_length=64), device="cpu")
    assert encoder.model.config.num_key_value_heads < encoder.model.config.num_attention_heads
    ids = encoder.tokenize(TEXTS)
    with torch.no_grad():
        padded = encoder.forward(encoder.pad(ids))
        packing.enable(encoder.model)
        assert packing.is_enabled(encoder.model)
        torch.testing.assert_close(encoder.forward(pack(ids)), padded, atol=1e-5, rtol=0)
        torch.testing.assert_close(encoder.forward(encoder.pad(ids)), padded, atol=1e-6, rtol=0)


def test_packed_corpus_embedding_equals_the_padded_one(tiny_qwen3):
    """Index builds embed packed, token-budgeted rows: the same unit rows, in the input order, as padded
    length-sorted batches; a text over the budget goes alone."""
    spec = EncoderSpec(model=str(tiny_qwen3), max_length=64)
    padded = Encoder.load(spec, device="cpu")
    packed = Encoder.load(spec, device="cpu", packed=True)
    assert packed.packed and not padded.packed
    texts = TEXTS * 3 + ["one more, much longer text " * 10]
    want = padded.encode(texts, batch_size=4)
    np.testing.assert_allclose(packed.encode(texts, max_batch_tokens=30), want, atol=1e-5)
    np.testing.assert_allclose(packed.encode(texts, batch_size=2), want, atol=1e-5)


def test_the_models_own_length_limit_wins_over_a_profiles(caplog):
    # a Qwen3 profile's 2,048 tokens asked of the 512-position MiniLM: cut to 512 with a warning, no failed forward
    from skillrouter.models.reranker import Reranker, RerankerSpec

    long_skill = Skill("x/long", "long", "a long skill", "word " * 3000)
    encoder = Encoder.load(EncoderSpec("minilm", max_length=2048), device="cpu")
    assert encoder.spec.max_length == 512 and "over the model's 512 positions" in caplog.text
    assert encoder.encode_skills([long_skill]).shape == (1, encoder.dim)
    reranker = Reranker.load(RerankerSpec("minilm", max_length=4096), device="cpu")
    assert reranker.spec.max_length == 512 and np.isfinite(reranker.score("a request", [long_skill])).all()
