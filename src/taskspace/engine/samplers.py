"""Samplers: which example indices each model reads, step after step.

A sampler is a small description handed to ``fit_many(sampler=...)``; when the fit starts
it turns into one seeded index stream per model (:mod:`taskspace.engine.streams`), seeded
by the model's order seed, so two models with equal order seeds and equal examples read
identical batches whatever the sampler. Robust-training methods differ from ERM mostly
here:

- :class:`Permutation` (the default): a fresh seeded permutation of the model's examples
  every epoch (ERM, the agreement-score pairs);
- :class:`WeightedWithReplacement`: per epoch, ``num_samples`` draws with replacement with
  probability proportional to per-example weights, as
  ``torch.utils.data.WeightedRandomSampler`` (RWY/RWG-style rebalancing);
- :class:`GroupBalanced`: the same with weights ``n / count(group)``, so every group (or
  class, for RWY) is equally represented in expectation (RWG, Group DRO's sampler);
- :class:`IndexLists`: explicit per-model index lists, repeats allowed, permuted each
  epoch (JTT's upsampled set, SUBY/SUBG subsets).

How many steps a model trains is ``recipe.num_steps(epoch_length)`` of its stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from taskspace.engine.batches import FitData
from taskspace.engine.streams import EpochStream, IndexStream, WeightedStream
from taskspace.errors import TaskspaceError

__all__ = ["GroupBalanced", "IndexLists", "Permutation", "Sampler", "WeightedWithReplacement"]


class Sampler:
    """Base class: :meth:`pools` says which examples each model reads (by default
    ``train_idx`` where its mask is true), :meth:`streams` how it reads them.

    ``owns_pools`` is True for samplers that list each model's examples themselves (then
    ``fit_many``'s ``train_idx`` and ``masks`` must be left unset).
    """

    owns_pools: bool = False

    def pools(self, default: list[torch.Tensor], num_examples: int) -> list[torch.Tensor]:
        return default

    def streams(self, data: FitData) -> list[EpochStream]:
        raise NotImplementedError


@dataclass(frozen=True)
class Permutation(Sampler):
    """Seeded per-epoch permutations of each model's examples (``fit_many``'s default)."""

    def streams(self, data: FitData) -> list[EpochStream]:
        return [IndexStream(p, s) for p, s in zip(data.pools, data.order_seeds)]


@dataclass(frozen=True, eq=False)
class IndexLists(Permutation):
    """Explicit example indices per model, repeats allowed; each epoch is a seeded
    permutation of the model's list.

    ``indices``: one ``[L]`` tensor for every model, an ``[M, L]`` tensor, or a sequence
    of M tensors (lengths may differ). JTT's upsampled set lists each error example
    ``lambda_up`` times; a SUBG subset lists each kept example once.
    """

    indices: torch.Tensor | Sequence[torch.Tensor]
    owns_pools = True

    def pools(self, default: list[torch.Tensor], num_examples: int) -> list[torch.Tensor]:
        m, ind = len(default), self.indices
        if isinstance(ind, torch.Tensor):
            ind = [ind] * m if ind.dim() == 1 else list(ind)
        ind = [torch.as_tensor(i).long().flatten() for i in ind]
        if len(ind) != m:
            raise TaskspaceError(f"IndexLists has {len(ind)} index lists for {m} models")
        for k, i in enumerate(ind):
            if len(i) == 0:
                raise TaskspaceError(f"IndexLists: model {k} has an empty index list")
            if int(i.min()) < 0 or int(i.max()) >= num_examples:
                raise TaskspaceError(
                    f"IndexLists: model {k} has indices outside [0, {num_examples})"
                )
        return ind


def _rows(t: torch.Tensor, m: int, n: int, what: str) -> torch.Tensor:
    """``t`` as ``[M, N]``: a ``[N]`` tensor is shared by every model."""
    if t.dim() == 1:
        t = t.expand(m, -1)
    if tuple(t.shape) != (m, n):
        raise TaskspaceError(
            f"{what} must have shape [images] or [models, images] = [{m}, {n}], "
            f"got {tuple(t.shape)}"
        )
    return t


def _weighted_streams(
    data: FitData, weights: list[torch.Tensor], num_samples: int | None
) -> list[EpochStream]:
    """One :class:`WeightedStream` per model; ``weights[m]`` is over model m's pool."""
    out: list[EpochStream] = []
    for m, (pool, w, seed) in enumerate(zip(data.pools, weights, data.order_seeds)):
        if bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
            raise TaskspaceError("sampler weights must be finite and non-negative")
        if not bool((w > 0).any()):
            raise TaskspaceError(f"model {m}: every sampler weight of its examples is zero")
        out.append(WeightedStream(pool, w, seed, num_samples))
    return out


@dataclass(frozen=True, eq=False)
class WeightedWithReplacement(Sampler):
    """Draws with replacement, probability proportional to ``weights`` (``[N]`` or
    ``[M, N]``, over all images; only each model's own examples are drawn).

    One epoch is ``num_samples`` draws (default: the model's number of examples), as
    ``WeightedRandomSampler(weights[pool], num_samples, replacement=True)``.
    """

    weights: torch.Tensor
    num_samples: int | None = None

    def streams(self, data: FitData) -> list[EpochStream]:
        w = _rows(self.weights, data.num_models, data.num_examples, "sampler weights")
        return _weighted_streams(
            data, [w[m, p] for m, p in enumerate(data.pools)], self.num_samples
        )


@dataclass(frozen=True, eq=False)
class GroupBalanced(Sampler):
    """Draws with replacement, example weights ``n / count(group)`` within each model's
    ``n`` examples, so every group present is drawn equally often in expectation.

    ``groups`` (``[N]`` or ``[M, N]`` int) defaults to ``fit_many``'s ``groups``; pass the
    labels for class balance (RWY).
    """

    groups: torch.Tensor | None = None
    num_samples: int | None = None

    def streams(self, data: FitData) -> list[EpochStream]:
        groups = self.groups if self.groups is not None else data.groups
        if groups is None:
            raise TaskspaceError("GroupBalanced needs groups: pass groups= to it or to fit_many")
        g = _rows(groups.long(), data.num_models, data.num_examples, "groups")
        weights = []
        for m, pool in enumerate(data.pools):
            gp = g[m, pool]
            weights.append(len(pool) / torch.bincount(gp).double()[gp])
        return _weighted_streams(data, weights, self.num_samples)
