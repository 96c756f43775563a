"""Eval-mode logits of many stacked models at once, and per-model accuracy."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from taskspace.data.dataset import ImageDataset
from taskspace.engine.ensemble import Ensemble

__all__ = ["accuracy", "predict_many", "stacked_logits"]


@torch.no_grad()
def stacked_logits(
    base: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    dataset: ImageDataset,
    idx: torch.Tensor,
    *,
    batch_size: int = 1024,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Logits ``[M, n, outputs]`` (CPU, float) of the stacked models ``(params,
    buffers)`` on ``dataset.images[idx]``, through ``base`` (an eval-mode module, e.g. on
    the meta device) under vmap."""
    device = next(iter(params.values())).device if device is None else device

    def fwd(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    out = []
    for i0 in range(0, len(idx), batch_size):
        x = dataset.normalize(dataset.images[idx[i0 : i0 + batch_size]].to(device))
        out.append(torch.vmap(fwd, in_dims=(0, 0, None))(params, buffers, x).float().cpu())
    return torch.cat(out, dim=1)


@torch.no_grad()
def predict_many(
    ensemble: Ensemble,
    dataset: ImageDataset,
    idx: torch.Tensor | None = None,
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    chunk_size: int = 64,
) -> torch.Tensor:
    """Eval-mode logits of every model on ``dataset.images[idx]``: ``[M, n, num_outputs]``."""
    device = torch.device(device)
    idx = torch.arange(len(dataset)) if idx is None else idx.long()
    base = ensemble.build().to("meta").eval()
    m_total = len(ensemble)
    out = torch.empty(m_total, len(idx), ensemble.num_outputs)
    if len(idx) == 0:
        return out
    for c0 in range(0, m_total, chunk_size):
        sl = slice(c0, min(c0 + chunk_size, m_total))
        p = {k: v[sl].to(device) for k, v in ensemble.params.items()}
        b = {k: v[sl].to(device) for k, v in ensemble.buffers.items()}
        out[sl] = stacked_logits(base, p, b, dataset, idx, batch_size=batch_size, device=device)
    return out


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-model accuracy of ``logits [M, n, C]`` against ``labels [M, n]`` (or ``[n]``)."""
    pred = logits.argmax(-1)
    if labels.dim() == 1:
        labels = labels[None]
    return (pred == labels).float().mean(-1)
