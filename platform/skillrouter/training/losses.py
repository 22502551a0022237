"""The SkillRouter training objectives, as small modules with the paper's defaults.

- `InfoNCELoss` (bi-encoder): each query against every positive of the batch (in-batch negatives) and every hard
  negative of the batch, temperature 0.05. Optionally masks negatives that score above the positive plus a margin,
  which are more likely unlabelled positives than hard negatives.
- `ListwiseCELoss` (reranker): cross-entropy over [positive, negatives] scores of one group, temperature 1.0.
- `PointwiseBCELoss` (reranker ablation): each (query, skill) pair on its own; the paper's 43.3% against listwise's
  74.0% Hit@1 is why listwise is the default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InfoNCELoss(nn.Module):
    """Contrastive loss of Oord et al. (2018), as used by SkillRouter's encoder (section 4).

    `queries` (B, d) and `positives` (B, d) are unit vectors; `negatives` (B, K, d), optional, are each query's
    hard negatives. The candidates of query i are all B positives and all B*K negatives of the batch; the target is
    positive i."""

    def __init__(self, temperature: float = 0.05, mask_margin: float | None = None):
        super().__init__()
        self.temperature, self.mask_margin = temperature, mask_margin

    def forward(self, queries: torch.Tensor, positives: torch.Tensor,
                negatives: torch.Tensor | None = None) -> torch.Tensor:
        candidates = positives if negatives is None else torch.cat([positives, negatives.flatten(0, 1)])
        scores = queries @ candidates.T  # (B, B + B*K) cosine similarities
        target = torch.arange(len(queries), device=queries.device)
        if self.mask_margin is not None:
            positive = scores.gather(1, target[:, None])
            suspicious = scores > positive + self.mask_margin
            suspicious[target, target] = False
            scores = scores.masked_fill(suspicious, float("-inf"))
        return F.cross_entropy(scores / self.temperature, target)


class ListwiseCELoss(nn.Module):
    """Softmax cross-entropy over each group's scores, the positive in column 0: (B, 1 + K) -> scalar."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        target = torch.zeros(len(scores), dtype=torch.long, device=scores.device)
        return F.cross_entropy(scores / self.temperature, target)


class PointwiseBCELoss(nn.Module):
    """Binary cross-entropy on each pair's logit, the positive in column 0: (B, 1 + K) -> scalar."""

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(scores, labels)
