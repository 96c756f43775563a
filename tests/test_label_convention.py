"""The soft-label convention (``softmax(T[-s, s])``) vs the reference's ``softmax(T[s, -s])``.

Flipping the labels is the same as swapping the rows of every learner's output layer, so the
two conventions agree in distribution over initialisations, but not for fixed ones.
"""

from __future__ import annotations

import torch

from taskspace.discovery import InnerLearners, soft_labels, symmetric_agreement_loss


def test_label_flip_changes_the_meta_loss_for_fixed_inits(digits):
    g = torch.Generator().manual_seed(0)
    learners = InnerLearners("mlp", in_channels=1, image_size=8, model_kwargs={"widths": [8]})
    p0, b0 = learners.init([5, 6], torch.float64)
    idx = torch.randperm(len(digits), generator=g)[: 3 * 32 + 64]
    x = digits.normalize(digits.images[idx]).double()
    xs = [x[t * 32 : (t + 1) * 32].view(2, 16, 1, 8, 8) for t in range(3)]
    xv = x[3 * 32 :]
    theta = (0.3 * torch.randn(64, generator=g, dtype=torch.float64)).requires_grad_(True)
    temp = 5.0

    s = xs[0].flatten(2) @ theta
    reference = torch.softmax(temp * torch.stack([s, -s], dim=-1), dim=-1)
    assert torch.allclose(soft_labels(s, temp).flip(-1), reference)

    def meta(p0: dict, flip: bool) -> tuple[float, torch.Tensor]:
        qs = [soft_labels(xt.flatten(2) @ theta, temp) for xt in xs]
        qs = [q.flip(-1) for q in qs] if flip else qs
        p, b = learners.unroll(p0, b0, xs, qs, 0.5)
        lv = learners.forward(p, b, xv, shared=True)
        loss = symmetric_agreement_loss(lv[0], lv[1])
        return float(loss.detach()), torch.autograd.grad(loss, theta)[0]

    ours, grad_ours = meta(p0, flip=False)
    ref, grad_ref = meta(p0, flip=True)
    assert abs(ours - ref) > 1e-3  # same initialisations, flipped labels: other learners
    assert not torch.allclose(grad_ours, grad_ref, rtol=1e-3)
    swapped = {k: v.flip(1) if k.startswith("head.") else v for k, v in p0.items()}
    ref_swapped, grad_swapped = meta(swapped, flip=True)
    assert abs(ours - ref_swapped) < 1e-12  # ... equal once the output units are swapped too
    assert torch.allclose(grad_ours, grad_swapped, rtol=1e-9, atol=1e-14)
