"""Typed configuration: YAML profiles in `configs/`, `key=value` overrides, the paper's settings as defaults.

Every section forbids unknown keys, so a typo fails before any work is done, naming the key and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CorpusConfig(_Section):
    sources: list[str] = Field(default_factory=lambda: ["bundled"], description="paths, or 'bundled'")
    max_skill_chars: int = Field(262_144, gt=0, description="records over this many characters are quarantined")
    strict: bool = Field(False, description="fail when any record is quarantined")


class BM25Config(_Section):
    """rank_bm25's BM25Okapi parameters (its defaults)."""

    k1: float = Field(1.5, ge=0)
    b: float = Field(0.75, ge=0, le=1)
    epsilon: float = Field(0.25, ge=0)


class BudgetConfig(_Section):
    """A hard limit on what query generation may spend; unset limits are unlimited."""

    max_requests: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)
    max_cost_usd: float | None = Field(None, ge=0)
    input_usd_per_mtok: float = Field(0.15, ge=0, description="price per million prompt tokens (gpt-4o-mini)")
    output_usd_per_mtok: float = Field(0.60, ge=0, description="price per million completion tokens")


class QueryGenConfig(_Section):
    """Synthetic queries: an OpenAI-compatible LLM, or the offline generator (`auto`: LLM when a key is set)."""

    generator: Literal["auto", "llm", "offline"] = "auto"
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; default: $OPENAI_BASE_URL or OpenAI")
    model: str = "gpt-4o-mini"
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    prompt_file: str = "configs/prompts/query_generation.yaml"
    body_chars: int = Field(4000, gt=0, description="skill body characters shown to the LLM")
    num_skills: int | None = Field(None, ge=1, description="skills to sample (stratified by category); all if unset")
    queries_per_skill: int = Field(3, ge=1)
    max_attempts: int = Field(3, ge=1, description="answers requested per skill before it is recorded as failed")
    temperature: float = Field(0.8, ge=0, le=2)
    max_tokens: int = Field(400, gt=0, description="completion tokens per request")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(6, ge=0, description="retries of one request on 429, 5xx and timeouts")
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    actors: int = Field(2, ge=1, description="Ray Data actors sending requests")
    max_in_flight_per_actor: int = Field(16, ge=1)
    batch_size: int = Field(32, ge=1, description="skills per Ray Data batch")
    min_chars: int = Field(20, ge=1)
    max_chars: int = Field(600, ge=1)
    min_words: int = Field(4, ge=1)
    categories_k: int = Field(32, ge=2, description="k-means clusters when the corpus has no categories")
    dry_run: bool = Field(False, description="print the cost estimate and stop before any request")
    budget: BudgetConfig = Field(default_factory=BudgetConfig)


class MiningConfig(_Section):
    """Hard negatives and the three-layer false-negative filter (SkillRouter, section 3)."""

    dense_negatives: int = Field(4, ge=0)
    bm25_negatives: int = Field(3, ge=0)
    category_negatives: int = Field(2, ge=0)
    random_negatives: int = Field(1, ge=0)
    jaccard_threshold: float = Field(0.6, ge=0, le=1, description="body word-trigram Jaccard")
    cosine_threshold: float = Field(0.92, ge=-1, le=1)
    candidate_margin: int = Field(20, ge=0, description="extra dense/BM25 candidates kept for back-fill")
    num_perm: int = Field(128, ge=16, description="MinHash permutations for the Jaccard LSH")
    lsh_threshold: float = Field(0.4, gt=0, le=1, description="LSH candidate threshold; exact Jaccard decides")
    encoder: str = Field("minilm", description="encoder for neighbours and the cosine layer (id, path, 'minilm')")
    encoder_max_length: int = Field(256, gt=0)
    embed_batch_size: int = Field(64, gt=0)
    embed_actors: int = Field(1, ge=1, description="encoder actors (one GPU each when the cluster has GPUs)")
    embed_max_batch_tokens: int | None = Field(None, gt=0, description="token budget per batch (GPU: 131072)")
    compile_encoder: bool = Field(False, description="torch.compile the corpus encoder (pays off on GPUs)")
    actors: int = Field(2, ge=1, description="Ray Data actors mining query batches")
    batch_size: int = Field(256, ge=1, description="queries per mining batch")
    cache_dir: str = Field(".cache/embeddings", description="corpus embeddings by (model, corpus version)")
    sample_size: int = Field(12, ge=0, description="queries shown in mining_sample.md")
    seed: int = 0


