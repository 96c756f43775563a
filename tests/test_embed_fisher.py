"""Task2Vec Monte-Carlo Fisher, head refit, subset rule and ``embed_tasks`` (section 2).

The estimators are checked against explicit loops in float64: ``per_sample`` against one
``backward`` per sample, ``batch_mean_sq`` against the mean over batches of the squared
batch-mean gradient (the original's loop), both with the labels the estimator drew.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taskspace.data import ImageDataset
from taskspace.embed import fisher as fisher_module
from taskspace.embed.api import embed_task, embed_tasks
from taskspace.embed.fisher import (
    HEAD_WEIGHT_DECAY,
    balanced_draws,
    batches_of,
    cache_inputs,
    first_batches_count,
    fisher_layout,
    fit_heads,
    montecarlo_fisher,
    select_subset,
    task_generator,
)
from taskspace.embed.probe import as_probe, new_head
from taskspace.errors import TaskspaceError
from taskspace.models import create_model
from taskspace.tasks.builders import human_tasks, random_tasks
from taskspace.tasks.taskset import TaskSet

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"max_samples": 96, "head_epochs": 1, "head_draws": 256}


def _probe(train: bool = False) -> nn.Module:
    """A float64 convnet probe (8x8, 1 channel) with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = create_model("convnet", 3, in_channels=1, image_size=8, widths=(3, 5)).double()
    probe = as_probe(model, "convnet")
    with torch.no_grad():
        for m in probe.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return probe.train(train)


def _weights(probe: nn.Module) -> list[nn.Parameter]:
    return [w for _, _, w in fisher_layout(probe, {id(p) for p in probe.parameters()})]


def _per_filter(squares: dict[int, torch.Tensor], count: int) -> np.ndarray:
    blocks = [
        (squares[j] / count).reshape(squares[j].shape[0], -1).mean(1) for j in sorted(squares)
    ]
    return torch.cat(blocks).numpy()


