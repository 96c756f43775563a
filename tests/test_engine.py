"""The many-model engine: batched == per-model loop, and weights/masks/orders are real."""

from __future__ import annotations

import copy

import pytest
import torch

from taskspace.engine import Recipe, fit_many, predict_many
from taskspace.errors import TaskspaceError

SMALL = {"widths": (64, 32)}


def _max_rel(a: dict, b: dict) -> float:
    return max(
        float((a[k].float() - b[k].float()).abs().max() / (a[k].float().abs().max() + 1e-12))
        for k in a
    )


def _labels(digits, m: int) -> torch.Tensor:
    """Real (learnable) binary tasks: chaotic random-label training would amplify noise."""
    c = digits.classes
    tasks = [(c % 2), (c < 5).long(), ((c == 0) | (c == 8) | (c == 3)).long(), (c % 3 == 0).long()]
    return torch.stack([tasks[i % len(tasks)] for i in range(m)])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batched_matches_loop(digits, optimizer):
    labels = _labels(digits, 6)
    g = torch.Generator().manual_seed(1)
    weights = torch.rand(6, len(digits), generator=g) + 0.5
    masks = torch.rand(6, len(digits), generator=g) < 0.8
    masks[0] = True  # different pool sizes -> different step counts inside one batch
    recipe = Recipe(
        optimizer=optimizer,
        lr=0.05 if optimizer == "sgd" else 1e-3,
        momentum=0.9,
        weight_decay=1e-4,
        epochs=2,
        batch_size=64,
        schedule="cosine",
        augment=True,
        crop_padding=1,
    )
    kw = dict(
        seeds=[3, 4, 5, 6, 7, 8],
        order_seeds=[0, 0, 1, 2, 3, 4],
        weights=weights,
        masks=masks,
        model_kwargs=SMALL,
    )
    a = fit_many("mlp", digits, labels, recipe, **kw)
    b = fit_many("mlp", digits, labels, recipe, batched=False, **kw)
    tol = 1e-5 if optimizer == "sgd" else 1e-3  # Adam turns ~1e-9 gradient noise into steps
    assert _max_rel(a.params, b.params) < tol
    assert _max_rel(a.buffers, b.buffers) < tol
    pa = predict_many(a, digits, digits.split("heldout")).argmax(-1)
    pb = predict_many(b, digits, digits.split("heldout")).argmax(-1)
    assert (pa == pb).float().mean() > 0.99


ARCHS = {
    "convnet": {"widths": (8, 16, 16)},
    "resnet18": {"width": 8},
    "vit4": {"dim": 16, "depth": 2, "heads": 2, "dim_head": 8, "mlp_dim": 16, "patch_size": 2},
}


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_every_architecture_trains_the_same_batched(digits, name):
    """Convolutions, residual BatchNorm and the ViT's token BatchNorm under vmap give the
    per-model loop's parameters and running statistics."""
    recipe = Recipe(optimizer="sgd", lr=0.02, momentum=0.9, steps=4, batch_size=32)
    kw = dict(seeds=[3, 4, 5], order_seeds=[0, 0, 1], model_kwargs=ARCHS[name])
    a = fit_many(name, digits, _labels(digits, 3), recipe, batched=True, **kw)
    b = fit_many(name, digits, _labels(digits, 3), recipe, batched=False, **kw)
    assert _max_rel(a.params, b.params) < 1e-4
    assert _max_rel(a.buffers, b.buffers) < 1e-4


