"""Per-model example streams and batched augmentation.

Each model reads its training examples as an endless stream of seeded per-epoch
permutations. Models given the same order seed and the same examples read identical
batches (the reference AS protocol: a pair differs only in its initialisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class IndexStream:
    """Endless stream of indices: concatenated seeded permutations of ``pool``."""

    def __init__(self, pool: torch.Tensor, seed: int) -> None:
        self.pool = pool
        self.gen = torch.Generator().manual_seed(int(seed))
        self.buf = pool[:0]

    def next(self, size: int) -> torch.Tensor:
        while len(self.buf) < size:
            perm = torch.randperm(len(self.pool), generator=self.gen)
            self.buf = torch.cat([self.buf, self.pool[perm]])
        out, self.buf = self.buf[:size], self.buf[size:]
        return out


def crop_flip(x: torch.Tensor, gen: torch.Generator, padding: int) -> torch.Tensor:
    """Random crop (zero padding ``padding``) + horizontal flip of ``x [B, C, H, W]``.

    Random numbers come from ``gen`` on the CPU so results do not depend on the device.
    """
    b, _, h, w = x.shape
    offs = torch.randint(0, 2 * padding + 1, (b, 2), generator=gen).to(x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offs[:, 0:1] + torch.arange(h, device=x.device)  # [B, H]
    cols = offs[:, 1:2] + torch.arange(w, device=x.device)  # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()