def _setup(skip: int, train: bool = False) -> tuple[nn.Module, torch.Tensor, Any, torch.Tensor]:
    probe = _probe(train)
    x = torch.randn(40, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    labels = torch.stack([torch.arange(40) % 3, torch.arange(40) % 2])
    at_skip, at_last = cache_inputs(probe.eval(), [x[:20], x[20:]], skip)
    heads = fit_heads(at_last, labels, [3, 2], ["a", "b"], epochs=1, draws=128)
    return probe.train(train), at_skip, heads, labels


@pytest.mark.parametrize(("skip", "impl"), [(0, "auto"), (4, "auto"), (0, "vmap"), (4, "vmap")])
def test_per_sample_fisher_equals_a_loop_over_samples(skip: int, impl: str) -> None:
    """``per_sample``: mean over samples of the squared gradient of each sample's own CE
    with the drawn label, per filter, for both heads; skip 4 drops conv1/bn1. Both
    implementations (layer hooks, torch.func vmap) are checked."""
    probe, at_skip, heads, _ = _setup(skip)
    res = montecarlo_fisher(
        probe, batches_of(40, lambda i: at_skip[i], 16), heads, ["a", "b"],
        skip_layers=skip, per_sample_impl=impl,
    )  # fmt: skip
    assert res.num_samples == 40 and res.num_batches == 3
    assert res.layout == (
        [["layers.conv1", "filter", 3], ["layers.bn1", "bn_gamma", 3]] if skip == 0 else []
    ) + [["layers.conv2", "filter", 5], ["layers.bn2", "bn_gamma", 5]]
    for k in range(2):
        head = heads.linear(k)
        squares: dict[int, torch.Tensor] = {}
        for i in range(40):
            out = head(probe.layers[skip:-1](at_skip[i : i + 1]))
            loss = F.cross_entropy(out, res.drawn[k, i : i + 1])
            grads = torch.autograd.grad(loss, _weights(probe), allow_unused=True)
            for j, g in enumerate(grads):
                if g is not None:
                    squares[j] = squares.get(j, 0) + g**2
        want = _per_filter(squares, 40)
        np.testing.assert_allclose(res.hessian[k], want, rtol=1e-10, atol=1e-15)
        assert want.max() > 1e-4  # not a trivially zero comparison


@pytest.mark.parametrize(("skip", "train"), [(0, False), (4, True)])
def test_batch_mean_sq_equals_the_original_loop(skip: int, train: bool) -> None:
    """``batch_mean_sq`` (faithful): per batch the square of the gradient of the batch-mean
    CE, averaged over batches (incl. a partial last batch), also with train-mode BN."""
    probe, at_skip, heads, _ = _setup(skip, train)
    res = montecarlo_fisher(
        probe, batches_of(40, lambda i: at_skip[i], 16), heads, ["a", "b"],
        skip_layers=skip, estimator="batch_mean_sq",
    )  # fmt: skip
    for k in range(2):
        head = heads.linear(k)
        squares: dict[int, torch.Tensor] = {}
        for s in range(0, 40, 16):
            out = head(probe.layers[skip:-1](at_skip[s : s + 16]))
            loss = F.cross_entropy(out, res.drawn[k, s : s + 16])
            for j, g in enumerate(torch.autograd.grad(loss, _weights(probe), allow_unused=True)):
                if g is not None:
                    squares[j] = squares.get(j, 0) + g**2
        np.testing.assert_allclose(res.hessian[k], _per_filter(squares, 3), rtol=1e-10)
    if train:
        return
    # batch_mean_sq estimates about diag F / B: clearly below the per-sample value
    per_sample = montecarlo_fisher(
        probe.eval(), batches_of(40, lambda i: at_skip[i], 16), heads, ["a", "b"],
        skip_layers=skip,
    )  # fmt: skip
    assert per_sample.hessian.sum() > 3 * res.hessian.sum()


def test_bernoulli_per_sample_equals_loop() -> None:
    """``bernoulli``: labels drawn per output from the sigmoids, loss BCE with logits."""
    probe, at_skip, heads, _ = _setup(4)
    res = montecarlo_fisher(
        probe, batches_of(40, lambda i: at_skip[i], 16), heads, ["a", "b"],
        skip_layers=4, bernoulli=True,
    )  # fmt: skip
    assert res.drawn.shape == (2, 40, 3)  # padded to the widest head
    head = heads.linear(1)
    squares: dict[int, torch.Tensor] = {}
    for i in range(40):
        out = head(probe.layers[4:-1](at_skip[i : i + 1]))
        loss = F.binary_cross_entropy_with_logits(out, res.drawn[1, i : i + 1, :2])
        for j, g in enumerate(torch.autograd.grad(loss, _weights(probe), allow_unused=True)):
            if g is not None:
                squares[j] = squares.get(j, 0) + g**2
    np.testing.assert_allclose(res.hessian[1], _per_filter(squares, 40), rtol=1e-10)


def test_per_sample_refuses_train_mode_batchnorm() -> None:
    probe, at_skip, heads, _ = _setup(0, train=True)
    with pytest.raises(TaskspaceError, match="per_sample needs bn_mode=eval"):
        montecarlo_fisher(probe, [at_skip[:8]], heads, ["a", "b"])


def test_head_refit_is_adam_on_class_balanced_draws() -> None:
    """The stacked head fit equals, per task, ``torch.optim.Adam`` (lr 4e-4, wd 1e-4) on
    batches of 64 of its class-balanced draws, from its own seeded ``nn.Linear`` init."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(150, 6, dtype=torch.float64, generator=g)
    y = torch.stack([torch.randint(0, 3, (150,), generator=g), (torch.arange(150) < 20).long()])
    heads = fit_heads(x, y, [3, 2], ["a", "b"], head_fit="adam", epochs=2, draws=640)
    for k, (c, name) in enumerate([(3, "a"), (2, "b")]):
        lin = new_head(6, c, task_generator(0, fisher_module._HEAD_INIT, name)).double()
        opt = torch.optim.Adam(lin.parameters(), lr=4e-4, weight_decay=1e-4)
        draws = task_generator(0, fisher_module._HEAD_DRAWS, name)
        for _ in range(2):
            idx = balanced_draws(y[k], 640, draws)
            for s in range(10):
                ib = idx[s * 64 : (s + 1) * 64]
                loss = F.cross_entropy(lin(x[ib]), y[k, ib])
                opt.zero_grad()
                loss.backward()
                opt.step()
        torch.testing.assert_close(heads.weight[k, :c], lin.weight.detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(heads.bias[k, :c], lin.bias.detach(), rtol=1e-12, atol=1e-14)
    # the draws are class balanced: 20 positives out of 150 still make about half the draws
    share = y[1][balanced_draws(y[1], 10_000, torch.Generator().manual_seed(3))].double().mean()
    assert 0.47 < float(share) < 0.53


def _balanced_objective(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, wd: float
) -> torch.Tensor:
    """The expected loss of the original's head fit, written out: the class-balanced mean
    cross-entropy (each class weighs 1/C) plus the L2 term that Adam's weight decay adds."""
    per_class = [F.cross_entropy(x[y == c] @ w.T + b, y[y == c]) for c in y.unique()]
    return torch.stack(per_class).mean() + wd / 2 * (w.pow(2).sum() + b.pow(2).sum())


def test_head_refit_lbfgs_reaches_the_optimum_whatever_the_init() -> None:
    """``head_fit="lbfgs"`` (default) minimises the Adam fit's expected objective: the
    gradient there is zero (at its default weight decay, 1e-3), the objective at the
    original's 1e-4 is below what the original's Adam run reaches, and the head does not
    depend on the seed of its init (the objective is convex)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 5, dtype=torch.float64, generator=g)
    y = torch.stack([torch.randint(0, 3, (200,), generator=g), (x[:, 0] + x[:, 1] > 1).long()])
    fits = [fit_heads(x, y, [3, 2], ["a", "b"], seed=s) for s in (0, 7)]
    at_1e4 = fit_heads(x, y, [3, 2], ["a", "b"], weight_decay=1e-4)
    adam = fit_heads(x, y, [3, 2], ["a", "b"], head_fit="adam")
    adam7 = fit_heads(x, y, [3, 2], ["a", "b"], head_fit="adam", seed=7)
    # the original's 10 epochs of Adam stop where their init leaves them
    assert float((adam.logits(x) - adam7.logits(x))[0, :, :3].abs().max()) > 1e-2
    assert HEAD_WEIGHT_DECAY == {"adam": 1e-4, "lbfgs": 1e-3}
    for k, c in enumerate([3, 2]):
        w = fits[0].weight[k, :c].clone().requires_grad_(True)
        b = fits[0].bias[k, :c].clone().requires_grad_(True)
        loss = _balanced_objective(x, y[k], w, b, 1e-3)
        gw, gb = torch.autograd.grad(loss, [w, b])
        assert float(torch.cat([gw.flatten(), gb]).abs().max()) < 1e-5
        # the same function whatever the init
        probs = [torch.softmax(f.logits(x)[k, :, :c], dim=-1) for f in fits]
        torch.testing.assert_close(probs[1], probs[0], atol=1e-4, rtol=0)
        best = _balanced_objective(x, y[k], at_1e4.weight[k, :c], at_1e4.bias[k, :c], 1e-4)
        worse = _balanced_objective(x, y[k], adam.weight[k, :c], adam.bias[k, :c], 1e-4)
        assert float(best) < float(worse) - 1e-3
    with pytest.raises(TaskspaceError, match="head_fit must be one of"):
        fit_heads(x, y, [3, 2], ["a", "b"], head_fit="sgd")


def test_lbfgs_head_of_a_separable_task_stays_bounded_at_the_default_decay() -> None:
    """On separable data the optimum at the original's 1e-4 is a head of large norm (its
    Fisher then rests on the few images near the boundary); the default 1e-3 keeps it
    small."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 4, dtype=torch.float64, generator=g)
    y = (x[:, 0] > 0).long()[None]
    norm = {
        wd: float(fit_heads(x, y, [2], ["s"], weight_decay=wd).weight.norm()) for wd in (1e-4, 1e-3)
    }
    assert norm[1e-4] > 1.8 * norm[1e-3]
    assert norm[1e-3] < 10