@pytest.mark.parametrize("shared", [False, True])
def test_hand_written_mlp_step_equals_autograd(shared):
    """Gradients and running statistics of the hand-written MLP step equal those of
    vmap + autograd through the same stacked model (weights, an inactive model, 3 classes)."""
    from torch.func import functional_call, stack_module_state

    from taskspace.engine.batchnorm import use_reduction_batchnorm
    from taskspace.engine.mlp_step import StackedMLPStep, stacked_mlp_layers
    from taskspace.models import create_model

    m, b = 4, 16
    models = []
    for s in range(m):
        torch.manual_seed(s)
        net = create_model("mlp", 3, in_channels=1, image_size=8, widths=(12, 10, 6)).double()
        net.backbone[3].momentum = None if s % 2 else 0.2  # cumulative average too
        models.append(net)
    assert stacked_mlp_layers(models[0]) is not None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 1, 8, 8, generator=g, dtype=torch.float64)
    if not shared:
        x = torch.randn(m, b, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (m, b), generator=g)
    w = torch.rand(m, b, generator=g, dtype=torch.float64)
    active = torch.tensor([True, True, False, True])

    params, buffers = stack_module_state(models)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    start = {k: v.clone() for k, v in buffers.items()}
    for k in ("backbone.3.running_mean", "backbone.3.running_var"):  # visible updates
        start[k] += torch.rand(start[k].shape, generator=g, dtype=torch.float64)
    ref_buf = {k: v.clone() for k, v in start.items()}
    man_buf = {k: v.clone() for k, v in start.items()}
    base = use_reduction_batchnorm(copy.deepcopy(models[1])).to("meta")  # momentum=None one

    def fwd(p: dict, bufs: dict, xx: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, bufs), (xx,))

    logits = torch.vmap(fwd, in_dims=(0, 0, None if shared else 0), randomness="different")(
        params, ref_buf, x
    )
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
    ((ce.view(m, b) * w).mean(1) * active).sum().backward()
    expected = {k: v.grad.clone() for k, v in params.items()}

    StackedMLPStep(stacked_mlp_layers(models[1]))(params, man_buf, x, y, w, active, shared=shared)
    for k in expected:
        torch.testing.assert_close(params[k].grad, expected[k], rtol=1e-10, atol=1e-12)
    assert params["backbone.1.weight"].grad[2].abs().max() == 0  # inactive model
    for k in ("backbone.3.running_mean", "backbone.3.running_var"):
        # the vmap path updates every model (fit_many restores inactive ones afterwards)
        torch.testing.assert_close(man_buf[k][active], ref_buf[k][active], rtol=1e-10, atol=1e-12)
        assert torch.equal(man_buf[k][2], start[k][2])
        assert not torch.equal(man_buf[k][0], start[k][0])
    torch.testing.assert_close(
        man_buf["backbone.3.num_batches_tracked"],
        start["backbone.3.num_batches_tracked"] + active.long(),
    )


def test_training_learns_and_is_deterministic(digits):
    labels = _labels(digits, 2)
    recipe = Recipe(epochs=5, batch_size=64)
    a = fit_many("mlp", digits, labels, recipe, seeds=0, model_kwargs=SMALL)
    b = fit_many("mlp", digits, labels, recipe, seeds=0, model_kwargs=SMALL)
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k])
    held = digits.split("heldout")
    acc = (predict_many(a, digits, held).argmax(-1) == labels[:, held]).float().mean(-1)
    assert acc.min() > 0.85


def test_predict_many_matches_single_models(digits):
    ens = fit_many(
        "convnet",
        digits,
        _labels(digits, 3),
        Recipe(steps=3, batch_size=32),
        seeds=0,
        model_kwargs={"widths": (8, 16)},
    )
    idx = digits.split("test")[:50]
    logits = predict_many(ens, digits, idx, batch_size=16)
    x = digits.normalize(digits.images[idx])
    for m in range(3):
        assert torch.allclose(logits[m], ens.model(m)(x), atol=1e-5)


def test_mask_equals_training_on_the_subset(digits):
    labels = _labels(digits, 1)
    train = digits.split("train")
    mask = torch.zeros(1, len(digits), dtype=torch.bool)
    mask[0, train[::3]] = True
    recipe = Recipe(optimizer="sgd", lr=0.05, epochs=3, batch_size=50)
    a = fit_many("mlp", digits, labels, recipe, seeds=1, masks=mask, model_kwargs=SMALL)
    b = fit_many("mlp", digits, labels, recipe, seeds=1, train_idx=train[::3], model_kwargs=SMALL)
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k])
    c = fit_many("mlp", digits, labels, recipe, seeds=1, model_kwargs=SMALL)
    assert not torch.equal(a.params["head.weight"], c.params["head.weight"])


def test_weights_scale_the_loss(digits):
    """Plain SGD with every weight 2 is plain SGD with twice the learning rate."""
    labels = _labels(digits, 1)
    w = torch.full((1, len(digits)), 2.0)
    a = fit_many(
        "mlp",
        digits,
        labels,
        Recipe(optimizer="sgd", lr=0.01, momentum=0, steps=10, batch_size=64),
        seeds=0,
        weights=w,
        model_kwargs=SMALL,
    )
    b = fit_many(
        "mlp",
        digits,
        labels,
        Recipe(optimizer="sgd", lr=0.02, momentum=0, steps=10, batch_size=64),
        seeds=0,
        model_kwargs=SMALL,
    )
    assert _max_rel(a.params, b.params) < 1e-5
    # zero weight on class 1: the model does not learn to recognise it
    held = digits.split("heldout")
    ones = held[labels[0, held] == 1]
    w0 = (labels == 0).float()
    recipe = Recipe(epochs=3, batch_size=64)
    z = fit_many("mlp", digits, labels, recipe, seeds=0, weights=w0, model_kwargs=SMALL)
    u = fit_many("mlp", digits, labels, recipe, seeds=0, model_kwargs=SMALL)
    acc_z = (predict_many(z, digits, ones).argmax(-1) == 1).float().mean()
    acc_u = (predict_many(u, digits, ones).argmax(-1) == 1).float().mean()
    assert acc_u > 0.85 and acc_z < acc_u - 0.3


