"""Per-model example streams and batched augmentation.

Each model reads its training examples as an endless stream of seeded epochs: per-epoch
permutations of its examples (:class:`IndexStream`, the default) or weighted draws with
replacement (:class:`WeightedStream`). Models given the same order seed and the same
examples read identical batches (the reference AS protocol: a pair differs only in its
initialisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class EpochStream:
    """Endless stream of example indices, made of one seeded draw per epoch.

    Subclasses say what one epoch is (:meth:`_epoch`); batches are cut from the
    concatenated epochs, so every batch is full and an epoch's tail opens the next batch.
    ``epoch_length`` indices make one epoch; the state (generator and the unread rest of
    the current epoch) can be saved and restored for a resumed fit.
    """

    def __init__(self, pool: torch.Tensor, seed: int) -> None:
        self.pool = pool
        self.gen = torch.Generator().manual_seed(int(seed))
        self.buf = pool[:0]

    @property
    def epoch_length(self) -> int:
        return len(self.pool)

    def _epoch(self) -> torch.Tensor:
        raise NotImplementedError

    def next(self, size: int) -> torch.Tensor:
        while len(self.buf) < size:
            self.buf = torch.cat([self.buf, self._epoch()])
        out, self.buf = self.buf[:size], self.buf[size:]
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"gen": self.gen.get_state(), "buf": self.buf.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(state["gen"])
        self.buf = state["buf"].clone()


class IndexStream(EpochStream):
    """Concatenated seeded permutations of ``pool`` (which may repeat indices)."""

    def _epoch(self) -> torch.Tensor:
        return self.pool[torch.randperm(len(self.pool), generator=self.gen)]


class WeightedStream(EpochStream):
    """Epochs of ``num_samples`` draws from ``pool`` with replacement, with probability
    proportional to ``weights`` (one per pool entry): ``torch.utils.data.
    WeightedRandomSampler(weights, num_samples, replacement=True)`` with the same
    generator draws the same positions."""

    def __init__(
        self, pool: torch.Tensor, weights: torch.Tensor, seed: int, num_samples: int | None = None
    ) -> None:
        super().__init__(pool, seed)
        self.weights = torch.as_tensor(weights, dtype=torch.double)  # as WeightedRandomSampler
        self.num_samples = len(pool) if num_samples is None else int(num_samples)

    @property
    def epoch_length(self) -> int:
        return self.num_samples

    def _epoch(self) -> torch.Tensor:
        pos = torch.multinomial(self.weights, self.num_samples, True, generator=self.gen)
        return self.pool[pos]


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
