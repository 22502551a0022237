"""Long skills read in windows: the slices, the encoder's mean, the reranker's best window, the spec's cache key."""

import numpy as np
import pytest

from skillrouter.corpus.skill import Skill
from skillrouter.models.encoder import Encoder, EncoderSpec, skill_texts
from skillrouter.models.reranker import Reranker, RerankerSpec
from skillrouter.models.windows import body_slices, max_scores, mean_rows

# sections that differ only late in the body: truncation at a short window cannot tell them apart
INTRO = " ".join(f"Step {i}: check the service configuration and the logs before changing anything." for i in range(12))
BODY = INTRO + " Finally, export the merged report as PDF with qpdf and sign it with gpg."


@pytest.fixture(scope="module")
def tokenizer():
    return Encoder.load(EncoderSpec(model="minilm", max_length=64), device="cpu").tokenizer


def test_slices_cover_the_body_in_order_with_overlap_and_keep_its_text(tokenizer):
    n = len(tokenizer(BODY, add_special_tokens=False)["input_ids"])
    slices = body_slices(tokenizer, BODY, room=40, windows=100)
    assert len(slices) == -(-(n - 40) // 30) + 1  # stride 30 (a quarter overlap) until the last token is read
    assert all(s in BODY for s in slices)  # cut from the text, not decoded from tokens (case and spacing kept)
    assert slices[0].startswith("Step 0") and slices[-1].endswith("gpg.")
    assert all(len(tokenizer(s, add_special_tokens=False)["input_ids"]) <= 40 for s in slices)
    for a, b in zip(slices, slices[1:]):  # consecutive slices share text: a sentence cut by one is whole in the next
        assert BODY.index(b) < BODY.index(a) + len(a)
    assert body_slices(tokenizer, BODY, room=40, windows=3) == slices[:3]
    assert body_slices(tokenizer, BODY, room=40, windows=1) == [BODY]  # one window: the model truncates
    assert body_slices(tokenizer, BODY, room=n, windows=4) == [BODY]  # fits: the skill as it is


def test_pooling_helpers_and_their_errors():
    rows = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    pooled = mean_rows(rows, np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(pooled, [[2 ** -0.5, 2 ** -0.5], [1, 0]], atol=1e-6)
    assert max_scores(np.array([0.1, 0.7, -2.0]), np.array([0, 0, 1]), 2).tolist() == [0.7, -2.0]
    with pytest.raises(ValueError, match="expected 3 embedding rows"):
        mean_rows(rows[:2], np.array([0, 0, 1]), 2)


def test_cache_keys_name_windows_and_old_keys_still_parse():
    spec = EncoderSpec(model="minilm", max_length=256, task="a|b", windows=4)
    assert spec.cache_key().endswith("|windows=4")
    assert EncoderSpec.from_cache_key(spec.cache_key()) == spec
    plain = EncoderSpec(model="minilm", max_length=256)
    assert plain.cache_key() == f"minilm|256|{plain.task}|1500"  # what indexes built before windows recorded
    assert EncoderSpec.from_cache_key(plain.cache_key()) == plain


def test_windowed_encoder_averages_header_led_windows():
    spec = EncoderSpec(model="minilm", max_length=64, windows=8)
    encoder = Encoder.load(spec, device="cpu")
    long, short = Skill("a", "pdf-report", "Export reports.", BODY), Skill("b", "notes", "Take notes.", "Write.")
    texts, owner = encoder.skill_texts([long, short])
    assert owner.tolist() == [0] * (len(texts) - 1) + [1] and 2 < len(texts) <= 9
    assert all(t.startswith("pdf-report | Export reports. | ") for t in texts[:-1])  # every window has the header
    assert all(len(encoder.tokenize([t])[0]) <= 64 for t in texts)
    assert (texts, owner.tolist()) == (lambda t, o: (t, o.tolist()))(*skill_texts([long, short], spec))
    rows = encoder.encode(texts)
    expected = rows[:-1].mean(axis=0)
    got = encoder.encode_skills([long, short])
    np.testing.assert_allclose(got[0], expected / np.linalg.norm(expected), atol=1e-5)
    np.testing.assert_allclose(got[1], rows[-1], atol=1e-6)  # a skill that fits is embedded as before
    truncated = Encoder.load(EncoderSpec(model="minilm", max_length=64), device="cpu").encode_skills([long])
    assert not np.allclose(got[0], truncated[0], atol=1e-3)  # the later windows count
    # the late section is what the windows add: a request about it finds the long skill closer than truncation did
    q = encoder.encode_queries(["sign the merged PDF report with gpg"])
    assert (q @ got[0]) > (q @ truncated[0])


def test_windowed_reranker_keeps_each_skills_best_window():
    plain = Reranker.load(RerankerSpec(model="minilm", max_length=64), device="cpu")
    # the same weights (a fresh head is random at each load), read in windows
    windowed = Reranker(plain.model, plain.tokenizer, RerankerSpec(model="minilm", max_length=64, windows=8))
    long, short = Skill("a", "pdf-report", "Export reports.", BODY), Skill("b", "notes", "Take notes.", "Write.")
    query = "sign the merged PDF report"
    pairs = windowed.pair_windows(query, long)
    assert len(pairs) > 2 and all(q == query and d.startswith("pdf-report | Export reports. | ") for q, d in pairs)
    assert all(len(ids) <= 64 for ids in windowed.pair_ids(pairs))  # the query is never cut
    by_window = [windowed.score(query, [Skill("a", "pdf-report", "Export reports.", d.split(" | ", 2)[2])])[0]
                 for _, d in pairs]
    scores = windowed.score_batch([(query, [long, short]), ("take notes", [short])], batch_size=3)
    assert scores[0][0].item() == pytest.approx(max(s.item() for s in by_window), abs=1e-5)
    assert scores[0][1].item() == pytest.approx(plain.score(query, [short])[0].item(), abs=1e-5)
    assert scores[1][0].item() == pytest.approx(plain.score("take notes", [short])[0].item(), abs=1e-5)
    assert plain.pair_windows(query, long) == [plain.format_pair(query, long)]
