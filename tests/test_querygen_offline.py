from collections import Counter

import pytest

from skillrouter.corpus.ingest import read_skills
from skillrouter.corpus.skill import Skill
from skillrouter.querygen.leak_guard import LeakGuard, document_frequencies
from skillrouter.querygen.offline import candidates, generate_offline

BODY = """# Invoice extraction

## When to use
- You have a folder of scanned supplier invoices and need the totals in a spreadsheet.
- Finance asks for VAT numbers from PDF invoices.

## Steps
1. Run OCR.

## Examples
User: "Pull the invoice number, date and total out of these 40 PDFs into a CSV."

## Reconcile totals against the ledger
Check sums.
"""
SKILL = Skill("fin/invoice-extractor", "invoice-extractor",
              "Extracts fields from invoices. Use when the user wants to turn invoices into rows of data.", BODY)


def test_candidates_come_from_the_skills_own_text():
    sources = Counter(src for src, _ in candidates(SKILL))
    assert sources["example"] == 1 and sources["when_to_use"] == 2 and sources["use_when"] == 1
    assert sources["description"] == 1 and sources["heading"] >= 1


def test_requests_are_first_person_and_name_free():
    queries, rejected = generate_offline(SKILL, 5, LeakGuard.for_skill(SKILL))
    assert queries[0] == "Pull the invoice number, date and total out of these 40 PDFs into a CSV."
    assert any(q.startswith("I have a folder of scanned supplier invoices") for q in queries)
    assert all("invoice-extractor" not in q.lower() and "invoice extractor" not in q.lower() for q in queries)
    assert len(queries) == 5 and len(set(queries)) == 5


def test_deterministic_and_seeded():
    a = generate_offline(SKILL, 5, LeakGuard.for_skill(SKILL), seed=1)
    b = generate_offline(SKILL, 5, LeakGuard.for_skill(SKILL), seed=1)
    assert a == b


@pytest.fixture(scope="module")
def bundled():
    skills = read_skills("bundled")
    return skills, document_frequencies(skills)


def test_bundled_corpus_yields_three_clean_requests_almost_everywhere(bundled):
    skills, (df, n) = bundled
    short = []
    for s in skills:
        guard = LeakGuard.for_skill(s, df, n)
        queries, _ = generate_offline(s, 3, guard)
        fresh = LeakGuard.for_skill(s, df, n)
        assert all(fresh.accept(q) is None for q in queries), s.id  # every output passes the guard
        if len(queries) < 3:
            short.append(s.id)
    assert len(short) <= len(skills) // 50, short


@pytest.mark.parametrize("body", [
    "...", "User: ?", "## When to use\n- ...\n- !!\n", "# \n## \n", "User: \"...\"\n" * 3, "x",
    "## When to use\n- You\n", "用 Python 写测试。\n## 何时使用\n- 需要测试时",
])
def test_odd_texts_never_crash(body):
    skill = Skill("odd/x", "odd-one", "...", body)
    queries, _ = generate_offline(skill, 3, LeakGuard.for_skill(skill))
    assert all(len(q) >= 20 for q in queries)


def test_name_scrub_leaves_no_contentless_request_and_numbering_goes():
    body = ("# Bun Server Best Practices Workflow\n\n## 1) Confirm architecture before coding\n\n"
            "## Step 2: Plan module boundaries first\n")
    skill = Skill("x/bun", "bun-server-best-practices", "Must be used for Bun Server tasks.", body)
    queries, _ = generate_offline(skill, 5, LeakGuard.for_skill(skill))
    assert "I need help with Workflow." not in queries
    assert "I need help with confirm architecture before coding." in queries
    assert "I need help with plan module boundaries first." in queries


def test_chinese_and_japanese_skills_get_requests_in_their_own_words():
    """About 5% of the real pool is written in Chinese or Japanese: no spaces between words, `。` ends sentences.
    Its headings and descriptions count as the long texts they are, and get no English frame around them."""
    zh = Skill("sec/api-security", "api-security-testing", "API安全测试的专业技能和方法论。覆盖鉴权、越权与注入。",
               "# 接口越权漏洞的排查流程\n\n检查每个接口的鉴权。\n\n## 批量赋值与参数污染的测试方法\n\n步骤。\n")
    queries, rejected = generate_offline(zh, 3, LeakGuard.for_skill(zh))
    assert queries == ["API安全测试的专业技能和方法论。", "接口越权漏洞的排查流程",
                       "批量赋值与参数污染的测试方法"], rejected
    first = "テスト可能なコードのためのプロトコルベースの依存性注入。"
    ja = Skill("swift/di", "swift-protocol-di-testing", first + "モックでファイルシステムを置き換える。", "本文。")
    assert [t for s, t in candidates(ja) if s == "description"] == [first]
    assert generate_offline(ja, 3, LeakGuard.for_skill(ja))[0] == [first]
    assert LeakGuard.for_skill(ja).check("依存性注入") == "too_short"  # five characters: still too short


@pytest.mark.parametrize("description", [
    "。。。", "！", "测试\x00\x1b[31m注入\\\"引号'和反斜杠\\。其余", "界" * 100_000,
    "# 标题\n\t\r\n\u200b零宽字符的描述文本。",
    "混合 mixed 文本 with `code` and 中文。Second sentence.",
])
def test_hostile_cjk_texts_never_crash_and_every_request_passes_the_guard(description):
    skill = Skill("odd/cjk", "cjk-one", description, f"# {description[:5000]}\n## 步骤\n- {description[:300]}\n")
    queries, rejected = generate_offline(skill, 3, LeakGuard.for_skill(skill))
    fresh = LeakGuard.for_skill(skill)
    assert all(fresh.accept(q) is None for q in queries), (queries, rejected)
    assert all(len(q) <= fresh.max_chars for q in queries)
