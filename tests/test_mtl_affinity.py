"""TAG lookahead affinity and gradient cosine (CS) against explicit computations.

- TAG: for each source (each task and their sum), deep-copy the network, step its shared
  parameters on the source's loss (plain SGD, the optimiser's SGD-with-momentum step with
  the buffer written out by hand, or Taskonomy's SGD + weight decay), evaluate every
  task's loss on the same batch, ``(1 - L'/L) / lr``; at the first step (no momentum
  buffer) and the second, on the batched and the per-model paths.
- CS: cosines of explicitly computed per-task gradients over the conv kernels only.
- batched == loop through ``task_affinity``; ``every=k`` computes exactly on the k-th
  steps of each epoch and the epoch means are those steps' means; epoch aggregation by
  hand; BN lookahead modes by the running-statistics counter.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from taskspace.engine import Checkpoint, Hook, MultiTask, Recipe, fit_many, init_models
from taskspace.errors import TaskspaceError
from taskspace.mtl.affinity import (
    AffinityHistory,
    GradientCosine,
    TagAffinity,
    affinity_sources,
    aggregate_epochs,
    task_affinity,
)

pytestmark = pytest.mark.usefixtures("one_thread")

MLP = {"widths": [16, 8]}  # Linear -> ReLU -> BatchNorm1d -> Linear -> ReLU
CONV = {"widths": [4, 8]}
SOURCES = [(0,), (1,), (2,), (0, 1, 2)]


def _tasks(digits) -> torch.Tensor:  # noqa: ANN001
    c = torch.as_tensor(digits.classes).long()
    return torch.stack([c % 2, (c < 5).long(), (c % 3 == 0).long()], 1)  # [N, 3]


class _Steps(Hook):
    """Each step's batch indices and a copy of one objective-state entry."""

    def __init__(self, key: str) -> None:
        self.key, self.idx, self.values = key, [], []

    def on_step_end(self, ctx) -> None:  # noqa: ANN001
        self.idx.append(ctx.batch.idx.clone())
        self.values.append(ctx.objective_state[self.key][ctx.members].clone())


def _losses(net, x, y) -> list[torch.Tensor]:  # noqa: ANN001
    logits = net(x)
    return [F.cross_entropy(logits[:, 2 * t : 2 * t + 2], y[:, t]) for t in range(y.shape[1])]


def _shared(net) -> list[tuple[str, torch.nn.Parameter]]:  # noqa: ANN001
    return [(k, p) for k, p in net.named_parameters() if not k.startswith("head.")]


