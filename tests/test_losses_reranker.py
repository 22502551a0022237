import math

import pytest
import torch

from skillrouter.corpus.skill import Skill
from skillrouter.models.reranker import PREFIX, SUFFIX, Reranker, RerankerSpec
from skillrouter.training.losses import InfoNCELoss, ListwiseCELoss, PointwiseBCELoss


def unit(*rows):
    t = torch.tensor(rows, dtype=torch.float32)
    return t / t.norm(dim=-1, keepdim=True)


def test_infonce_by_hand():
    q = unit([1, 0], [0, 1])
    p = unit([1, 0], [1, 1])
    # candidates: both positives; scores q0: [1, .7071], q1: [0, .7071]; tau = 0.5
    s = 1 / math.sqrt(2)
    expected = (-math.log(math.exp(2) / (math.exp(2) + math.exp(2 * s)))
                - math.log(math.exp(2 * s) / (1 + math.exp(2 * s)))) / 2
    assert InfoNCELoss(0.5)(q, p).item() == pytest.approx(expected, rel=1e-6)


def test_infonce_with_hard_negatives_and_masking():
    q = unit([1, 0])
    p = unit([1, 0])
    negs = unit([0, 1], [1, 0.01])[None]  # the second is nearly identical to the positive
    scores = torch.tensor([1.0, 0.0, float(unit([1, 0.01])[0, 0])])
    expected = -torch.log_softmax(scores / 0.05, 0)[0].item()
    assert InfoNCELoss()(q, p, negs).item() == pytest.approx(expected, rel=1e-5)
    # masking drops negatives scoring above positive + margin; a margin of -0.01 catches the near-duplicate only
    masked = InfoNCELoss(mask_margin=-0.01)(q, p, negs).item()
    assert masked == pytest.approx(-torch.log_softmax(scores[:2] / 0.05, 0)[0].item(), rel=1e-5)
    assert InfoNCELoss.__init__.__defaults__ == (0.05, None)  # the paper's temperature


def test_listwise_and_pointwise_by_hand():
    scores = torch.tensor([[2.0, 0.0, -1.0]])
    z = math.exp(2) + 1 + math.exp(-1)
    assert ListwiseCELoss()(scores).item() == pytest.approx(-math.log(math.exp(2) / z), rel=1e-6)
    assert ListwiseCELoss(0.5)(scores).item() == pytest.approx(
        -math.log(math.exp(4) / (math.exp(4) + 1 + math.exp(-2))), rel=1e-6)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    bce = -(math.log(sig(2)) + math.log(1 - sig(0)) + math.log(1 - sig(-1))) / 3
    assert PointwiseBCELoss()(scores).item() == pytest.approx(bce, rel=1e-6)


SKILLS = [Skill("a", "pdf-tools", "Merge PDFs.", "Use qpdf to merge files."),
          Skill("b", "k8s-rollout", "Roll out safely.", "kubectl rollout status " * 50)]


@pytest.fixture(scope="module")
def qwen_reranker(tiny_qwen3_reranker):
    return Reranker.load(RerankerSpec(model=str(tiny_qwen3_reranker), max_length=96), device="cpu")


def test_qwen3_reranker_format(qwen_reranker):
    text = qwen_reranker.format_pair("merge my pdfs", SKILLS[0])
    assert text.startswith(PREFIX) and text.endswith(SUFFIX)
    assert "<Query>: merge my pdfs\n<Document>: pdf-tools | Merge PDFs. | Use qpdf to merge files." in text
    batch = qwen_reranker.tokenize([qwen_reranker.format_pair("q", s) for s in SKILLS])
    suffix = qwen_reranker.tokenizer(SUFFIX, add_special_tokens=False)["input_ids"]
    for row, mask in zip(batch["input_ids"], batch["attention_mask"]):
        real = row[: int(mask.sum())].tolist()
        assert real[-len(suffix):] == suffix and len(real) <= 96  # long documents lose body, never the suffix


def test_two_row_head_equals_the_full_vocabulary_difference(qwen_reranker):
    batch = qwen_reranker.tokenize([qwen_reranker.format_pair("merge my pdfs", s) for s in SKILLS])
    with torch.no_grad():
        ours = qwen_reranker.forward(batch)
        logits = qwen_reranker.model(input_ids=batch["input_ids"]).logits
    last = batch["attention_mask"].sum(dim=1) - 1
    yes, no = qwen_reranker.yes_no.tolist()
    full = logits[torch.arange(2), last]
    torch.testing.assert_close(ours, (full[:, yes] - full[:, no]).float(), atol=1e-5, rtol=1e-5)
    alone = torch.cat([qwen_reranker.score("merge my pdfs", [s]) for s in SKILLS])
    torch.testing.assert_close(qwen_reranker.score("merge my pdfs", SKILLS), alone, atol=1e-5, rtol=1e-5)
    # several requests in one pass (a serving replica's batch) score as they would alone
    batched = qwen_reranker.score_batch([("merge my pdfs", SKILLS), ("q", SKILLS[1:]), ("none", [])])
    assert [len(t) for t in batched] == [2, 1, 0]
    torch.testing.assert_close(batched[0], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[1], qwen_reranker.score("q", SKILLS[1:]), atol=1e-5, rtol=1e-5)


