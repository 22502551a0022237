import pytest

from skillrouter.corpus.skill import Skill
from skillrouter.querygen.leak_guard import (
    DUPLICATE,
    EMPTY,
    IDENTIFIER,
    NAMES_SKILL,
    TOO_LONG,
    TOO_SHORT,
    LeakGuard,
    document_frequencies,
    singular,
)

SKILL = Skill("x/pdf-tools", "PDF-Tools", "Merge and split PDF files.", "Use qpdf.")


@pytest.mark.parametrize("query", [
    "Can you run pdf tools on my scanned invoices please?",
    "Can you run PDF_Tools on my scanned invoices please?",
    "Can you run pdf-tool on my scanned invoices please?",
    "Can you run the pdftools thing on my scanned invoices?",
    "Is there a PDFs tools option for my scanned invoices?",
])
def test_name_is_caught_across_case_separators_and_plurals(query):
    assert LeakGuard.for_skill(SKILL).check(query) == NAMES_SKILL


def test_ordinary_words_of_the_name_are_allowed():
    guard = LeakGuard.for_skill(SKILL)
    assert guard.check("Merge these three PDF files and add page numbers to the result") is None
    assert guard.check("Which tools can split a large scanned document by chapter?") is None


def test_identifier_tokens_are_rare_name_tokens():
    skills = [Skill("a", "excel-openpyxl-reports", "Build Excel reports.", "Use openpyxl."),
              *(Skill(f"b{i}", f"excel-helper-{i}", "Excel and reports.", "excel reports") for i in range(20))]
    df, n = document_frequencies(skills)
    guard = LeakGuard.for_skill(skills[0], df, n, max_df=0.05)
    assert guard.identifiers == {"openpyxl"}  # "excel" and "report" are common in this corpus
    assert guard.check("Write my quarterly numbers to a workbook with openpyxl please") == IDENTIFIER
    assert guard.check("Turn my quarterly numbers into an Excel report with a chart") is None


def test_one_word_names():
    common = LeakGuard.for_skill(Skill("p", "pdf", "PDF things.", "b"), {"pdf": 50}, 100)
    assert common.check("Merge these two pdf files into one for me") is None
    rare = LeakGuard.for_skill(Skill("z", "zephyrctl", "Manage zephyr.", "b"), {"zephyrctl": 1}, 100)
    assert rare.check("How do I restart zephyrctl on the staging box?") == NAMES_SKILL


def test_shape_rules_and_duplicates():
    guard = LeakGuard.for_skill(SKILL, min_chars=20, max_chars=80, min_words=4)
    assert guard.check("   ") == EMPTY
    assert guard.check("merge pdfs") == TOO_SHORT
    assert guard.check("word " * 30) == TOO_LONG
    q = "Merge these three scanned files into one document"
    assert guard.accept(q) is None
    assert guard.accept("merge  these three SCANNED files into one documents") == DUPLICATE


def test_singular():
    assert [singular(w) for w in ["pdfs", "indexes", "policies", "class", "status", "analysis", "docs"]] == \
        ["pdf", "index", "policy", "class", "status", "analysis", "doc"]
