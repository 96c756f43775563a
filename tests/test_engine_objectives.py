"""Objectives: Group DRO's q update by hand, multi-head gradients, BCE multi-task, the
loss-weighting interface (per-task gradients of the trunk), batched == loop for each."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from taskspace.engine import (
    Batch,
    CrossEntropy,
    GroupDRO,
    MultiTask,
    Recipe,
    StaticWeights,
    TaskWeighting,
    fit_many,
    init_models,
)
from taskspace.engine.streams import IndexStream
from test_engine import SMALL, _labels, _max_rel


def _batch(y: torch.Tensor, groups: torch.Tensor, active: list[bool]) -> Batch:
    m, b = y.shape
    return Batch(
        members=list(range(m)),
        idx=torch.arange(m * b).view(m, b),
        x=torch.zeros(b),
        y=y,
        w=None,
        groups=groups,
        shared=True,
        step=0,
        active=torch.tensor(active),
        epoch_start=torch.ones(m, dtype=torch.bool),
    )


def test_group_dro_q_update_matches_hand_computation():
    """q <- q * exp(eta * (l_g + C / sqrt(n_g))), renormalised; absent groups have l_g = 0;
    the loss is sum_g q_g l_g with the new q held constant; inactive models keep q."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (3, 6), generator=g)
    groups = torch.tensor([[0, 0, 1, 1, 1, 0], [2, 1, 0, 2, 2, 2], [0, 1, 2, 0, 1, 2]])
    q0 = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]], dtype=torch.float64)
    counts = torch.tensor([[100.0, 25.0, 4.0]] * 3, dtype=torch.float64)
    state = {"q": q0.clone(), "group_counts": counts}
    eta, adj = 0.1, 0.5
    loss = GroupDRO(eta=eta, adjustment=adj).loss(
        logits, _batch(y, groups, [True, True, False]), state
    )
    for m in range(2):
        ce = [
            -math.log(
                math.exp(logits[m, b, y[m, b]].item())
                / sum(math.exp(v) for v in logits[m, b].tolist())
            )
            for b in range(6)
        ]
        l_g = []
        for k in range(3):
            members = [ce[b] for b in range(6) if groups[m, b] == k]
            l_g.append(sum(members) / len(members) if members else 0.0)
        q = [
            q0[m, k].item() * math.exp(eta * (l_g[k] + adj / math.sqrt(counts[m, k].item())))
            for k in range(3)
        ]
        q = [v / sum(q) for v in q]
        assert state["q"][m].tolist() == pytest.approx(q, rel=1e-12)
        assert loss[m].item() == pytest.approx(sum(a * b for a, b in zip(q, l_g)), rel=1e-12)
    assert l_g[1] > 0 and groups[0].tolist().count(2) == 0  # model 0 has no group-2 example
    assert torch.equal(state["q"][2], q0[2])  # inactive
    # q is held constant: d loss / d logits = q_g * (softmax - onehot) / n_g(batch)
    loss[:2].sum().backward()
    expected = torch.zeros_like(logits)
    for m in range(2):
        for b in range(6):
            k = int(groups[m, b])
            n_k = int((groups[m] == k).sum())
            d = torch.softmax(logits[m, b].detach(), -1) - F.one_hot(y[m, b], 3)
            expected[m, b] = state["q"][m, k] * d / n_k
    torch.testing.assert_close(logits.grad, expected, rtol=1e-12, atol=1e-14)


def test_group_dro_trains_batched_like_the_loop(digits):
    labels = _labels(digits, 3)
    groups = 2 * labels + (digits.classes >= 5).long()  # g = 2y + a
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, steps=15, batch_size=64)
    kw = dict(seeds=[3, 4, 5], groups=groups, model_kwargs=SMALL)
    dro = GroupDRO(eta=0.5, adjustment=1.0)
    a = fit_many("mlp", digits, labels, recipe, objective=dro, batched=True, **kw)
    b = fit_many("mlp", digits, labels, recipe, objective=dro, batched=False, **kw)
    assert _max_rel(a.params, b.params) < 1e-4  # q's exponentials amplify float rounding
    torch.testing.assert_close(a.objective_state["q"], b.objective_state["q"], rtol=1e-5, atol=1e-7)
    q = a.objective_state["q"]
    assert q.shape == (3, 4) and torch.allclose(q.sum(1), torch.ones(3))
    assert float((q - 0.25).abs().max()) > 0.01  # q moved
    erm = fit_many("mlp", digits, labels, recipe, **kw)
    assert _max_rel(a.params, erm.params) > 1e-2


def _first_batch(digits, order_seed: int, size: int) -> torch.Tensor:  # noqa: ANN001
    return IndexStream(digits.split("train"), order_seed).next(size)