def test_minilm_cross_encoder_scores_pairs():
    rr = Reranker.load(RerankerSpec(model="minilm", max_length=64), device="cpu")
    assert not rr.decoder and rr.format_pair("q", SKILLS[0]) == ("q", SKILLS[0].text())
    scores = rr.score("merge my pdfs", SKILLS)
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_the_specs_dtype_is_the_one_it_scores_in(tmp_path):
    """`reranker.inference_dtype` reaches the model through the spec: bf16 scores stay close to fp32's, come back
    as fp32 tensors, and an explicit dtype argument still wins."""
    from skillrouter.config import PipelineConfig
    from skillrouter.models.loading import device_and_dtype, inference_dtype
    from skillrouter.retrieval.systems import reranker_spec

    torch.manual_seed(0)
    fp32 = Reranker.load(RerankerSpec("minilm", 64), device="cpu")
    fp32.model.save_pretrained(tmp_path / "rr")
    fp32.tokenizer.save_pretrained(tmp_path / "rr")
    bf16 = Reranker.load(RerankerSpec(str(tmp_path / "rr"), 64, dtype="bfloat16"), device="cpu")
    assert bf16.model.dtype == torch.bfloat16
    ours, theirs = bf16.score("merge my pdfs", SKILLS), fp32.score("merge my pdfs", SKILLS)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, atol=0.05, rtol=0.02)
    forced = Reranker.load(RerankerSpec(str(tmp_path / "rr"), 64, dtype="bfloat16"), device="cpu", dtype=torch.float32)
    assert forced.model.dtype == torch.float32
    assert device_and_dtype("cpu", "auto")[1] == inference_dtype("cpu")
    assert inference_dtype("cuda") == torch.bfloat16 and device_and_dtype("cpu", None)[1] == torch.float32
    config = PipelineConfig.model_validate({"reranker": {"inference_dtype": "float32"}})
    assert reranker_spec(config, str(tmp_path / "rr")).dtype == "float32"


def test_packed_scoring_equals_the_padded_reference(tiny_qwen3_reranker):
    """Serving's padding-free path: several requests' pairs packed into token-budgeted rows (fp32, CPU) score
    exactly what padded, length-sorted batches score, windows included, in the callers' order."""
    from skillrouter.corpus.ingest import read_skills

    skills = read_skills("bundled")[:12]
    items = [("my postgres query is slow", skills[:5]), ("write release notes", skills[5:6]),
             ("a flaky test in CI " * 20, skills[6:12])]
    spec = RerankerSpec(model=str(tiny_qwen3_reranker), max_length=96, windows=2)
    padded = Reranker.load(spec, device="cpu")
    packed = Reranker.load(spec, device="cpu", packed=True, max_batch_tokens=200)
    assert packed.packed and not padded.packed
    pairs = [p for q, ss in items for s in ss for p in packed.pair_windows(q, s)]
    lengths = [len(x) for x in packed.pair_ids(pairs)]
    forwards = packed.forward_batches(lengths, batch_size=16)
    assert len(forwards) > 1 and sorted(i for f in forwards for i in f) == list(range(len(pairs)))
    assert all(sum(lengths[i] for i in f) <= 200 for f in forwards)  # the token budget, not a pair count
    for want, got in zip(padded.score_batch(items), packed.score_batch(items), strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # a budget below one pair still scores it, alone in its row
    alone = Reranker(packed.model, packed.tokenizer, spec, max_batch_tokens=8)
    assert all(len(f) == 1 for f in alone.forward_batches(lengths, batch_size=16))
    torch.testing.assert_close(alone.score_batch(items[:1])[0], padded.score_batch(items[:1])[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("windows", [1, 2])
def test_a_request_longer_than_the_pair_is_cut_not_refused(windows):
    """A BERT-style pair cuts the document first (as 'only_second' did) and the query only when it is over half
    the room: a long request gets scores, where the tokenizer raised before (a 500 in serving)."""
    import numpy as np

    from skillrouter.corpus.ingest import read_skills

    skills = read_skills("bundled")[:3]
    reranker = Reranker.load(RerankerSpec("minilm", max_length=128, windows=windows), device="cpu")
    assert np.isfinite(reranker.score("my build is slow " * 100, skills).numpy()).all()
    short = ("merge these pdfs", skills[0].text())
    want = reranker.tokenizer(*short, truncation="only_second", max_length=128)["input_ids"]
    assert reranker.pair_ids([short])[0] == want  # ordinary requests: the same tokens as before
