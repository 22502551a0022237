"""Model FLOPs utilisation: the useful training FLOPs per second over the device's peak.

FLOPs per token follow PaLM (Chowdhery et al. 2022, appendix B): 6N for the weights (forward plus backward) with N
the non-embedding parameters, plus 12 * layers * attention width * sequence length for attention. Recomputation
by gradient checkpointing is not counted: MFU measures useful work, not hardware activity. Tokens are real tokens,
padding excluded.
"""

from __future__ import annotations

# bf16 dense matmul peaks per device, TFLOP/s, as measured on the project's machines (not the datasheet's 989):
# an H200 reached 790 in a plain torch.matmul loop.
MEASURED_PEAK_TFLOPS = {"H200": 790.0, "H100": 790.0}


def non_embedding_parameters(model) -> int:
    """Parameters that take part in per-token matmuls: all but the input (and untied output) embeddings."""
    skip = {id(p) for p in model.get_input_embeddings().parameters()}
    for name, module in model.named_modules():
        if name.endswith("position_embeddings") or name.endswith("token_type_embeddings"):
            skip.update(id(p) for p in module.parameters())
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:  # the reranker uses two rows of it, a rounding error
        skip.update(id(p) for p in output.parameters())
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def flops_per_token(model, seq_len: float, n_params: int | None = None) -> float:
    config = model.config
    width = getattr(config, "head_dim", None)
    width = width * config.num_attention_heads if width else config.hidden_size
    n = n_params if n_params is not None else non_embedding_parameters(model)
    return 6.0 * n + 12.0 * config.num_hidden_layers * width * seq_len


def device_peak_tflops(configured: float | None) -> float | None:
    """The per-device peak for MFU: the configured one, else a measured figure for a recognised GPU, else None
    (CPUs: MFU is not reported)."""
    if configured:
        return configured
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in MEASURED_PEAK_TFLOPS.items() if key in name), None)
