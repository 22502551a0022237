import numpy as np
import pytest
import torch

from skillrouter.corpus.skill import Skill
from skillrouter.models.encoder import DEFAULT_TASK, Encoder, EncoderSpec, last_token_pool, mean_pool

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
