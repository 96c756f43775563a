"""What a fit trains on (:class:`FitData`) and what one step sees (:class:`Batch`).

A batch carries the example indices it was gathered from, so an objective or a hook knows
which examples (and which groups) each model holds: JTT keys its error set by index, Group
DRO needs each example's group. :class:`Batcher` draws every model's next batch from its
index stream (a sampler's output) and gathers inputs, labels, weights and groups with one
index gather each, the data staying one tensor on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.engine.recipe import Recipe
from taskspace.engine.streams import EpochStream, crop_flip

__all__ = ["Batch", "Batcher", "FitData"]


@dataclass(frozen=True)
class FitData:
    """Everything a sampler or an objective may read when a fit starts.

    ``labels`` is ``[M, N]`` (or ``[M, N, T]`` for T tasks), ``groups`` and ``weights``
    ``[M, N]`` (groups may also be ``[M, N, T]``) or None, ``pools[m]`` model m's training
    indices (``train_idx`` where its mask is true), ``order_seeds[m]`` its data-order seed.
    """

    labels: torch.Tensor
    groups: torch.Tensor | None
    weights: torch.Tensor | None
    pools: list[torch.Tensor]
    order_seeds: list[int]

    @property
    def num_models(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[1])


@dataclass
class Batch:
    """One optimiser step's data for the models ``members`` (global model numbers).

    ``idx [M, B]`` are the example indices (CPU); ``x`` the inputs, ``[B, ...]`` when every
    member reads the same batch (``shared``) else ``[M, B, ...]``; ``y [M, B]`` (or
    ``[M, B, T]``), ``w [M, B]`` and ``groups [M, B]`` are on the training device.
    ``active [M]`` says which members still train at this ``step`` (a model with fewer
    examples finishes earlier) and ``epoch_start [M]`` which members begin a new epoch with
    this step (step 0, and the first step after an epoch's last example was read).
    """

    members: list[int]
    idx: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor | None
    groups: torch.Tensor | None
    shared: bool
    step: int
    active: torch.Tensor
    epoch_start: torch.Tensor

    def select(self, j: int) -> Batch:
        """Member ``j``'s part of the batch, as a one-model batch (``x`` is ``[B, ...]``)."""
        one = slice(j, j + 1)
        return replace(
            self,
            members=[self.members[j]],
            idx=self.idx[one],
            x=self.x if self.shared else self.x[j],
            y=self.y[one],
            w=None if self.w is None else self.w[one],
            groups=None if self.groups is None else self.groups[one],
            shared=True,
            active=self.active[one],
            epoch_start=self.epoch_start[one],
        )


class Batcher:
    """Draws each model's next batch from its stream: indices, inputs, labels, weights,
    groups; augmentation (crop + flip) per model, seeded by its order seed."""

    def __init__(
        self,
        dataset: ImageDataset,
        images: torch.Tensor,
        data: FitData,
        streams: Sequence[EpochStream],
        recipe: Recipe,
        device: torch.device,
    ) -> None:
        self.dataset, self.images, self.data = dataset, images, data
        self.labels, self.weights, self.groups = data.labels, data.weights, data.groups
        self.recipe, self.device = recipe, device
        self.order_seeds = data.order_seeds
        self.streams = list(streams)
        self.epoch_lengths = torch.tensor([s.epoch_length for s in self.streams])
        self._fresh = [s.state_dict() for s in self.streams]
        # augmentation draws follow the order seed, so a pair sharing batches shares crops too
        self.aug_gens = [torch.Generator().manual_seed(10_007 * s + 1) for s in self.order_seeds]

    def reset(self, members: Sequence[int]) -> None:
        """Rewind ``members`` to their first batch (a chunk restarted on another path)."""
        for m in members:
            self.streams[m].load_state_dict(self._fresh[m])
            self.aug_gens[m].manual_seed(10_007 * self.order_seeds[m] + 1)

    def draw(self, members: Sequence[int], step: int, active: torch.Tensor) -> Batch:
        """Next batch of every member; ``x`` is shared (vmap broadcasts it) when all members
        read the same examples with the same order seed."""
        b = self.recipe.batch_size
        idx = torch.stack([self.streams[m].next(b) for m in members])  # [M, B] CPU
        shared = len({self.order_seeds[m] for m in members}) == 1 and bool((idx == idx[0]).all())
        if shared:
            x = self._inputs(idx[0], members[0])
            if self.recipe.augment:
                for other in members[1:]:
                    self._advance_aug(other)  # keep every member's generator in step
        elif self.recipe.augment:
            x = torch.stack([self._inputs(idx[r], m) for r, m in enumerate(members)])
        else:  # one gather and one normalisation for all members
            x = self.dataset.normalize(self.images[idx.to(self.images.device)])
        mem = torch.tensor(list(members))
        y = self.labels[mem[:, None], idx].to(self.device)
        w = None if self.weights is None else self.weights[mem[:, None], idx].to(self.device)
        g = None if self.groups is None else self.groups[mem[:, None], idx].to(self.device)
        n = self.epoch_lengths[mem]
        epoch_start = (step * b) // n > ((step - 1) * b) // n
        return Batch(list(members), idx, x, y, w, g, shared, step, active, epoch_start)

    def _inputs(self, idx: torch.Tensor, member: int) -> torch.Tensor:
        x = self.dataset.normalize(self.images[idx.to(self.images.device)])
        if self.recipe.augment:
            x = crop_flip(x, self.aug_gens[member], self.recipe.crop_padding)
        return x

    def _advance_aug(self, m: int) -> None:
        b = self.recipe.batch_size
        torch.randint(0, 2 * self.recipe.crop_padding + 1, (b, 2), generator=self.aug_gens[m])
        torch.rand(b, generator=self.aug_gens[m])

    def state_dict(self) -> dict:
        return {
            "streams": [s.state_dict() for s in self.streams],
            "aug": [g.get_state() for g in self.aug_gens],
        }

    def load_state_dict(self, state: dict) -> None:
        for s, st in zip(self.streams, state["streams"]):
            s.load_state_dict(st)
        for g, st in zip(self.aug_gens, state["aug"]):
            g.set_state(st)
