"""Per-task loss masking in MultiTask: a label -1 (MISSING) leaves the example out of its
task's batch mean; a task with no labelled example in a batch contributes 0 (hand
numbers, then through fit_many: such a task's head never moves and the trunk learns from
the other task alone)."""

from __future__ import annotations

import math

import pytest
import torch

from taskspace.engine import (
    Batch,
    CrossEntropy,
    MultiTask,
    Recipe,
    StaticWeights,
    fit_many,
    init_models,
)
from taskspace.engine.objectives import MISSING
from taskspace.errors import TaskspaceError

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"widths": [16, 8]}


def _batch(y: torch.Tensor, w: torch.Tensor | None = None) -> Batch:
    m, b = y.shape[:2]
    return Batch(
        members=list(range(m)),
        idx=torch.arange(m * b).view(m, b),
        x=torch.zeros(b),
        y=y,
        w=w,
        groups=None,
        shared=True,
        step=0,
        active=torch.ones(m, dtype=torch.bool),
        epoch_start=torch.ones(m, dtype=torch.bool),
    )


def test_missing_is_minus_one():
    assert MISSING == -1


def test_ce_mean_over_labelled_examples_only_and_zero_for_an_unlabelled_task():
    # one model, 3 examples, 2 tasks of 2 classes; logits [1, 3, 2 tasks * 2 classes]
    l3 = math.log(3.0)
    logits = torch.tensor([[[0.0, 0.0, 5.0, 1.0], [9.0, -9.0, 0.0, 2.0], [l3, 0.0, 1.0, 1.0]]])
    y = torch.tensor([[[0, MISSING], [MISSING, MISSING], [1, MISSING]]])
    losses = MultiTask().task_losses(logits, _batch(y))
    # task 0: CE(0 | [0, 0]) = log 2, CE(1 | [log 3, 0]) = log 4; mean over these 2
    assert losses.shape == (1, 2)
    assert float(losses[0, 0]) == pytest.approx((math.log(2) + math.log(4)) / 2, abs=1e-6)
    assert float(losses[0, 1]) == 0.0
    # example weights multiply before the mean over the labelled examples
    w = torch.tensor([[2.0, 100.0, 0.5]])
    weighted = MultiTask().task_losses(logits, _batch(y, w))
    expect = (2.0 * math.log(2) + 0.5 * math.log(4)) / 2
    assert float(weighted[0, 0]) == pytest.approx(expect, abs=1e-6)


def test_bce_mean_over_labelled_examples():
    logits = torch.tensor([[[0.0, 3.0], [2.0, -1.0], [0.0, 0.0]]])  # [1, 3, 2 tasks]
    y = torch.tensor([[[1, MISSING], [MISSING, 0], [0, MISSING]]])
    losses = MultiTask(task_loss="bce").task_losses(logits, _batch(y))
    # task 0: BCE(0 -> 1) = BCE(0 -> 0) = log 2; task 1: one example, BCE(-1 -> 0)
    assert float(losses[0, 0]) == pytest.approx(math.log(2), abs=1e-6)
    assert float(losses[0, 1]) == pytest.approx(math.log(1 + math.exp(-1.0)), abs=1e-6)


def test_check_accepts_minus_one_and_refuses_below(digits):
    MultiTask().check(torch.tensor([[[0, MISSING], [1, 0]]]), None)
    with pytest.raises(TaskspaceError, match="-1 for a missing label"):
        MultiTask().check(torch.tensor([[[0, -2], [1, 0]]]), None)
    labels = torch.full((1, len(digits)), MISSING)
    with pytest.raises(TaskspaceError, match="non-negative"):
        fit_many("mlp", digits, labels, Recipe(steps=1), objective=CrossEntropy())


@pytest.mark.parametrize("batched", [True, False])
def test_an_unlabelled_task_moves_nothing(digits, batched):
    """Task 1 labelled nowhere: after SGD steps (momentum) its head rows are the initial
    ones, and every parameter equals a fit where task 1 is labelled but weighted 0."""
    y0 = (torch.as_tensor(digits.classes) % 2).long()
    two = torch.stack([y0, torch.full_like(y0, MISSING)], 1)
    recipe = Recipe(optimizer="sgd", lr=0.1, momentum=0.9, steps=3, batch_size=64)
    kw = dict(seeds=[5], batched=batched, model_kwargs=SMALL)
    ens = fit_many("mlp", digits, two[None], recipe, num_outputs=4, **kw)
    init = init_models("mlp", 4, [5], digits, **SMALL)[0]
    head_w, head_b = ens.params["head.weight"][0], ens.params["head.bias"][0]
    torch.testing.assert_close(head_w[2:], init.head.weight.detach()[2:], rtol=0, atol=0)
    torch.testing.assert_close(head_b[2:], init.head.bias.detach()[2:], rtol=0, atol=0)
    assert float((head_w[:2] - init.head.weight.detach()[:2]).abs().max()) > 1e-4

    # the reference: task 1 labelled but with task weight 0 (same initialisation)
    ref = MultiTask(weighting=StaticWeights([1.0, 0.0]))
    labelled = torch.stack([y0, 1 - y0], 1)
    zero = fit_many("mlp", digits, labelled[None], recipe, objective=ref, num_outputs=4, **kw)
    for k, v in zero.params.items():
        torch.testing.assert_close(ens.params[k], v, rtol=1e-6, atol=1e-7)