def _explicit_tag(net, x, y, lookahead, lr, mu, wd, buf, only="") -> torch.Tensor:  # noqa: ANN001
    """Z [S, T] by copy-step-evaluate; ``buf`` the shared momentum buffers (None: none);
    only the shared parameters whose names start with ``only`` are stepped."""
    shared = [(k, p) for k, p in _shared(net) if k.startswith(only)]
    old = _losses(net, x, y)
    grads = [torch.autograd.grad(lt, [p for _, p in shared], retain_graph=True) for lt in old]
    z = torch.zeros(len(SOURCES), y.shape[1])
    for s, members in enumerate(SOURCES):
        copy_net = copy.deepcopy(net)
        params = dict(copy_net.named_parameters())
        with torch.no_grad():
            for i, (k, p) in enumerate(shared):
                g = sum(grads[t][i] for t in members)
                if lookahead == "sgd":
                    d = g
                elif lookahead == "taskonomy_bug":
                    d = g + wd * p
                else:
                    d = g + wd * p
                    d = d if buf is None else mu * buf[i] + d
                params[k].copy_(p - lr * d)
            new = _losses(copy_net, x, y)
        for t in range(y.shape[1]):
            z[s, t] = (1 - new[t] / old[t].detach()) / lr
    return z


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("lookahead", ["sgd", "optimizer", "taskonomy_bug"])
def test_tag_equals_copy_step_evaluate(digits, lookahead, batched):
    labels = _tasks(digits)
    lr, mu, wd, seeds = 0.1, 0.9, 0.01, [3, 4]
    recipe = Recipe(optimizer="sgd", lr=lr, momentum=mu, weight_decay=wd, steps=2, batch_size=64)
    rec = _Steps("tag_last")
    objective = MultiTask(weighting=TagAffinity(lookahead=lookahead))
    kw = dict(seeds=seeds, objective=objective, hooks=[rec], batched=batched, model_kwargs=MLP)
    fit_many("mlp", digits, labels[None].expand(2, -1, -1), recipe, **kw)
    for m, seed in enumerate(seeds):
        net = init_models("mlp", 6, [seed], digits, **MLP)[0].train()
        x0, x1 = (digits.normalize(digits.images[rec.idx[s][m]]) for s in (0, 1))
        y0, y1 = labels[rec.idx[0][m]], labels[rec.idx[1][m]]
        z0 = _explicit_tag(net, x0, y0, lookahead, lr, mu, wd, None)
        # step 0 by hand (torch SGD: d = g + wd p, the buffer starts as d)
        params = [p for _, p in net.named_parameters()]
        grads = torch.autograd.grad(sum(_losses(net, x0, y0)), params)
        with torch.no_grad():
            ds = [g + wd * p for p, g in zip(params, grads)]
            for p, d in zip(params, ds):
                p.sub_(lr * d)
        buf = [d for (k, _), d in zip(net.named_parameters(), ds) if not k.startswith("head.")]
        z1 = _explicit_tag(net, x1, y1, lookahead, lr, mu, wd, buf)
        torch.testing.assert_close(rec.values[0][m].float(), z0, rtol=1e-3, atol=2e-4)
        torch.testing.assert_close(rec.values[1][m].float(), z1, rtol=1e-3, atol=2e-4)
    if lookahead == "optimizer":  # the momentum term moved the second step's scores
        plain = _explicit_tag(net, x1, y1, "taskonomy_bug", lr, mu, wd, None)
        assert float((plain - z1).abs().max()) > 0.05


def test_encoder_only_steps_the_named_parameters_only(digits):
    """Taskonomy's ``encoder_only``: the lookahead steps the first Linear only."""
    labels, lr = _tasks(digits), 0.1
    recipe = Recipe(optimizer="sgd", lr=lr, momentum=0.0, steps=1, batch_size=64)
    rec = _Steps("tag_last")
    objective = MultiTask(weighting=TagAffinity(shared=("backbone.1.",)))
    kw = dict(seeds=[3], objective=objective, hooks=[rec], batched=True, model_kwargs=MLP)
    fit_many("mlp", digits, labels[None], recipe, **kw)
    net = init_models("mlp", 6, [3], digits, **MLP)[0].train()
    x, y = digits.normalize(digits.images[rec.idx[0][0]]), labels[rec.idx[0][0]]
    z = _explicit_tag(net, x, y, "sgd", lr, 0.0, 0.0, None, only="backbone.1.")
    torch.testing.assert_close(rec.values[0][0].float(), z, rtol=1e-3, atol=2e-4)
    whole = _explicit_tag(net, x, y, "sgd", lr, 0.0, 0.0, None)
    assert float((whole - z).abs().max()) > 0.05


@pytest.mark.parametrize("batched", [True, False])
def test_cs_equals_cosine_of_explicit_kernel_gradients(digits, batched):
    labels, seeds = _tasks(digits), [3, 4]
    recipe = Recipe(optimizer="sgd", lr=0.1, momentum=0.9, steps=1, batch_size=64)
    rec = _Steps("cs_last")
    objective = MultiTask(weighting=GradientCosine())
    kw = dict(seeds=seeds, objective=objective, hooks=[rec], batched=batched, model_kwargs=CONV)
    fit_many("convnet", digits, labels[None].expand(2, -1, -1), recipe, **kw)
    for m, seed in enumerate(seeds):
        net = init_models("convnet", 6, [seed], digits, **CONV)[0].train()
        x, y = digits.normalize(digits.images[rec.idx[0][m]]), labels[rec.idx[0][m]]
        kernels = [p for _, p in _shared(net) if p.dim() > 1]
        assert len(kernels) == 2  # the two conv kernels; BN weights and biases left out
        flat = [
            torch.cat([g.flatten() for g in torch.autograd.grad(lt, kernels, retain_graph=True)])
            for lt in _losses(net, x, y)
        ]
        expect = torch.zeros(4, 3)
        for s, members in enumerate(SOURCES):
            src = sum(flat[t] for t in members)
            for t in range(3):
                expect[s, t] = F.cosine_similarity(src, flat[t], dim=0)
        got = rec.values[0][m].float()
        torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-5)
        assert torch.equal(got[:3].diagonal(), torch.ones(3, dtype=got.dtype))
        torch.testing.assert_close(got[:3], got[:3].T)
        assert float(got[:3].abs().min()) < 0.9  # not all ones


