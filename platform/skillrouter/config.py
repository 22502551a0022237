"""Typed configuration: YAML profiles in `configs/`, `key=value` overrides, the paper's settings as defaults.

Every section forbids unknown keys, so a typo fails before any work is done, naming the key and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

WINDOWS_DOC = ("a skill longer than max_length is read in up to this many overlapping windows, each headed by its "
               "name and description: an encoder averages their embeddings, a reranker keeps the best window's score "
               "(models/windows.py); 1 truncates. For short-window models such as MiniLM")
USE_GPU_DOC = ("encoder actors on GPUs, one each: auto when the cluster has GPUs or its autoscaler can add a node "
               "type with GPUs (common/raycluster.py, choose_gpus), true always (waiting for GPU nodes), false never")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CorpusConfig(_Section):
    sources: list[str] = Field(default_factory=lambda: ["bundled"], description="paths, or 'bundled'")
    max_skill_chars: int = Field(262_144, gt=0, description="records over this many characters are quarantined")
    max_file_bytes: int = Field(4 * 1024 * 1024, gt=0,
                                description="a SKILL.md file or one JSONL line over this many bytes is quarantined "
                                            "unread")
    strict: bool = Field(False, description="fail when any record is quarantined")


class BM25Config(_Section):
    """rank_bm25's BM25Okapi parameters (its defaults) over the terms of an analyzer."""

    analyzer: Literal["english", "plain"] = Field(
        "english", description="english: Lucene's English analyzer as Pyserini's BM25 runs it (its 33 stopwords "
        "dropped, Porter stems: `queries` matches `query`, common/text.py); plain: lower-cased words as they are")
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
    filter_false_negatives: bool = Field(True, description="drop candidates the three layers flag as possible "
                                         "positives; false keeps them (the paper's ablation), counting them instead")
    candidate_margin: int = Field(20, ge=0, description="extra dense/BM25 candidates kept for back-fill")
    num_perm: int = Field(128, ge=16, description="MinHash permutations for the Jaccard LSH")
    lsh_threshold: float = Field(0.4, gt=0, le=1, description="LSH candidate threshold; exact Jaccard decides")
    encoder: str = Field("minilm", description="encoder for neighbours and the cosine layer (id, path, 'minilm')")
    encoder_max_length: int = Field(256, gt=0)
    encoder_windows: int = Field(1, ge=1, description=WINDOWS_DOC)
    embed_batch_size: int = Field(64, gt=0)
    embed_actors: int = Field(1, ge=1, description="encoder actors (one GPU each when the cluster has GPUs)")
    use_gpu: Literal["auto"] | bool = Field("auto", description=USE_GPU_DOC)
    embed_max_batch_tokens: int | None = Field(None, gt=0, description="token budget per batch (GPU: 131072)")
    compile_encoder: bool = Field(False, description="torch.compile the corpus encoder (pays off on GPUs)")
    actors: int = Field(2, ge=1, description="Ray Data actors mining query batches")
    batch_size: int = Field(256, ge=1, description="queries per mining batch")
    cache_dir: str = Field(".cache/embeddings", description="corpus embeddings by (model, corpus version); a changed "
                           "corpus embeds only the texts no earlier entry holds")
    sample_size: int = Field(12, ge=0, description="queries shown in mining_sample.md")
    seed: int = 0