def test_subset_rule() -> None:
    """``first_batches``: floor(max/64) - 1 unshuffled batches (1000 -> 896, 10000 -> 9920,
    capped by the data); ``random``: seeded, without replacement."""
    assert first_batches_count(1000, 50_000) == 896
    assert first_batches_count(10_000, 50_000) == 9920
    assert first_batches_count(1000, 500) == 500
    idx = torch.arange(5000).flip(0)
    assert torch.equal(select_subset(idx, 1000, "first_batches"), torch.arange(896))
    assert torch.equal(select_subset(idx, None, "random"), torch.arange(5000))
    with pytest.raises(TaskspaceError, match="keeps no batch"):
        select_subset(idx, 100, "first_batches")
    a, b = select_subset(idx, 1000, "random", seed=0), select_subset(idx, 1000, "random", seed=1)
    assert len(a) == 1000 == len(set(a.tolist())) and torch.equal(a, a.sort().values)
    assert torch.equal(a, select_subset(idx, 1000, "random", seed=0)) and not torch.equal(a, b)
    assert a.max() > 2000  # drawn from the whole split, not its start


# ---------------------------------------------------------------------- embed_tasks
def _tasks(digits: ImageDataset) -> TaskSet:
    human = human_tasks(digits.classes, digits.num_classes, max_tasks=2, include_original=True)
    return TaskSet.concat(human, random_tasks(len(digits), 2, seed=3))


