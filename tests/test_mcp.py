"""The MCP server's tools over the bundled corpus (BM25): in process, and over stdio as an agent starts it
(`skillrouter mcp`), both with the SDK's own client. Streamable HTTP on the Serve ingress is in
tests/test_compat_api.py."""

import asyncio
import os
import sys
from pathlib import Path

import pytest

from skillrouter.config import PipelineConfig
from skillrouter.corpus.ingest import read_skills

SKILLS = read_skills("bundled")


@pytest.fixture(scope="module")
def server():
    from skillrouter.serving.mcp import LocalSkills, build_server

    backend = LocalSkills(SKILLS, "bm25", PipelineConfig())
    return build_server(backend.search, backend.open)


def run(server, calls):
    from mcp import Client

    async def session():
        async with Client(server, read_timeout_seconds=120) as client:
            return [await client.call_tool(name, args) for name, args in calls]

    return asyncio.run(session())


def test_tools_are_described_for_an_agent(server):
    from mcp import Client

    async def listing():
        async with Client(server) as client:
            return (await client.list_tools()).tools, client.instructions

    tools, instructions = asyncio.run(listing())
    tools = {t.name: t for t in tools}
    assert set(tools) == {"search_skills", "open_skill"} and "search_skills" in instructions
    search = tools["search_skills"]
    assert search.annotations.read_only_hint and "open_skill" in search.description
    props = search.input_schema["properties"]
    assert search.input_schema["required"] == ["query"] and props["top_k"]["default"] == 5
    assert props["top_k"]["maximum"] == 50 and props["query"]["maxLength"] == 2000
    assert "search_skills" in tools["open_skill"].description


def test_search_filter_and_open(server):
    target = next(s for s in SKILLS if s.category)
    other = next(s.category for s in SKILLS if s.category and s.category != target.category)
    found, filtered, opened, missing, bad = run(server, [
        ("search_skills", {"query": target.text()[:600], "top_k": 3}),
        ("search_skills", {"query": target.text()[:600], "top_k": 4, "filters": {"category": [other]}}),
        ("open_skill", {"skill_id": target.id}),
        ("open_skill", {"skill_id": "no/such/skill"}),
        ("search_skills", {"query": "  ", "top_k": 0}),
    ])
    hits = found.structured_content["result"]
    assert not found.is_error and [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["skill_id"] == target.id
    assert hits[0]["retrieval_score"] > hits[1]["retrieval_score"] and hits[0]["rerank_score"] is None
    narrowed = filtered.structured_content["result"]
    assert 1 <= len(narrowed) <= 4 and {h["category"] for h in narrowed} == {other}
    text = opened.content[0].text
    assert not opened.is_error and text.startswith("---\nid: ") and text.endswith(target.body)
    assert missing.is_error and "no/such/skill" in missing.content[0].text
    assert bad.is_error and "query" in bad.content[0].text and "top_k" in bad.content[0].text


def test_stdio_command_serves_the_tools(tmp_path, repo_root):
    """`skillrouter mcp` as an agent's MCP config starts it; stdout carries nothing but the protocol."""
    from mcp import Client, StdioServerParameters

    target = SKILLS[7]
    params = StdioServerParameters(
        command=str(Path(sys.executable).with_name("skillrouter")),
        args=["mcp", "--config", str(repo_root / "configs/minilm.yaml"), "--system", "bm25", "--corpus", "bundled",
              f"run_dir={tmp_path}"],
        env={"HF_HUB_OFFLINE": "1", "PATH": os.environ.get("PATH", "")}, cwd=str(tmp_path))

    async def session():
        async with Client(params, read_timeout_seconds=120) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            found = await client.call_tool("search_skills", {"query": target.text()[:600], "top_k": 2})
            opened = await client.call_tool("open_skill", {"skill_id": target.id})
            return names, found, opened

    names, found, opened = asyncio.run(asyncio.wait_for(session(), 180))
    assert names == {"search_skills", "open_skill"}
    assert found.structured_content["result"][0]["skill_id"] == target.id
    assert target.body in opened.content[0].text