def test_shared_order_means_same_batches(digits):
    labels = _labels(digits, 2)
    recipe = Recipe(optimizer="sgd", lr=0.05, steps=15, batch_size=64)
    same = fit_many(
        "mlp", digits, labels[[0, 0]], recipe, seeds=[5, 5], order_seeds=[9, 9], model_kwargs=SMALL
    )
    diff = fit_many(
        "mlp", digits, labels[[0, 0]], recipe, seeds=[5, 5], order_seeds=[9, 10], model_kwargs=SMALL
    )
    assert torch.equal(same.params["head.weight"][0], same.params["head.weight"][1])
    assert not torch.equal(diff.params["head.weight"][0], diff.params["head.weight"][1])


def test_chunking_does_not_change_results(digits):
    labels = _labels(digits, 4)
    recipe = Recipe(optimizer="sgd", lr=0.05, steps=8, batch_size=64)
    a = fit_many("mlp", digits, labels, recipe, seeds=0, model_kwargs=SMALL)
    b = fit_many("mlp", digits, labels, recipe, seeds=0, chunk_size=3, model_kwargs=SMALL)
    assert _max_rel(a.params, b.params) < 1e-5


def test_bad_shapes_raise(digits):
    with pytest.raises(TaskspaceError, match="entries per model"):
        fit_many("mlp", digits, torch.zeros(2, 10, dtype=torch.long), "fast")
    with pytest.raises(TaskspaceError, match="weights must have shape"):
        fit_many(
            "mlp",
            digits,
            torch.zeros(2, len(digits), dtype=torch.long),
            "fast",
            weights=torch.ones(3, len(digits)),
        )
    with pytest.raises(TaskspaceError, match="unknown recipe"):
        fit_many("mlp", digits, torch.zeros(1, len(digits), dtype=torch.long), "slowest")


@pytest.mark.parametrize(
    "cfg",
    [
        dict(optimizer="sgd", momentum=0.9, weight_decay=1e-3),
        dict(optimizer="sgd", momentum=0.9, nesterov=True),
        dict(optimizer="sgd", momentum=0.0),
        dict(optimizer="adam", weight_decay=1e-3),
    ],
)
def test_stacked_optimizer_matches_torch_optim(cfg):
    """Given identical gradients, both code paths of the stacked optimiser (all models in
    step, and one model frozen for a step) follow torch.optim's updates."""
    from taskspace.engine.optim import StackedOptimizer

    recipe = Recipe(lr=0.01, **cfg)
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(3, 5, 4, generator=g)
    stacked = w0.clone().requires_grad_()
    singles = [w0[m].clone().requires_grad_() for m in range(3)]
    make = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.SGD
    extra = (
        {"weight_decay": recipe.weight_decay}
        if recipe.optimizer == "adam"
        else {
            "momentum": recipe.momentum,
            "nesterov": recipe.nesterov,
            "weight_decay": recipe.weight_decay,
        }
    )
    opts = [make([p], lr=recipe.lr, **extra) for p in singles]
    opt = StackedOptimizer([stacked], recipe)
    for step in range(6):
        grad = torch.randn(3, 5, 4, generator=g)
        active = torch.tensor([True, step != 2, True])  # model 1 sits out step 2
        stacked.grad = grad.clone()
        opt.step(torch.full((3,), recipe.lr, dtype=torch.float64), active)
        for m in range(3):
            if active[m]:
                singles[m].grad = grad[m].clone()
                opts[m].step()
    for m in range(3):
        torch.testing.assert_close(stacked[m].detach(), singles[m].detach(), rtol=1e-6, atol=1e-7)


def test_cpu_chunks_are_cache_sized():
    """On a CPU, big models go in small chunks (their stacked state stays ~64 MB) while
    small models still train all at once."""
    from taskspace.engine.fit import default_chunk_size

    cpu = torch.device("cpu")
    assert default_chunk_size(737_000, 128, cpu) == 5  # reference-width digits MLP
    assert default_chunk_size(17_000, 128, cpu) >= 64  # 64-128-64 digits MLP
    assert default_chunk_size(50_000_000, 128, cpu) == 1