def test_batched_embed_tasks_equals_one_task_at_a_time(digits: ImageDataset) -> None:
    """Shared caching, stacked heads and batched Fisher give each task what it gets alone
    (both estimators); ``on_task`` sees every task in order; meta records the run."""
    tasks = _tasks(digits)
    probe = _probe()
    for estimator in ("per_sample", "batch_mean_sq"):
        seen: list[tuple[int, str]] = []
        kw = {"skip_layers": 4, "estimator": estimator, **SMALL}
        together = embed_tasks(
            digits, tasks, probe, on_task=lambda i, e, seen=seen: seen.append((i, e.task)), **kw
        )
        assert seen == list(enumerate(tasks.names))
        for name, emb in zip(tasks.names, together):
            alone = embed_task(digits, tasks, name, probe, **kw)
            np.testing.assert_allclose(emb.hessian, alone.hessian, rtol=1e-9)
            assert emb.meta == alone.meta
    meta = together[2].meta
    assert meta["task"] == "original" and meta["num_classes"] == 10 and meta["kind"] == "original"
    assert meta["num_images"] == meta["num_samples"] == 96
    assert 0.0 <= meta["head_accuracy"] <= 1.0 and meta["subset"] == "random"
    assert not probe.training  # the caller's module mode is restored


def test_embedding_is_deterministic_given_a_seed(digits: ImageDataset) -> None:
    tasks = _tasks(digits).select([0, 3])
    a = embed_tasks(digits, tasks, "convnet", probe_kwargs={"widths": (4,)}, seed=5, **SMALL)
    b = embed_tasks(digits, tasks, "convnet", probe_kwargs={"widths": (4,)}, seed=5, **SMALL)
    c = embed_tasks(digits, tasks, _probe(), seed=6, **SMALL)
    d = embed_tasks(digits, tasks, _probe(), seed=7, **SMALL)
    for x, y in zip(a, b):
        assert np.array_equal(x.hessian, y.hessian) and x.meta == y.meta
    assert not np.allclose(c[0].hessian, d[0].hessian)  # another subset and other draws


def test_faithful_switches_run_the_original_way(digits: ImageDataset) -> None:
    """bn_mode=train, batch_mean_sq, first_batches and the balanced Fisher loader: 896
    cached images, 10,000 draws in 156 batches of 64, per-task fresh probes."""
    tasks = _tasks(digits).select([0])
    (emb,) = embed_tasks(
        digits, tasks, _probe(), skip_layers=4, max_samples=1000, bn_mode="train",
        estimator="batch_mean_sq", subset="first_batches", fisher_sampler="balanced",
        head_epochs=1, head_draws=256,
    )  # fmt: skip
    assert emb.meta["num_images"] == 896
    assert emb.meta["num_samples"] == 156 * 64
    assert emb.meta["bn_mode"] == "train" and emb.dim == 10


def test_head_fit_is_recorded_and_a_misfit_warned(
    digits: ImageDataset, caplog: pytest.LogCaptureFixture
) -> None:
    """A random task on a random probe: the head cannot fit it; meta says so and a warning
    is logged."""
    tasks = random_tasks(len(digits), 1, seed=0)
    with caplog.at_level(logging.WARNING, logger="taskspace.embed.api"):
        (emb,) = embed_tasks(digits, tasks, _probe(), **SMALL)
    assert emb.meta["probe_fits"] is False
    assert emb.meta["head_balanced_accuracy"] < 0.55
    assert "does not fit the task" in caplog.text and "random-000" in caplog.text