class EncoderTrainConfig(_Section):
    """Bi-encoder fine-tuning with InfoNCE (the paper's settings)."""

    model: str = "Qwen/Qwen3-Embedding-0.6B"
    temperature: float = Field(0.05, gt=0)
    learning_rate: float = Field(2e-5, gt=0)
    batch_size: int = Field(8, gt=0)
    grad_accum_steps: int = Field(4, gt=0)
    max_length: int = Field(2048, gt=0)


class RerankerTrainConfig(_Section):
    """Cross-encoder fine-tuning with listwise cross-entropy (the paper's settings)."""

    model: str = "Qwen/Qwen3-Reranker-0.6B"
    temperature: float = Field(1.0, gt=0)
    learning_rate: float = Field(1e-5, gt=0)
    max_length: int = Field(4096, gt=0)


class RoutingConfig(_Section):
    system: str = Field("bm25", description="first-stage system used to answer requests")
    retrieve_k: int = Field(20, ge=1, le=1000, description="candidates passed to the reranker")


class EvalConfig(_Section):
    benchmark: str = Field("bundled", description="an eval_core directory, or 'bundled' for the dev set")
    distractors: list[str] = Field(default_factory=list, description="extra unlabelled skills for the pool")
    systems: list[str] = Field(default_factory=lambda: ["bm25", "bm25-nd"])
    top_k: int = Field(50, ge=1, le=1000, description="predictions kept per task")


class IndexConfig(_Section):
    """The Milvus skill index: versions `{collection}_v{N}` served through the alias `{collection}`.

    Corpus embeddings are read from and written to `mining.cache_dir`, so an index built with the mining
    encoder and length reuses the embeddings mining computed (and the reverse).
    """

    uri: str = Field("index/skills.db", description="a Milvus Lite file (ends in .db; a relative path is under "
                                                    "run_dir) or a server URI, e.g. http://milvus:19530")
    collection: str = Field("skills", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$",
                            description="the alias readers search; versions are named {collection}_v{N}")
    encoder: str = Field("minilm", description="encoder of skills and queries (HF id, local path, 'minilm')")
    max_length: int = Field(256, gt=0, description="tokens per skill text")
    batch_size: int = Field(64, gt=0, description="texts per encoder batch")
    embed_actors: int = Field(1, ge=1, description="encoder actors for a build (one GPU each on a GPU cluster)")
    keep_versions: int = Field(2, ge=1, description="verified versions kept, the live one included")
    token_env: str = Field("MILVUS_TOKEN", description="environment variable holding a server's token "
                                                       "('user:password' or an API key); unused for Lite")
    index_type: Literal["FLAT", "HNSW"] = Field("FLAT", description="FLAT: exact; HNSW: approximate, for "
                                                                     "large collections on a server")


class PipelineConfig(_Section):
    """A whole profile: one file in `configs/` drives every stage."""

    run_dir: str = "runs/local"
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    bm25: BM25Config = Field(default_factory=BM25Config)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    querygen: QueryGenConfig = Field(default_factory=QueryGenConfig)
    mining: MiningConfig = Field(default_factory=MiningConfig)
    encoder: EncoderTrainConfig = Field(default_factory=EncoderTrainConfig)
    reranker: RerankerTrainConfig = Field(default_factory=RerankerTrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    examples: list[str] = Field(default_factory=list, description="requests the main job answers as a demo")
    seed: int = 0


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], value), the value read as YAML (so `3`, `true`, `[x, y]` are typed)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{item}' is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def is_override(arg: str) -> bool:
    key, sep, _ = arg.partition("=")
    return bool(sep) and key.replace(".", "").replace("_", "").replace("-", "").isalnum()


def _apply(data: dict[str, Any], path: list[str], value: Any, origin: str) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: '{'.'.join(path[:i + 1])}' is not a section")
        node = child
    node[path[-1]] = value


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{origin}: unknown key '{key}'")
        else:
            lines.append(f"{origin}: '{key}': {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] = (), model: type[BaseModel] = PipelineConfig):
    """Load a YAML profile (or the defaults when `path` is None), apply overrides, validate everything."""
    data: dict[str, Any] = {}
    origin = str(path) if path else "<defaults>"
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{origin}: no such config file") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{origin}: invalid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{origin}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    try:
        model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, origin)) from None
    for item in overrides:
        key_path, value = parse_override(item)
        _apply(data, key_path, value, f"override '{item}'")
        try:
            model.model_validate(data)
        except ValidationError as err:
            raise ConfigError(_format_errors(err, f"override '{item}'")) from None
    return model.model_validate(data)