def test_batched_equals_loop_and_the_result_is_consistent(digits):
    labels = _tasks(digits)
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=128, epochs=2)
    kw = dict(
        model="mlp",
        model_kwargs=MLP,
        recipe=recipe,
        seeds=(0, 1),
        every=2,
        lookahead="optimizer",
        val_split="heldout",
        names=["odd", "low", "three"],
    )
    a = task_affinity(digits, labels, batched=True, **kw)
    b = task_affinity(digits, labels, batched=False, **kw)
    assert a.per_epoch_sources.shape == (2, 2, 4, 3) and a.matrix.shape == (3, 3)
    assert a.sources == ["odd", "low", "three", "odd+low+three"]
    torch.testing.assert_close(a.per_epoch_sources, b.per_epoch_sources, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(a.train_losses, b.train_losses, rtol=1e-4, atol=1e-5)
    assert a.val_losses is not None and b.val_losses is not None
    torch.testing.assert_close(a.val_losses, b.val_losses, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.matrix, a.per_epoch.sum(1).mean(0))
    torch.testing.assert_close(a.per_seed, a.per_epoch.sum(1))
    assert bool((a.train_losses[:, 1] < a.train_losses[:, 0]).all())  # it learns
    assert a.config["lookahead"] == "optimizer" and a.config["every"] == 2
    assert len(a.rows()) == 2 * 2 * 4 * 3


def test_every_k_computes_on_the_kth_steps_of_each_epoch(digits):
    """1,200 training images, batch 128: epoch 1 is steps 0-9, epoch 2 steps 10-18; with
    every=3 the scores are computed at epoch steps 0, 3, 6, 9: global 0, 3, 6, 9, 10, 13,
    16, and each epoch's recorded mean is the mean of its computed steps' scores."""
    labels = _tasks(digits)
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=128, epochs=2)
    computed, last = _Steps("tag_computed"), _Steps("tag_last")
    history = AffinityHistory("tag")
    objective = MultiTask(weighting=TagAffinity(every=3))
    fit_many(
        "mlp",
        digits,
        labels[None],
        recipe,
        seeds=[0],
        objective=objective,
        hooks=[history, computed, last],
        model_kwargs=MLP,
    )
    counts = torch.cat(computed.values).tolist()
    assert len(counts) == 19
    steps = [s for s in range(19) if counts[s] > (counts[s - 1] if s else 0)]
    assert steps == [0, 3, 6, 9, 10, 13, 16]
    per_epoch = history.per_epoch(0)  # [2, 4, 3]
    assert per_epoch.shape == (2, 4, 3)
    z = torch.cat(last.values)  # [19, 4, 3]
    torch.testing.assert_close(per_epoch[0], z[[0, 3, 6, 9]].mean(0))
    torch.testing.assert_close(per_epoch[1], z[[10, 13, 16]].mean(0))
    assert len(history.train_losses[0]) == 2


