"""Samplers: weighted draws follow their weights, index lists are read exactly, group
balance holds, indices travel with the batch, and batched training equals the loop."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from scipy.stats import chisquare
from torch.utils.data import WeightedRandomSampler

from taskspace.engine import (
    GroupBalanced,
    Hook,
    IndexLists,
    Recipe,
    WeightedWithReplacement,
    fit_many,
)
from taskspace.engine.streams import WeightedStream
from taskspace.errors import TaskspaceError
from test_engine import SMALL, _labels, _max_rel

TINY = {"widths": (16,)}


class RecordBatches(Hook):
    """Test double: keeps every step's example indices and epoch starts, per model."""

    def __init__(self) -> None:
        self.idx: dict[int, list[torch.Tensor]] = {}
        self.epoch_start: dict[int, list[bool]] = {}

    def on_step_end(self, ctx) -> None:  # noqa: ANN001
        for j, m in enumerate(ctx.members):
            if ctx.batch.active[j]:
                self.idx.setdefault(m, []).append(ctx.batch.idx[j].clone())
                self.epoch_start.setdefault(m, []).append(bool(ctx.batch.epoch_start[j]))

    def seen(self, m: int) -> torch.Tensor:
        return torch.cat(self.idx[m])


def test_weighted_stream_draws_what_weighted_random_sampler_draws():
    g = torch.Generator().manual_seed(0)
    pool = torch.randperm(500, generator=g)[:300]
    w = torch.rand(300, generator=g) ** 3
    stream = WeightedStream(pool, w, seed=11)
    wrs = WeightedRandomSampler(
        w, 300, replacement=True, generator=torch.Generator().manual_seed(11)
    )
    assert torch.equal(stream.next(300), pool[torch.tensor(list(wrs))])


def test_weighted_sampler_frequencies_match_the_weights(digits):
    """Chi-square on class counts of 25,600 draws made during training (fixed seeds): the
    weighted expectation fits, the unweighted one is rejected."""
    train = digits.split("train")
    g = torch.Generator().manual_seed(3)
    weights = torch.rand(len(digits), generator=g) * (1 + digits.classes.float())  # skewed
    rec = RecordBatches()
    fit_many(
        "mlp",
        digits,
        _labels(digits, 1),
        Recipe(optimizer="sgd", lr=0.01, steps=100, batch_size=256),
        seeds=0,
        sampler=WeightedWithReplacement(weights),
        hooks=[rec],
        model_kwargs=TINY,
    )
    seen = rec.seen(0)
    assert len(seen) == 100 * 256 and bool(torch.isin(seen, train).all())
    observed = torch.bincount(digits.classes[seen], minlength=10).double()
    cls = digits.classes[train]
    expected = torch.zeros(10, dtype=torch.double).index_add_(0, cls, weights[train].double())
    expected *= len(seen) / expected.sum()
    assert chisquare(observed.numpy(), expected.numpy()).pvalue > 0.01
    uniform = torch.bincount(cls, minlength=10).double() * len(seen) / len(train)
    assert chisquare(observed.numpy(), uniform.numpy()).pvalue < 1e-10


def test_index_lists_train_on_exactly_those_examples_with_repeats(digits):
    """JTT-style upsampling: every listed example is read as often as it is listed, per
    epoch (each epoch a permutation of the list), and nothing else is read."""
    train = digits.split("train")
    base = train[:200]
    errors = base[::10]  # 20 "error set" examples, lambda_up = 5
    upsampled = torch.cat([base, errors.repeat(4)])  # 280 = 7 batches of 40
    other = train[200:320]  # a second model with its own (SUBG-like) list: 3 batches
    rec = RecordBatches()
    recipe = Recipe(optimizer="sgd", lr=0.05, epochs=2, batch_size=40)
    fit_many(
        "mlp",
        digits,
        _labels(digits, 2),
        recipe,
        seeds=[1, 2],
        sampler=IndexLists([upsampled, other]),
        hooks=[rec],
        model_kwargs=TINY,
    )
    assert len(rec.idx[0]) == 14 and len(rec.idx[1]) == 6
    first_epoch = Counter(rec.seen(0)[:280].tolist())
    assert first_epoch == Counter(upsampled.tolist())
    assert first_epoch[int(errors[0])] == 5 and first_epoch[int(base[1])] == 1
    assert Counter(rec.seen(0).tolist()) == Counter(upsampled.repeat(2).tolist())
    assert Counter(rec.seen(1).tolist()) == Counter(other.repeat(2).tolist())
    assert rec.epoch_start[0] == [s in (0, 7) for s in range(14)]
    with pytest.raises(TaskspaceError, match="leave train_idx and masks unset"):
        fit_many(
            "mlp",
            digits,
            _labels(digits, 1),
            recipe,
            sampler=IndexLists(base),
            masks=torch.ones(1, len(digits), dtype=torch.bool),
        )


def test_group_balanced_sampler_balances_groups(digits):
    """A 10%-group is drawn as often as the 90%-group."""
    groups = (digits.classes == 0).long()
    rec = RecordBatches()
    fit_many(
        "mlp",
        digits,
        _labels(digits, 1),
        Recipe(optimizer="sgd", lr=0.01, steps=40, batch_size=256),
        seeds=0,
        groups=groups,
        sampler=GroupBalanced(),
        hooks=[rec],
        model_kwargs=TINY,
    )
    counts = torch.bincount(groups[rec.seen(0)], minlength=2).numpy()
    assert chisquare(counts, [counts.sum() / 2] * 2).pvalue > 0.01
    share = float(groups[digits.split("train")].float().mean())
    assert share < 0.15 and counts[1] / counts.sum() > 0.45


def _pair_weights(d) -> torch.Tensor:  # noqa: ANN001
    w = torch.rand(3, len(d), generator=torch.Generator().manual_seed(0))
    w[1] = w[0]  # models 0 and 1 form a pair: same weights
    return w


SAMPLERS = {
    "weighted": lambda d: WeightedWithReplacement(_pair_weights(d)),
    "group_balanced": lambda d: GroupBalanced(groups=d.classes % 3),
    "index_lists": lambda d: IndexLists(
        [d.split("train")[:300], d.split("train")[:300], torch.cat([d.split("train")[100:400]] * 2)]
    ),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_batched_equals_loop_and_pairs_share_batches(digits, name):
    """Every sampler: the batched engine gives the loop's parameters, and two models with
    equal seeds, order seeds and examples read the same batches (identical parameters)."""
    recipe = Recipe(
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-4,
        epochs=1,
        batch_size=64,
        augment=True,
        crop_padding=1,
    )
    labels = _labels(digits, 3)[[0, 0, 1]]
    kw = dict(
        seeds=[5, 5, 6], order_seeds=[0, 0, 1], sampler=SAMPLERS[name](digits), model_kwargs=SMALL
    )
    a = fit_many("mlp", digits, labels, recipe, batched=True, **kw)
    b = fit_many("mlp", digits, labels, recipe, batched=False, **kw)
    assert _max_rel(a.params, b.params) < 1e-5
    assert _max_rel(a.buffers, b.buffers) < 1e-5
    for k in a.params:
        assert torch.equal(a.params[k][0], a.params[k][1])
    assert not torch.equal(a.params["head.weight"][0], a.params["head.weight"][2])
