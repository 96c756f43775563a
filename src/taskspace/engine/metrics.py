"""Per-model metrics for evaluation hooks: ``metric(logits, idx, members) -> [M]``.

``logits [M, n, outputs]`` are the eval-mode outputs of the models ``members`` (global
model numbers) on the examples ``idx [n]``. A model with one output is read as a binary
classifier (``logit > 0``); otherwise the prediction is the arg-max.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Accuracy", "Metric", "WorstGroupAccuracy", "predictions"]


class Metric:
    """Base class: one value per model."""

    def __call__(self, logits: torch.Tensor, idx: torch.Tensor, members: list[int]) -> torch.Tensor:
        raise NotImplementedError


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """Predicted classes ``[M, n]``: arg-max, or ``logit > 0`` for a single output."""
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).long()
    return logits.argmax(-1)


def _rows(t: torch.Tensor, idx: torch.Tensor, members: list[int]) -> torch.Tensor:
    """``t[:, idx]`` for the members (``t`` is ``[N]`` for every model or ``[M_all, N]``)."""
    if t.dim() == 1:
        return t[idx].expand(len(members), -1)
    return t[torch.tensor(members)][:, idx]


def _correct(
    logits: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, members: list[int]
) -> torch.Tensor:
    return (predictions(logits) == _rows(labels, idx, members).to(logits.device)).float()


@dataclass(frozen=True, eq=False)
class Accuracy(Metric):
    """Fraction correct against ``labels`` (``[N]`` or ``[models, N]``)."""

    labels: torch.Tensor

    def __call__(self, logits: torch.Tensor, idx: torch.Tensor, members: list[int]) -> torch.Tensor:
        return _correct(logits, self.labels, idx, members).mean(-1)


@dataclass(frozen=True, eq=False)
class WorstGroupAccuracy(Metric):
    """The lowest per-group accuracy over the groups present among the examples
    (``groups``: ``[N]`` or ``[models, N]`` ints)."""

    labels: torch.Tensor
    groups: torch.Tensor

    def __call__(self, logits: torch.Tensor, idx: torch.Tensor, members: list[int]) -> torch.Tensor:
        correct = _correct(logits, self.labels, idx, members)
        g = _rows(self.groups.long(), idx, members).to(correct.device)
        onehot = torch.nn.functional.one_hot(g, int(self.groups.max()) + 1).float()
        counts = onehot.sum(1)  # [M, G]
        acc = torch.bmm(correct.unsqueeze(1), onehot).squeeze(1) / counts.clamp_min(1)
        return acc.masked_fill(counts == 0, float("inf")).amin(-1)