def test_epoch_aggregation_by_hand():
    per_epoch = torch.tensor([[[1.0, 2.0]], [[3.0, -4.0]], [[5.0, 0.5]]])  # [E=3, S=1, T=2]
    torch.testing.assert_close(aggregate_epochs(per_epoch, "sum"), torch.tensor([[9.0, -1.5]]))
    torch.testing.assert_close(aggregate_epochs(per_epoch, "mean"), torch.tensor([[3.0, -0.5]]))
    dropped = aggregate_epochs(per_epoch, "sum", drop_after_best=1)
    torch.testing.assert_close(dropped, torch.tensor([[4.0, -2.0]]))
    torch.testing.assert_close(
        aggregate_epochs(per_epoch, "mean", drop_after_best=2), torch.tensor([[1.0, 2.0]])
    )
    seeds = torch.stack([per_epoch, 2 * per_epoch])  # [K=2, E, S, T]
    torch.testing.assert_close(aggregate_epochs(seeds, "sum")[1], torch.tensor([[18.0, -3.0]]))
    with pytest.raises(TaskspaceError, match="leaves no epoch"):
        aggregate_epochs(per_epoch, "sum", drop_after_best=3)
    with pytest.raises(TaskspaceError, match="epoch_agg"):
        aggregate_epochs(per_epoch, "max")


@pytest.mark.parametrize("batched", [True, False])
def test_bn_lookahead_functional_leaves_running_stats(digits, batched):
    """One step, 4 sources: train mode counts 1 forward (functional lookahead) or 1 + 4
    (Taskonomy's in-place train-mode lookahead)."""
    labels = _tasks(digits)
    recipe = Recipe(optimizer="sgd", lr=0.05, steps=1, batch_size=64)
    counts = {}
    for mode in ("functional", "train_mode_mutating"):
        objective = MultiTask(weighting=TagAffinity(bn_lookahead=mode))
        ens = fit_many(
            "mlp",
            digits,
            labels[None],
            recipe,
            seeds=[0],
            objective=objective,
            batched=batched,
            model_kwargs=MLP,
        )
        counts[mode] = int(ens.buffers["backbone.3.num_batches_tracked"][0])
    assert counts == {"functional": 1, "train_mode_mutating": 5}


def test_sources_and_bad_input(digits):
    assert affinity_sources(3, 1) == SOURCES
    assert affinity_sources(3, 0) == SOURCES[:3]
    assert len(affinity_sources(4, -1)) == 15
    labels = _tasks(digits)
    with pytest.raises(TaskspaceError, match=r"\[images, tasks\]"):
        task_affinity(digits, labels.T)
    with pytest.raises(TaskspaceError, match="at least 2 tasks"):
        task_affinity(digits, labels[:, :1])
    with pytest.raises(TaskspaceError, match="kind"):
        task_affinity(digits, labels, kind="hoa")  # type: ignore[arg-type]
    with pytest.raises(TaskspaceError, match="mirrors SGD"):
        task_affinity(digits, labels, lookahead="optimizer", recipe="fast")
    with pytest.raises(TaskspaceError, match="lookahead"):
        TagAffinity(lookahead="adam")  # type: ignore[arg-type]
    with pytest.raises(TaskspaceError, match="every"):
        GradientCosine(every=0)
    with pytest.raises(TaskspaceError, match="no shared parameter starts with"):
        objective = MultiTask(weighting=TagAffinity(shared=("encoder.",)))
        fit_many(
            "mlp", digits, labels[None], Recipe(steps=1), objective=objective, model_kwargs=MLP
        )


class _Crash(Hook):
    """Stops the fit after step ``step`` (like a killed job)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, ctx) -> None:  # noqa: ANN001
        if ctx.step == self.step:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_to_the_same_affinities(digits, tmp_path):
    """Killed after step 9 (an epoch end), checkpointed every 4 steps: the rerun continues
    from step 8 with the affinity state and history of the checkpoint."""
    labels = _tasks(digits)
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=128, epochs=2)
    kw = dict(model="mlp", model_kwargs=MLP, recipe=recipe, seeds=(0, 1), batched=True)
    whole = task_affinity(digits, labels, **kw)
    path = tmp_path / "fit.ckpt"
    with pytest.raises(KeyboardInterrupt):
        task_affinity(digits, labels, hooks=[_Crash(9), Checkpoint(path, 4)], **kw)
    resumed = task_affinity(digits, labels, hooks=[Checkpoint(path, 4)], **kw)
    torch.testing.assert_close(resumed.per_epoch_sources, whole.per_epoch_sources, rtol=0, atol=0)
    torch.testing.assert_close(resumed.train_losses, whole.train_losses, rtol=0, atol=0)
