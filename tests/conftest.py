"""Shared fixtures: small corpora written on the fly in every supported layout."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

# Ray's sockets and logs, and DeepSpeed's compiled ops, stay inside the project's ignored folders.
_CACHE = Path(__file__).resolve().parents[1] / ".cache"
os.environ.setdefault("RAY_TMPDIR", str(_CACHE / "ray"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(_CACHE / "torch_extensions"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
Path(os.environ["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)


def skill_md(name: str, description: str, body: str, **extra) -> str:
    front = "\n".join([f"name: {name}", f"description: {description}", *(f"{k}: {v}" for k, v in extra.items())])
    return f"---\n{front}\n---\n{body}\n"


def write_jsonl(path: Path, rows: list, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def skill_tree(tmp_path: Path) -> Path:
    """A nested SKILL.md tree with three good skills and one of each kind of bad file."""
    root = tmp_path / "registry"
    files = {
        "devops/docker-debug/SKILL.md": skill_md("docker-debug", "Debug failing containers.",
                                                 "# Docker\n\nRun `docker logs` first.", category="containers",
                                                 license="MIT"),
        "devops/nested/deeper/k8s-rollout/SKILL.md": skill_md("k8s-rollout", "Roll out a deployment safely.",
                                                              "Use `kubectl rollout status`."),
        "writing/release-notes/SKILL.md": skill_md("release-notes", "Write release notes.", "Group by impact."),
        "bad/no-front-matter/SKILL.md": "# Just markdown\n\nNo front matter here.\n",
        "bad/broken-yaml/SKILL.md": "---\nname: [unclosed\ndescription: x\n---\nbody\n",
        "bad/no-name/SKILL.md": skill_md("", "Has no name.", "Body text.").replace("name: \n", ""),
        "bad/empty-body/SKILL.md": skill_md("empty", "Nothing below.", ""),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "bad/latin1/SKILL.md").parent.mkdir(parents=True)
    (root / "bad/latin1/SKILL.md").write_bytes(skill_md("latin", "caf\xe9", "body").encode("latin-1"))
    (root / "bad/binary/SKILL.md").parent.mkdir(parents=True)
    (root / "bad/binary/SKILL.md").write_bytes(b"---\nname: bin\n---\n\x00\x01\x02\xff")
    return root


def pool_rows(n: int = 5, prefix: str = "s") -> list[dict]:
    return [{"id": f"{prefix}{i}", "name": f"skill-{i}", "description": f"does thing {i}",
             "body": f"body of skill {i} with steps", "license": "MIT"} for i in range(n)]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every test that needs it; its address lets subprocess drivers join it."""
    import ray

    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ctx.address_info["address"]
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> Path:
    """A randomly initialised Qwen3 encoder with a BPE tokenizer trained on the bundled corpus."""
    from skillrouter.corpus.ingest import read_skills
    from skillrouter.testing.tiny_models import save_qwen3, train_tokenizer

    root = tmp_path_factory.mktemp("tiny-qwen3")
    tok = train_tokenizer((s.text() for s in read_skills("bundled")), root / "tokenizer", vocab_size=2000)
    return save_qwen3(root / "encoder", tok, size="tiny")


@pytest.fixture(scope="session")
def tiny_qwen3_reranker(tiny_qwen3) -> Path:
    """A randomly initialised Qwen3 causal LM sharing the tiny encoder's tokenizer."""
    from transformers import AutoTokenizer

    from skillrouter.testing.tiny_models import save_qwen3

    tok = AutoTokenizer.from_pretrained(tiny_qwen3)
    return save_qwen3(tiny_qwen3.parent / "reranker", tok, size="tiny", causal_lm=True, seed=1)


def served_sample_config(root: Path, reranker: Path, skills: int):
    """A serving profile over `skills` bundled skills of distinct categories under `root`: MiniLM encoder (index
    built at start), `reranker`, 128-token inputs, at most 4 route requests in flight, small replicas, a free
    port. Returns (config, skills); the caller adjusts the rest and starts it."""
    from skillrouter.config import PipelineConfig
    from skillrouter.corpus.ingest import read_skills, write_skills
    from skillrouter.serving.app import free_port

    picked: dict = {}
    for skill in read_skills("bundled"):
        picked.setdefault(skill.category, skill)
    sample = list(picked.values())[:skills]
    write_skills(sample, root / "skills.parquet")
    config = PipelineConfig(run_dir=str(root / "run"))
    config.corpus.sources = [str(root / "skills.parquet")]
    config.mining.cache_dir = str(root / "cache")
    config.index.max_length = 128
    config.reranker.max_length = 128
    s = config.serving
    s.reranker, s.max_in_flight, s.port = str(reranker), 4, free_port()
    for d in (s.retriever, s.reranker_deployment):
        d.num_cpus = 0.25
    return config, sample


@pytest.fixture(autouse=True, scope="module")
def _no_serve_left_behind():
    """A module that left Serve running would pin its HTTP port for the next one (Serve ignores a new port while
    it runs): stop it after every module."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        from ray import serve

        serve.shutdown()
