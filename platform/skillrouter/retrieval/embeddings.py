"""Corpus embeddings on Ray Data, cached on disk by (model, corpus version) for mining, training and indexing.

Texts are sorted by length before batching, so a batch holds texts of similar length and little padding; each
actor of the pool loads the encoder once (on a GPU when the cluster has one). The cache key covers the encoder
spec and every skill's id and content hash: change one skill and the corpus is embedded again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from skillrouter.common.raycluster import ensure_ray
from skillrouter.corpus.skill import Skill, corpus_version
from skillrouter.models.encoder import Encoder, EncoderSpec, skill_texts
from skillrouter.models.loading import model_version
from skillrouter.models.windows import mean_rows


def cache_path(cache_dir: str | Path, spec: EncoderSpec, skills: Sequence[Skill]) -> Path:
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.model.strip("/"))[-60:]
    spec_hash = hashlib.sha256((spec.cache_key() + model_version(spec.model)).encode()).hexdigest()[:8]
    return Path(cache_dir) / f"{model}-{spec_hash}" / f"{corpus_version(skills)}.npy"


class EmbedWorker:
    """Ray Data actor: one encoder per actor; embeds a batch of (idx, text) rows."""

    def __init__(self, spec: EncoderSpec, batch_size: int, max_batch_tokens: int | None, compile: bool):
        self.encoder = Encoder.load(spec, compile=compile)
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens

    def __call__(self, batch: dict) -> dict:
        texts = list(batch["text"])
        emb = self.encoder.encode(texts, self.batch_size, self.max_batch_tokens)
        return {"idx": batch["idx"], "embedding": list(emb)}


def embed_texts(texts: Sequence[str], spec: EncoderSpec, *, actors: int = 1, batch_size: int = 64,
                max_batch_tokens: int | None = None, compile: bool = False,
                use_gpu: bool | None = None) -> np.ndarray:
    """Embed `texts` through a Ray Data actor pool, longest first; rows come back in input order."""
    import ray

    ensure_ray()
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    order = np.argsort([-len(t) for t in texts], kind="stable")
    ds = ray.data.from_items([{"idx": int(i), "text": texts[i]} for i in order])
    kwargs = {"spec": spec, "batch_size": batch_size, "max_batch_tokens": max_batch_tokens, "compile": compile}
    ds = ds.map_batches(EmbedWorker, fn_constructor_kwargs=kwargs,
                        batch_size=batch_size * 4, compute=ray.data.ActorPoolStrategy(size=actors),
                        num_gpus=1 if use_gpu else 0)
    out: np.ndarray | None = None
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        emb = np.stack(batch["embedding"]).astype(np.float32)
        if out is None:
            out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
        out[batch["idx"]] = emb
    return out


def embed_skills(skills: Sequence[Skill], spec: EncoderSpec, cache_dir: str | Path, *, actors: int = 1,
                 batch_size: int = 64, max_batch_tokens: int | None = None, compile: bool = False,
                 embed: Callable[[list[str]], np.ndarray] | None = None, log=print) -> np.ndarray:
    """The corpus matrix (one unit row per skill, in order), from the cache when the model and corpus match.
    `embed` (texts -> rows, an encoder already loaded for `spec`) replaces the Ray Data pool, e.g. in a serving
    replica that must not start actors of its own."""
    path = cache_path(cache_dir, spec, skills)
    if path.exists():
        log(f"corpus embeddings: cached {path}")
        return np.load(path)
    texts, owner = skill_texts(skills, spec)
    emb = embed(texts) if embed else embed_texts(texts, spec, actors=actors, batch_size=batch_size,
                                                 max_batch_tokens=max_batch_tokens, compile=compile)
    emb = mean_rows(emb, owner, len(skills))
    save_embeddings(emb, path, spec, skills)
    log(f"corpus embeddings: {emb.shape[0]:,} x {emb.shape[1]} -> {path}")
    return emb


def save_embeddings(emb: np.ndarray, path: Path, spec: EncoderSpec, skills: Sequence[Skill]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb.astype(np.float32))
    tmp.replace(path)  # a reader never sees half a file
    path.with_suffix(".json").write_text(json.dumps({"model": spec.model, "spec": spec.cache_key(),
                                                      "skills": len(skills), "dim": int(emb.shape[1])}) + "\n")
