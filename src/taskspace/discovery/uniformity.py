"""Uniformity loss on the hypersphere (reference ``models/as_uniformity.py``; Wang & Isola).

For a batch ``h_1..h_B`` with ``z_i = h_i / |h_i|``::

    L_unif = log( 2 / (B (B - 1)) * sum_{i<j} exp(-t |z_i - z_j|^2) ) + 4 t

The ``+ 4t`` puts the minimum near 0 (``|z_i - z_j|^2 <= 4``) without changing gradients.
Spreading ``h`` over the sphere decorrelates the labellings of the fixed orthogonal heads,
so this term is discovery's task-diversity penalty (``L_sim``).
"""

from __future__ import annotations

import math

import torch

__all__ = ["uniformity_loss"]


def uniformity_loss(h: torch.Tensor, t: float = 2.0, eps: float = 1e-12) -> torch.Tensor:
    """Uniformity of ``h [B, d]`` (B >= 2); a scalar, lower is more uniform.

    Computed as a log-mean-exp of ``-t |z_i - z_j|^2 = -t (2 - 2 z_i.z_j)`` over pairs
    ``i < j`` (numerically stable, and twice differentiable).
    """
    b = h.shape[0]
    if b < 2:
        raise ValueError(f"uniformity needs a batch of at least 2, got {b}")
    z = h / h.norm(dim=1, keepdim=True).clamp_min(eps)
    sq = (2.0 - 2.0 * (z @ z.t())).clamp_min(0.0)
    iu = torch.triu_indices(b, b, offset=1, device=h.device)
    vals = -t * sq[iu[0], iu[1]]
    return torch.logsumexp(vals, dim=0) - math.log(vals.numel()) + 4.0 * t
