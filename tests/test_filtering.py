import numpy as np
import pytest

from skillrouter.filtering.filter import BODY_JACCARD, EMBEDDING_COSINE, SAME_NAME, FalseNegativeFilter
from skillrouter.filtering.jaccard import NearDuplicates, exact_jaccard, exact_pairs, lsh_recall, trigram_shingles
from skillrouter.filtering.names import normalise_name


def body_with_jaccard(shared_words: int, length: int = 102, tag: str = "b") -> tuple[str, str]:
    """Two bodies of `length` distinct words sharing their first `shared_words`: Jaccard (k-2)/(2(L-2)-(k-2))."""
    a = [f"w{i}" for i in range(length)]
    b = a[:shared_words] + [f"{tag}{i}" for i in range(length - shared_words)]
    return " ".join(a), " ".join(b)


@pytest.mark.parametrize("name", ["PDF-Tools", "pdf_tools", "pdf tool", "Pdf.Tools", "PDF TOOLS"])
def test_same_name_after_normalisation(name):
    assert normalise_name(name) == normalise_name("pdf-tools") == "pdf-tool"


def test_different_names_stay_different():
    assert normalise_name("pdf-tools") != normalise_name("pdf-tools-pro")


def test_jaccard_either_side_of_the_threshold():
    a, above = body_with_jaccard(78)  # 76 / 124 = 0.613
    _, below = body_with_jaccard(76, tag="c")  # 74 / 126 = 0.587
    sa, sab, sbe = trigram_shingles(a), trigram_shingles(above), trigram_shingles(below)
    assert exact_jaccard(sa, sab) == pytest.approx(76 / 124) and exact_jaccard(sa, sbe) == pytest.approx(74 / 126)
    near = NearDuplicates([sa, sab, sbe], threshold=0.6)
    assert (0, 1) in near and (1, 0) in near and (0, 2) not in near and near.num_pairs == 1


def test_trigram_shingles_are_stable_and_word_based():
    assert trigram_shingles("One two three four").tolist() == trigram_shingles("one, TWO three four!").tolist()
    assert len(trigram_shingles("one two")) == 0 and exact_jaccard(trigram_shingles("a b"), np.array([1])) == 0.0


def test_lsh_recall_against_exact_pairs():
    rng = np.random.default_rng(0)
    base = [" ".join(f"t{rng.integers(5000)}" for _ in range(120)) for _ in range(40)]
    docs = base + [" ".join(d.split()[: int(len(d.split()) * f)] + ["extra"] * 3) for d, f in
                   zip(base, rng.uniform(0.75, 1.0, 40))]
    shingles = [trigram_shingles(d) for d in docs]
    truth = exact_pairs(shingles, 0.6)
    assert truth == {(i, j) for i in range(len(docs)) for j in range(i + 1, len(docs))
                     if exact_jaccard(shingles[i], shingles[j]) > 0.6}
    report = lsh_recall(shingles, 0.6)
    assert report["exact_pairs"] == len(truth) >= 30 and report["recall"] >= 0.95


def test_filter_layers_in_order():
    e = np.array([[1, 0], [1, 0], [0.93, np.sqrt(1 - 0.93**2)], [0.91, np.sqrt(1 - 0.91**2)], [0, 1]])
    a, b = body_with_jaccard(78)
    bodies = [a, "x y z w", "unrelated words here now", "more unrelated words", b]
    near = NearDuplicates([trigram_shingles(t) for t in bodies], 0.6)
    f = FalseNegativeFilter(["pdf-tool", "pdf-tool", "a", "b", "c"], near, e, cosine_threshold=0.92)
    assert f.reason(0, 1) == SAME_NAME  # also cosine 1.0: the first layer names it
    assert f.reason(0, 2) == EMBEDDING_COSINE and f.reason(0, 3) is None
    assert f.reason(0, 4) == BODY_JACCARD