class TrainConfig(_Section):
    """What the encoder and reranker jobs share: Ray Train + DeepSpeed, schedule, checkpoints, data."""

    model: str = Field(description="initial weights: a Hugging Face id, a local path, or 'minilm'")
    max_length: int = Field(gt=0, description="tokens per skill text (encoder) or per query-skill pair (reranker)")
    windows: int = Field(1, ge=1, description=WINDOWS_DOC + "; training reads a skill's first window, inference "
                         "all of them (the exported model records it)")
    temperature: float = Field(gt=0)
    learning_rate: float = Field(gt=0)
    batch_size: int = Field(8, gt=0, description="groups per micro-batch on each worker")
    grad_accum_steps: int = Field(4, gt=0, description="micro-batches per optimizer step")
    negatives: int = Field(10, ge=1, description="hard negatives used per group (the first N as mined)")
    max_groups: int | None = Field(None, gt=0, description="train on a seeded sample of this many groups")
    epochs: int = Field(1, gt=0)
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of the steps with a linear warm-up")
    schedule: Literal["linear", "cosine", "constant"] = Field("linear", description="decay after warm-up")
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_batch_tokens: int | None = Field(None, gt=0, description="split each forward into length-sorted chunks "
                                         "of at most this many tokens (padding included): bounds activations")
    gradient_checkpointing: bool = True
    checkpoint_share: float = Field(1.0, gt=0, le=1, description="with gradient_checkpointing: the share of "
                                    "layers recomputed in backward, evenly spaced; less recomputes less and keeps "
                                    "more activations")
    compile: bool = Field(False, description="torch.compile each transformer layer (GPUs): fuses the norms, "
                          "rotary and activation kernels that dominate a small model's step")
    packing: bool = Field(True, description="decoder models (Qwen3): lay each chunk's sequences end to end in one "
                          "row, attention within each sequence (varlen FlashAttention on GPUs), no padding; "
                          "BERT-style models always pad")
    deepspeed: str = Field("configs/deepspeed/zero2.json", description="DeepSpeed config; 'auto' values are "
                           "filled from this section")
    precision: Literal["auto", "bf16", "bf16-autocast", "fp32"] = Field(
        "auto", description="auto: bf16 on GPUs (DeepSpeed's, fp32 master weights), bf16-autocast on CPUs that "
        "compute in bf16 (AVX512-BF16, AMX: a MiniLM step in about half the time), else fp32; bf16-autocast: fp32 "
        "weights and optimizer, the forward in torch.autocast bf16, the loss in fp32")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (one GPU each when use_gpu)")
    use_gpu: bool | None = Field(None, description="default: when the cluster has GPUs")
    cpus_per_worker: int = Field(1, ge=1)
    checkpoint_every: int = Field(50, gt=0, description="optimizer steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept while a run trains")
    keep_finished_checkpoints: bool = Field(False, description="keep a finished run's intermediate DeepSpeed "
                                            "checkpoints (optimizer states, 4x the model each); by default only "
                                            "its last checkpoint, the export, stays in storage_path")
    max_failures: int = Field(3, ge=0, description="worker failures survived by resuming from the last checkpoint")
    log_every: int = Field(10, gt=0, description="optimizer steps between metric reports")
    peak_tflops: float | None = Field(None, gt=0, description="per-device peak for the MFU estimate; known GPUs "
                                      "are recognised (H100/H200: 790, the measured bf16 dense matmul)")
    output_dir: str | None = Field(None, description="Hugging Face export; default run_dir/models/<kind>")
    storage_path: str | None = Field(None, description="Ray Train checkpoints (a shared URI on clusters); "
                                     "default run_dir/train")


class EncoderTrainConfig(TrainConfig):
    """Bi-encoder fine-tuning with InfoNCE (the paper's settings)."""

    model: str = "Qwen/Qwen3-Embedding-0.6B"
    max_length: int = Field(2048, gt=0)
    temperature: float = Field(0.05, gt=0)
    learning_rate: float = Field(2e-5, gt=0)
    mask_margin: float | None = Field(None, description="mask negatives scoring above the positive + margin")
    skill_text: Literal["full", "name_description"] = Field(
        "full", description="what the encoder reads of each skill in training: the full text (name | description | "
                            "body), or name | description only (the paper's ablation; evaluate it as finetuned-nd)")


class RerankerTrainConfig(TrainConfig):
    """Cross-encoder fine-tuning with listwise cross-entropy (the paper's settings)."""

    model: str = "Qwen/Qwen3-Reranker-0.6B"
    max_length: int = Field(4096, gt=0)
    temperature: float = Field(1.0, gt=0)
    learning_rate: float = Field(1e-5, gt=0)
    batch_size: int = Field(2, gt=0, description="groups per micro-batch: each is 1 + negatives pairs")
    grad_accum_steps: int = Field(16, gt=0)
    loss: Literal["listwise", "pointwise"] = Field("listwise", description="pointwise BCE is the paper's ablation")
    negatives_from: str = Field("mined", pattern=r"^[^+\s]+$", description="mined: each group's mined negatives "
                                "(the paper's); or a first-stage system (hybrid:finetuned, finetuned, bm25): its top "
                                "routing.retrieve_k for each training query, the list the reranker will rerank, "
                                "false negatives filtered as in mining (mining.rerank_negatives)")
    new_head_lr: float | None = Field(None, gt=0, description="learning rate of weights the base model lacks (the "
                                      "classification head a BERT-style base gets); default: learning_rate")
    inference_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="the dtype the trained reranker scores in (evaluation, selection, serving, route); auto: "
        "bf16 on GPUs and on CPUs that compute in it (AVX512-BF16, AMX), else fp32; training sets its own `precision`")


