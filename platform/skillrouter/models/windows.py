"""Reading a skill longer than a model's window: overlapping body slices, each headed by name and description.

The full body is the routing signal, and a Qwen3 model reads 2,048 or 4,096 tokens of it. MiniLM reads 256 to
512, while the bundled skills' median is about 700 tokens: truncation hides their later sections, the ones that
name tools and edge cases. With `windows` > 1 the encoder embeds up to that many windows of a skill and averages
them (one vector per skill, so the index is unchanged), and the reranker scores each window and keeps the best
(MaxP). A window is the skill with its body cut to a slice: every window carries the name and description.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from skillrouter.corpus.skill import Skill

OVERLAP = 4  # consecutive windows share a quarter of their body tokens: a sentence cut by one is whole in the next


def body_slices(tokenizer, body: str, room: int, windows: int) -> list[str]:
    """Up to `windows` slices of `body` of at most `room` tokens each, a quarter overlapping, cut at token
    boundaries of the original text (not decoded tokens: the text stays exactly as written). One slice, the whole
    body, when it fits or when `windows` is 1 (the model's truncation then cuts it as before)."""
    if windows <= 1 or room <= 0:
        return [body]
    offsets = tokenizer(body, add_special_tokens=False, return_offsets_mapping=True,
                        verbose=False)["offset_mapping"]  # no "longer than the model" warning: we cut it
    if len(offsets) <= room:
        return [body]
    stride = max(1, room - room // OVERLAP)
    slices = []
    for start in range(0, len(offsets), stride):
        end = min(start + room, len(offsets))
        slices.append(body[offsets[start][0]:offsets[end - 1][1]])
        if end == len(offsets) or len(slices) == windows:
            break
    return slices


def skill_windows(tokenizer, skill: Skill, room: int, windows: int) -> list[Skill]:
    """The skill as windows: copies whose bodies are `body_slices` of its own (the skill itself when it fits)."""
    slices = body_slices(tokenizer, skill.body, room, windows)
    return [skill] if len(slices) == 1 else [replace(skill, body=s) for s in slices]


def windowed(items: Sequence, expand) -> tuple[list, np.ndarray]:
    """`expand(item) -> list` for each item, flattened, with the index of the item each output came from."""
    out, owner = [], []
    for i, item in enumerate(items):
        parts = expand(item)
        out += parts
        owner += [i] * len(parts)
    return out, np.asarray(owner, dtype=np.int64)


def mean_rows(vectors: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """One unit row per owner: the mean of its windows' unit rows, normalised again."""
    if len(vectors) != len(owner):
        raise ValueError(f"expected {len(owner)} embedding rows (windows of {n} skills), got {len(vectors)}")
    if len(owner) == n:
        return vectors
    out = np.zeros((n, vectors.shape[1]), dtype=np.float32)
    np.add.at(out, owner, vectors)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def max_scores(scores: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """One score per owner: its best window's."""
    if len(owner) == n:
        return scores
    out = np.full(n, -np.inf, dtype=np.float64)
    np.maximum.at(out, owner, scores)
    return out