def test_bad_tasks_and_options_are_refused_in_one_line(digits: ImageDataset) -> None:
    probe = _probe()
    one_class = TaskSet(torch.zeros(1, len(digits), dtype=torch.long), ["flat"], ["table"])
    cases: list[tuple[dict[str, Any], TaskSet, str]] = [
        ({}, one_class, "single class"),
        ({"max_samples": 20}, _tasks(digits).select([0]), "fewer than the minimum 32"),
        ({"min_samples": 5000}, _tasks(digits).select([0]), "minimum 5000"),
        ({"skip_layers": 9}, _tasks(digits).select([0]), "skip_layers=9 out of range"),
        ({"estimatr": "x"}, _tasks(digits).select([0]), "unknown option(s) estimatr"),
        ({"method": "exact"}, _tasks(digits).select([0]), "method must be one of"),
        ({"bn_mode": "train"}, _tasks(digits).select([0]), "per_sample needs bn_mode=eval"),
    ]
    for kwargs, tasks, message in cases:
        with pytest.raises(TaskspaceError) as err:
            embed_tasks(digits, tasks, probe, **kwargs)
        assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(TaskspaceError) as err:
        embed_tasks(digits, _tasks(digits), nn.Linear(3, 3))
    assert "lacks `layers`" in str(err.value)


def test_variational_gets_cached_inputs_and_fitted_head(
    digits: ImageDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """method=variational hands a fresh probe with the fitted head and the cached
    ``layers[skip]`` inputs of the subset to ``variational.variational_fisher``."""
    import taskspace.embed.variational as variational

    calls: list[dict[str, Any]] = []

    def fake(
        probe: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        *,
        skip_layers: int,
        seed: int,
        bn_mode: str,
        kl_factor: float = 1.0,
    ) -> Any:
        calls.append({"probe": probe, "inputs": inputs, "labels": labels, "seed": seed})
        calls[-1].update(skip_layers=skip_layers, bn_mode=bn_mode, kl_factor=kl_factor)
        return np.full(5, 2.0), np.ones(5), [["layers.conv2", "filter", 5]]

    monkeypatch.setattr(variational, "variational_fisher", fake)
    base = _probe()
    tasks = _tasks(digits).select([0, 1])
    embs = embed_tasks(
        digits, tasks, base, method="variational", skip_layers=4, kl_factor=2.0, **SMALL,
    )  # fmt: skip
    assert [c["inputs"].shape for c in calls] == [(96, 3, 4, 4)] * 2
    assert calls[0]["skip_layers"] == 4 and calls[0]["kl_factor"] == 2.0  # given directly
    assert calls[0]["bn_mode"] == "eval" and embs[0].meta["estimator"] is None
    assert calls[0]["probe"] is not base and calls[0]["probe"] is not calls[1]["probe"]
    assert calls[0]["seed"] != calls[1]["seed"]
    assert embs[0].meta["method"] == "variational" and embs[0].meta["method_opts"] == {
        "kl_factor": 2.0
    }
    assert embs[0].meta["layout"] == [["layers.conv2", "filter", 5]]
    np.testing.assert_array_equal(embs[1].hessian, np.full(5, 2.0))


def test_memory_bound_chunks_do_not_change_the_fisher() -> None:
    """A tiny ``memory_floats`` splits tasks and samples into many chunks; the numbers
    stay those of one chunk (hook and vmap paths alike)."""
    probe, at_skip, heads, _ = _setup(0)
    runs = [
        montecarlo_fisher(
            probe,
            batches_of(40, lambda i: at_skip[i], 20),
            heads,
            ["a", "b"],
            memory_floats=memory,
            per_sample_impl=impl,
        ).hessian  # fmt: skip
        for memory, impl in ((2**25, "auto"), (500, "auto"), (500, "vmap"))
    ]
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-12)
    np.testing.assert_allclose(runs[2], runs[0], rtol=1e-10)
