"""The first-order meta-gradient (``first_order=True``): label path kept, Hessians dropped."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from taskspace.discovery import (
    InnerLearners,
    MetaSettings,
    MetaTrainer,
    TaskEncoder,
    soft_labels,
    symmetric_agreement_loss,
)


def _trainer(ds, *, steps: int = 3, **kw) -> MetaTrainer:
    torch.manual_seed(0)
    enc = TaskEncoder(
        "mlp", in_channels=1, image_size=8, dim=4, num_tasks=4, model_kwargs={"widths": [16]}
    )
    learners = InnerLearners("mlp", in_channels=1, image_size=8, model_kwargs={"widths": [8]})
    s = MetaSettings(
        inner_steps=steps,
        inner_lr=0.5,
        batch_size=16,
        eval_batch_size=24,
        heads_per_step=2,
        uniformity=0.0,
        **kw,
    )
    return MetaTrainer(enc, learners, ds, s, dtype=torch.float64)


def _grad(mt: MetaTrainer) -> torch.Tensor:
    loss, _ = mt.objective([0, 1], step=0)
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, mt.enc.meta_parameters())])


def test_first_order_gradient_is_nonzero_and_points_like_the_full_one(digits):
    """Agreement only (uniformity 0): the first-order meta-gradient reaches the encoder
    through the soft labels and is aligned with the full second-order one; per-step
    checkpointing does not change it."""
    full = _grad(_trainer(digits))
    first = _grad(_trainer(digits, first_order=True))
    first_ckpt = _grad(_trainer(digits, first_order=True, use_checkpoint=True))
    assert float(first.norm()) > 0.25 * float(full.norm()) > 0.0
    assert float(F.cosine_similarity(first, full, dim=0)) > 0.5
    assert not torch.allclose(first, full)
    assert torch.allclose(first, first_ckpt, rtol=1e-12, atol=1e-14)


def test_one_inner_step_first_order_equals_the_full_gradient(digits):
    """With T=1 there is no step-to-step Jacobian to drop: both estimators are exact."""
    full = _grad(_trainer(digits, steps=1))
    first = _grad(_trainer(digits, steps=1, first_order=True))
    assert float(full.norm()) > 1e-3
    assert torch.allclose(first, full, rtol=1e-9, atol=1e-12)


def test_first_order_matches_finite_differences_of_its_definition(digits):
    """The first-order gradient is the derivative of the frozen-trajectory surrogate
    ``S(theta) = L(w_0 - lr sum_t g(w_t*, q_t(theta)))``, where ``w_t*`` are the learners'
    weights along the trajectory at the current ``theta``, held fixed (float64)."""
    g = torch.Generator().manual_seed(0)
    learners = InnerLearners("mlp", in_channels=1, image_size=8, model_kwargs={"widths": [8, 4]})
    p0, b0 = learners.init([3, 4], torch.float64)
    names = list(p0)
    steps, lr, temp = 3, 0.5, 2.0
    idx = torch.randperm(len(digits), generator=g)[: steps * 24 + 32]
    x_all = digits.normalize(digits.images[idx]).double()
    xs = [x_all[t * 24 : (t + 1) * 24].view(2, 12, 1, 8, 8) for t in range(steps)]
    xv = x_all[steps * 24 :]
    theta = (0.3 * torch.randn(64, generator=g, dtype=torch.float64)).requires_grad_(True)

    def labels(th: torch.Tensor) -> list[torch.Tensor]:
        return [soft_labels(x.flatten(2) @ th, temp) for x in xs]  # [2, 12, 2]

    def meta_loss(p: dict, b: dict) -> torch.Tensor:
        lv = learners.forward(p, b, xv, shared=True, train=True)
        return symmetric_agreement_loss(lv[0], lv[1])

    p_t, b_t = learners.unroll(p0, b0, xs, labels(theta), lr, first_order=True)
    analytic_grad = torch.autograd.grad(meta_loss(p_t, b_t), theta)[0]

    def sgd_step(w: dict, b: dict, x: torch.Tensor, q: torch.Tensor) -> dict:
        leaf = {k: v.clone().requires_grad_(True) for k, v in w.items()}
        new = learners.step(leaf, b, x, q, lr, shared=False, create_graph=False)
        return {k: v.detach() for k, v in new.items()}

    # the trajectory w_0 .. w_{T-1} at theta, as plain numbers
    th0 = theta.detach()
    traj, w, b = [], dict(p0), {k: v.clone() for k, v in b0.items()}
    for x, q in zip(xs, labels(th0)):
        traj.append(w)
        w = sgd_step(w, b, x, q)

    def surrogate(th: torch.Tensor) -> float:
        """w_T = w_0 + sum_t (one SGD step from w_t* on q_t(th)) - w_t*."""
        w, bb = dict(p0), {k: v.clone() for k, v in b0.items()}
        for wt, x, q in zip(traj, xs, labels(th)):
            moved = sgd_step(wt, bb, x, q)
            w = {n: w[n] + moved[n] - wt[n] for n in names}
        with torch.no_grad():
            return float(meta_loss(w, bb))

    direction = torch.randn(64, generator=g, dtype=torch.float64)
    eps = 1e-5
    numeric = (surrogate(th0 + eps * direction) - surrogate(th0 - eps * direction)) / (2 * eps)
    analytic = float(analytic_grad @ direction)
    assert abs(numeric) > 1e-3
    assert abs(analytic - numeric) <= 1e-6 * abs(numeric) + 1e-9