@pytest.mark.parametrize("batched", [True, False])
def test_multi_head_gives_each_head_its_own_gradient_and_the_trunk_the_sum(digits, batched):
    """Labels [M, N, T], T heads of 2 classes on one trunk: after one plain SGD step
    (lr 1), each head's rows moved by the gradient its task alone gives, and the trunk by
    the sum of the tasks' gradients."""
    t_count, seeds = 3, [7, 8]
    labels = torch.stack([_labels(digits, 4)[[0, 1, 2]].T, _labels(digits, 4)[[3, 2, 0]].T])
    recipe = Recipe(optimizer="sgd", lr=1.0, momentum=0.0, steps=1, batch_size=64)
    ens = fit_many("mlp", digits, labels, recipe, seeds=seeds, batched=batched, model_kwargs=SMALL)
    assert ens.num_outputs == 2 * t_count and ens.num_tasks == t_count
    start = init_models("mlp", 2 * t_count, seeds, digits, **SMALL)
    for m, net in enumerate(start):
        idx = _first_batch(digits, seeds[m], 64)
        x = digits.normalize(digits.images[idx])
        per_task = []
        for t in range(t_count):
            net.zero_grad()
            logits = net.train()(x)[:, 2 * t : 2 * t + 2]
            F.cross_entropy(logits, labels[m, idx, t]).backward()
            per_task.append({k: p.grad.clone() for k, p in net.named_parameters()})
        moved = {k: p.detach() - ens.params[k][m] for k, p in net.named_parameters()}
        for k in moved:
            if k.startswith("head."):
                for t in range(t_count):
                    rows = slice(2 * t, 2 * t + 2)
                    torch.testing.assert_close(
                        moved[k][rows], per_task[t][k][rows], rtol=1e-4, atol=1e-6
                    )
            else:
                total = sum(g[k] for g in per_task)
                torch.testing.assert_close(moved[k], total, rtol=1e-4, atol=1e-6)


def test_multi_task_bce_and_static_weights_batched_equals_loop(digits):
    labels = torch.stack([_labels(digits, 4)[:3].T, _labels(digits, 4)[1:].T])  # [2, N, 3]
    recipe = Recipe(optimizer="sgd", lr=0.1, momentum=0.9, epochs=2, batch_size=128)
    per_model = torch.tensor([[1.0, 0.0, 1.0], [0.2, 1.0, 1.0]])
    cases = [
        (
            MultiTask(task_loss="bce", weighting=StaticWeights([1.0, 0.5, 2.0])),
            torch.tensor([[1.0, 0.5, 2.0]] * 2),
        ),
        (MultiTask(weighting=StaticWeights(per_model)), per_model),
    ]
    for objective, weights in cases:
        kw = dict(seeds=[1, 2], objective=objective, model_kwargs=SMALL)
        a = fit_many("mlp", digits, labels, recipe, batched=True, **kw)
        b = fit_many("mlp", digits, labels, recipe, batched=False, **kw)
        # one step agrees to ~2e-7; three summed tasks over 19 steps amplify the rounding
        assert _max_rel(a.params, b.params) < 1e-4
        assert a.num_outputs == (3 if objective.task_loss == "bce" else 6)
        torch.testing.assert_close(a.objective_state["task_weights"], weights)
        # every head learns its task, except model 0's head for task 1 (weight 0)
        held = digits.split("heldout")
        acc = (
            _predict_heads(a, digits, held).argmax(-1)
            if objective.task_loss == "ce"
            else (_predict_heads(a, digits, held)[..., 0] > 0).long()
        )
        acc = (acc == labels[:, held]).float().mean(1)
        learnt = weights > 0
        assert bool((acc[learnt] > 0.8).all()), acc
        assert bool((acc[~learnt] < 0.65).all()), acc


def _predict_heads(ens, digits, idx: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    from taskspace.engine import predict_many

    logits = predict_many(ens, digits, idx)
    return logits.view(*logits.shape[:2], ens.num_tasks, -1)


def test_single_task_multitask_equals_cross_entropy(digits):
    labels = _labels(digits, 2)
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, epochs=1, batch_size=64)
    a = fit_many(
        "mlp",
        digits,
        labels,
        recipe,
        seeds=0,
        objective=CrossEntropy(),
        mlp_step=False,
        model_kwargs=SMALL,
    )
    b = fit_many("mlp", digits, labels[..., None], recipe, seeds=0, model_kwargs=SMALL)
    assert _max_rel(a.params, b.params) < 1e-5


class SumOfTaskGradients(TaskWeighting):
    """Test double for gradient-based weighting (GradNorm, PCGrad): takes each task's
    gradient of the shared trunk, writes their sum as the trunk's gradient (what equal
    weights give) and records what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, tuple[int, ...]]] = []
        self.names: list[str] = []

    def backward(self, losses, shared, batch, state):  # noqa: ANN001, ANN201
        grads = shared.task_grads(losses)
        self.seen.append((len(grads), len(grads[0]), tuple(grads[0][0].shape)))
        self.names = shared.names
        active = batch.active.to(losses.dtype)
        (losses.sum(1) * active).sum().backward()  # the heads' gradients
        shared.set_grads([sum(g[p] for g in grads) for p in range(len(shared.tensors))])
        return torch.ones_like(losses)


@pytest.mark.parametrize("batched", [True, False])
def test_weighting_interface_carries_per_task_trunk_gradients(digits, batched):
    labels = torch.stack([_labels(digits, 4)[:3].T] * 3)  # [3, N, 3]
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, steps=6, batch_size=64)
    double = SumOfTaskGradients()
    kw = dict(seeds=[1, 2, 3], batched=batched, model_kwargs=SMALL)
    a = fit_many("mlp", digits, labels, recipe, objective=MultiTask(weighting=double), **kw)
    b = fit_many("mlp", digits, labels, recipe, **kw)
    assert _max_rel(a.params, b.params) < 1e-5
    trunk = [k for k in a.params if not k.startswith("head.")]
    assert double.names == trunk
    trunk_tensors = len(trunk)
    first_weight = a.params["backbone.1.weight"].shape[1:]
    lead = 3 if batched else 1  # [M, ...] on both paths
    assert double.seen[0] == (3, trunk_tensors, (lead, *first_weight))
    assert len(double.seen) == (6 if batched else 18)