class RoutingConfig(_Section):
    """What the main job serves. Its `select` stage scores each candidate first stage, alone and with the trained
    reranker fused at each weight, on validation queries (the queries of `validation_share` of the skills, which
    no model trains on), and serves the best; a reranker that does not beat its first stage there is not served."""

    system: str = Field("bm25", description="first-stage system used to answer requests")
    retrieve_k: int = Field(20, ge=1, le=1000, description="candidates passed to the reranker")
    validation_share: float = Field(0.15, ge=0.0, lt=1.0, description="share of the skills whose queries are held "
                                    "out of training for validation (0: none, and no selection)")
    validation_queries: int = Field(150, ge=1, description="validation queries the selection scores at most")
    candidates: list[str] = Field(default_factory=lambda: ["bm25", "finetuned", "hybrid:finetuned"],
                                  description="first stages the selection may serve: bm25, finetuned (the "
                                  "index's dense encoder) or hybrid:finetuned")
    selection_benchmark: str | None = Field(None, description="a labelled benchmark the served system is chosen "
                                            "on (e.g. realistic-dev, never reported); none: the validation queries")
    fusion_weights: list[float] = Field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)],
                                        description="reranker weights tried (0: the first stage alone, 1: the "
                                        "reranker alone, the paper's)")
    min_rerank_gain: float = Field(0.02, ge=0.0, le=1.0, description="Hit@1 a reranked system must add to its first "
                                   "stage alone, with an MRR@10 no lower, to be served (0.02: two points; a tie or a "
                                   "gain of one request in a small set is noise, and the simpler system wins it)")


class EvalConfig(_Section):
    benchmark: str | list[str] = Field("bundled", description="an eval_core directory, 'bundled' (the dev set), "
                                       "'realistic' or 'realistic-hard'; or a list of them, reported in that order")
    distractors: list[str] = Field(default_factory=list, description="extra unlabelled skills for the pool")
    systems: list[str] = Field(default_factory=lambda: ["bm25", "bm25-nd"])
    top_k: int = Field(50, ge=1, le=1000, description="predictions kept per task")
    @property
    def benchmarks(self) -> list[str]:
        return [self.benchmark] if isinstance(self.benchmark, str) else list(self.benchmark)

    tie_seed: int = Field(0, description="seed of the random order the pool is ranked in, so that skills a system "
                          "scores the same come out in no favoured order (neither the pool's nor the ids'); "
                          "recorded in each result's provenance")


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
    windows: int = Field(1, ge=1, description=WINDOWS_DOC)
    batch_size: int = Field(64, gt=0, description="texts per encoder batch")
    max_batch_tokens: int | None = Field(None, gt=0, description="token budget per encoder forward (GPU: 131072)")
    packing: bool = Field(False, description="a decoder encoder (Qwen3) embeds padding-free packed rows of "
                          "max_batch_tokens tokens (models/packing.py; BERT-style models pad). Off: on the H200 the "
                          "69K pool embedded packed with compiled layers at 168 skills/s, slower than padded "
                          "length-sorted batches (benchmarks/README.md, serving on the H200)")
    compile_encoder: bool = Field(False, description="torch.compile the encoder's layers (pays off on GPUs)")
    embed_actors: int = Field(1, ge=1, description="encoder actors for a build (one GPU each on a GPU cluster)")
    use_gpu: Literal["auto"] | bool = Field("auto", description=USE_GPU_DOC)
    keep_versions: int = Field(2, ge=1, description="verified versions kept, the live one included")
    token_env: str = Field("MILVUS_TOKEN", description="environment variable holding a server's token "
                                                       "('user:password' or an API key); unused for Lite")
    index_type: Literal["FLAT", "HNSW"] = Field("FLAT", description="FLAT: exact; HNSW: approximate, for "
                                                                     "large collections on a server")


class AutoscalingConfig(_Section):
    """Ray Serve's `autoscaling_config` for one deployment (replicas follow the requests each one holds)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8, gt=0, description="requests per replica the autoscaler aims at")
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(60.0, ge=0)


class DeploymentConfig(_Section):
    """How one Serve deployment runs: replicas (fixed, or autoscaled), admission, resources. A Serve config file
    (`serve/*.yaml`) may override any of these per deployment."""

    num_replicas: int = Field(1, ge=1, description="fixed replica count, used when autoscaling is unset")
    autoscaling: AutoscalingConfig | None = None
    max_ongoing_requests: int = Field(32, ge=1, description="requests one replica works on at once")
    max_queued_requests: int = Field(64, ge=-1, description="requests waiting for a replica, beyond which "
                                     "callers get a back-pressure error (answered 503); -1: unbounded")
    num_cpus: float = Field(0.25, ge=0, description="CPUs reserved per replica (a scheduling figure)")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per replica; default: 1 for the model "
                                   "deployments when the cluster has GPUs, else 0")


class ServingConfig(_Section):
    """The Ray Serve application: ingress -> retriever (encoder + Milvus, BM25 or both) -> reranker."""

    host: str = Field("127.0.0.1", description="HTTP address of Serve's proxy")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port (0: any free port)")
    first_stage: Literal["dense", "bm25", "hybrid"] = Field(
        "hybrid", description="default first stage: encoder + Milvus, BM25 over the full text, or the two "
                              "fused (serving.fusion); a request may choose another")
    rerank: bool = Field(True, description="deploy the reranker stage (when a reranker model is available)")
    use_selection: bool = Field(True, description="serve what the run's main job selected on its validation "
                                "queries (RUN_DIR/select/selection.json: first stage, reranker, weight) when it exists")
    rerank_weight: float = Field(1.0, ge=0.0, le=1.0, description="the reranker's share of the final order: 1 its "
                                 "scores alone (the paper's), below 1 fused with the first stage's "
                                 "(retrieval.rerank); the main job sets it from its validation (select stage)")
    encoder: str | None = Field(None, description="encoder for index builds started by the server; default: the "
                                "run's trained encoder when exported, else index.encoder. Queries are always "
                                "embedded with the encoder the live index was built with")
    reranker: str | None = Field(None, description="cross-encoder; default: the run's trained reranker when "
                                 "exported, else none (first stage only)")
    fusion: Literal["convex", "rrf"] = Field("convex", description="how `hybrid` fuses dense and BM25: convex, "
                                            "a weighted sum of each one's min-max normalised scores (Bruch et al. "
                                            "2023); rrf, reciprocal rank fusion (retrieval/fusion.py)")
    dense_weight: float = Field(0.5, ge=0, le=1, description="the dense scores' weight in a convex fusion (BM25's: "
                                "1 minus it)")
    fusion_depth: int = Field(100, ge=1, le=1000, description="candidates each first stage gives the fusion")
    rrf_k: int = Field(60, ge=1, description="reciprocal rank fusion constant")
    max_in_flight: int = Field(64, ge=1, description="route requests one ingress replica works on; more are "
                               "answered 503 with Retry-After")
    retry_after_s: int = Field(1, ge=1, description="the Retry-After of a 503")
    request_timeout_s: float = Field(30.0, gt=0, description="a route request waiting longer is answered 503")
    body_timeout_s: float = Field(10.0, gt=0, description="a request's whole body must arrive within this many "
                                  "seconds of its headers, else 408 and the connection is closed (a stalled client "
                                  "costs a socket, not a worker)")
    admin_body_timeout_s: float = Field(300.0, gt=0, description="the same for POST /v1/index, whose token is "
                                        "checked before its body (up to 64 MiB) is read")
    admin_timeout_s: float = Field(900.0, gt=0, description="longest wait for an index change")
    admin_token_env: str = Field("SKILLROUTER_ADMIN_TOKEN", description="environment variable holding the "
                                 "bearer token of POST /v1/index (read by the ingress replicas)")
    admin_token: str | None = Field(None, description="the token, when the variable is unset (prefer the "
                                    "variable: a profile is not a secret store)")
    retrieve_batch_size: int = Field(16, ge=1, description="requests per retriever batch (@serve.batch)")
    rerank_batch_pairs: int = Field(64, ge=1, description="query-skill pairs a reranker batch gathers from "
                                    "concurrent requests (@serve.batch)")
    rerank_batch_tokens: int | None = Field(None, gt=0, description="token budget of one reranker forward: a "
                                            "batch's pairs go through the model in rows of at most this many "
                                            "tokens (GPU: 65536); none: rerank_batch_pairs pairs' worth")
    rerank_packing: bool = Field(True, description="a decoder reranker (Qwen3) scores padding-free packed rows "
                                 "(models/packing.py; varlen FlashAttention on GPUs); BERT-style models pad")
    rerank_compile: bool = Field(False, description="torch.compile the reranker's layers when a replica starts "
                                 "(GPUs: faster forwards after a compile of about a minute)")
    batch_wait_ms: float = Field(5.0, ge=0, description="how long a batch waits to fill")
    memory_search: bool = Field(True, description="a Lite index: search each replica's pinned version from a copy "
                                "of its vectors in memory (exact, the same ranking; Lite's own search copies the "
                                "whole matrix on every call); a server is always searched itself")
    reload_wait_s: float = Field(5.0, ge=0, description="how long a request waits for its replica to load a "
                                 "new index generation before it is answered from the previous one")
    ingress: DeploymentConfig = Field(default_factory=lambda: DeploymentConfig(  # far above max_in_flight: Serve
        max_ongoing_requests=4096, max_queued_requests=512, num_cpus=0.1))      # counts requests whose body is unread
    retriever: DeploymentConfig = Field(default_factory=lambda: DeploymentConfig(
        max_ongoing_requests=64, max_queued_requests=128, num_cpus=0.5))
    reranker_deployment: DeploymentConfig = Field(default_factory=lambda: DeploymentConfig(
        max_ongoing_requests=64, max_queued_requests=128, num_cpus=0.5))
    admin: DeploymentConfig = Field(default_factory=lambda: DeploymentConfig(
        max_ongoing_requests=1, max_queued_requests=8, num_cpus=0.1))


class Example(_Section):
    """A request the main job routes as a demo, and the skills a right answer puts first (any of them)."""

    query: str = Field(min_length=1)
    expect: list[str] = Field(default_factory=list, description="skill ids a right first answer is one of; the "
                              "main job says loudly when the served system misses")

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, value):
        return {"query": value} if isinstance(value, str) else value


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
    serving: ServingConfig = Field(default_factory=ServingConfig)
    examples: list[Example] = Field(default_factory=list, description="requests the main job answers as a demo: "
                                    "a request, or {query, expect: [skill ids]}")
    seed: int = 0

    def train(self, kind: str) -> TrainConfig:
        """The training section of `kind` ('encoder' or 'reranker')."""
        if kind not in ("encoder", "reranker"):
            raise ValueError(f"unknown model kind '{kind}': encoder or reranker")
        return self.encoder if kind == "encoder" else self.reranker

    def model_dir(self, kind: str) -> Path:
        """Where the `kind` training job exports its model: `<kind>.output_dir`, else run_dir/models/<kind>."""
        return Path(self.train(kind).output_dir or Path(self.run_dir) / "models" / kind)


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


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_profile(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A profile's YAML, merged over its `base:` profile (a path relative to it) when it names one, so the
    GPU profiles state only what differs from the embedded default."""
    origin = str(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{origin}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: invalid YAML: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{origin}: top level must be a mapping, got {type(loaded).__name__}")
    data = loaded or {}
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = (path.parent / str(base)).resolve()
    if base_path in seen:
        raise ConfigError(f"{origin}: 'base' forms a cycle through {base_path}")
    return _merge(read_profile(base_path, (*seen, path.resolve())), data)


def load_config(path: str | Path | None = None, overrides: list[str] = (), model: type[BaseModel] = PipelineConfig,
                base: dict[str, Any] | None = None):
    """Load a YAML profile (or `base`, a profile as a dict, or the defaults when both are None), apply overrides,
    validate everything."""
    origin = str(path) if path else "<defaults>" if base is None else "<profile>"
    data = read_profile(Path(path)) if path else dict(base or {})
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
