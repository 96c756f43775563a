"""The variational Fisher estimator: KL term by hand, skip > 0, no mutation, dimension, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from taskspace.embed.variational import noisy_modules, variational_fisher, variational_kl
from taskspace.errors import TaskspaceError

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyProbe(nn.Module):
    """The probe contract by hand: ordered layers, forward(x, start_from), classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.Conv2d(1, 4, 3, padding=1),  # 0: 4 filters
                nn.BatchNorm2d(4),  # 1
                nn.ReLU(),  # 2
                nn.Conv2d(4, 6, 3, padding=1, bias=False),  # 3: 6 filters
                nn.ReLU(),  # 4
                nn.AdaptiveAvgPool2d(1),  # 5
                nn.Flatten(),  # 6
                nn.Linear(6, 5),  # 7: 5 filters
                nn.ReLU(),  # 8
                nn.Linear(5, 3),  # 9: classifier
            ]
        )

    @property
    def classifier(self) -> nn.Module:
        return self.layers[-1]

    def forward(self, x: torch.Tensor, start_from: int = 0) -> torch.Tensor:
        for layer in list(self.layers)[start_from:]:
            x = layer(x)
        return x


def _data(n: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 6, 6, generator=g)
    y = (torch.arange(n) % 3).long()
    x[:, :, :2] += y.view(-1, 1, 1, 1).float()  # learnable
    return x, y


def _probe() -> TinyProbe:
    torch.manual_seed(0)
    p = TinyProbe()
    with torch.no_grad():  # non-trivial BN statistics, so a changed buffer would show
        p.layers[1].running_mean.uniform_(-0.5, 0.5)
        p.layers[1].running_var.uniform_(0.5, 2.0)
    return p


FAST = {"draws_per_epoch": 64, "batch_size": 16}


def test_kl_term_against_hand_computation() -> None:
    w1 = torch.tensor([[1.0, -2.0], [0.5, 3.0], [0.0, 1.0]])  # 3 filters of 2 weights
    w2 = torch.tensor([[[[2.0]], [[1.0]]]])  # 1 filter of 2 weights (conv 2 -> 1, 1x1)
    lv1, ll1 = torch.tensor([0.1, -0.3, 0.7]), torch.tensor(0.2)
    lv2, ll2 = torch.tensor([-1.0]), torch.tensor(-0.5)
    total = 0.0
    for w, lv, ll in ((w1, lv1, ll1), (w2, lv2, ll2)):
        lam2 = math.exp(float(ll))
        flat = w.reshape(w.shape[0], -1)
        for f in range(flat.shape[0]):
            s2 = math.exp(float(lv[f]))
            for wi in flat[f].tolist():
                # per weight: w^2/l^2 + s^2/l^2 + log l^2 - log s^2 - 1
                total += wi**2 / lam2 + s2 / lam2 + float(ll) - math.log(s2) - 1
    for factor in (1.0, 2.0):
        got = variational_kl([w1, w2], [lv1, lv2], [ll1, ll2], kl_factor=factor)
        assert float(got) == pytest.approx(factor / 2 * total, rel=1e-6)
    # one weight, Gaussian KL(N(1, 0.5) || N(0, 2)) = 0.5 (0.5/2 + 1/2 - 1 + ln 4)
    one = variational_kl(
        [torch.tensor([[1.0]])], [torch.tensor([math.log(0.5)])], [torch.tensor(math.log(2.0))]
    )
    assert float(one) == pytest.approx(0.5 * (0.25 + 0.5 - 1 + math.log(4)), rel=1e-6)
    assert float(one) == pytest.approx(0.568147, rel=1e-5)


def test_dimension_layout_and_probe_unchanged() -> None:
    probe = _probe()
    x, y = _data()
    before = {k: v.clone() for k, v in probe.state_dict().items()}
    out_before = probe.eval()(x[:5]).detach().clone()
    probe.train()
    hessian, scale, layout = variational_fisher(probe, x, y, **FAST)
    # conv/linear filters in layers[0:-1]: 4 + 6 + 5
    assert hessian.shape == scale.shape == (15,)
    assert hessian.dtype == np.float64
    assert layout == [
        ["layers.0", "filter", 4],
        ["layers.3", "filter", 6],
        ["layers.7", "filter", 5],
    ]
    assert np.all(hessian > 0) and np.all(np.isfinite(hessian))
    # scale is exp(-loglambda2) repeated per filter
    assert len(set(scale[:4].tolist())) == 1 and len(set(scale[4:10].tolist())) == 1
    assert scale[0] != scale[4]
    # the probe is untouched: weights, BN buffers, mode, no hooks left, same outputs
    after = probe.state_dict()
    assert set(after) == set(before)
    for k in before:
        assert torch.equal(after[k], before[k]), k
    assert probe.training
    assert all(not m._forward_hooks for m in probe.modules())
    assert torch.equal(probe.eval()(x[:5]), out_before)


def test_initial_values_then_training_moves_them() -> None:
    probe = _probe()
    x, y = _data()
    w = probe.layers[3].weight.detach().reshape(6, -1)
    init_h = 1.0 / (0.05 * w.var(dim=1) + 1e-8)
    init_s = 1.0 / (w.pow(2).mean() + 1e-8)
    h, s, _ = variational_fisher(probe, x, y, lr_noise=0.0, **FAST)
    # lr 0 for the noise: the initial values come back (layers[3] = entries 4..9)
    np.testing.assert_allclose(h[4:10], init_h.double().numpy(), rtol=1e-5)
    np.testing.assert_allclose(s[4:10], float(init_s), rtol=1e-5)
    h2, s2, _ = variational_fisher(probe, x, y, **FAST)
    assert np.abs(np.log(h2 / h)).min() > 1e-3  # every filter trained
    assert np.abs(np.log(s2 / s)).min() > 1e-3


def test_skip_layers_with_cached_features() -> None:
    probe = _probe().eval()
    x, y = _data()
    with torch.no_grad():
        feats = probe.layers[2](probe.layers[1](probe.layers[0](x)))  # inputs of layers[3]
    h, s, layout = variational_fisher(probe, feats, y, skip_layers=3, **FAST)
    assert h.shape == (6 + 5,)
    assert [r[0] for r in layout] == ["layers.3", "layers.7"]
    assert [name for name, _ in noisy_modules(probe, 3)] == ["layers.3", "layers.7"]
    # skip past every conv/linear layer: nothing to embed
    with pytest.raises(TaskspaceError, match="no conv/linear"):
        variational_fisher(probe, torch.randn(60, 5), y, skip_layers=8, **FAST)


def test_deterministic_with_seed_and_switches_matter() -> None:
    probe = _probe()
    x, y = _data()
    a = variational_fisher(probe, x, y, seed=3, **FAST)
    b = variational_fisher(probe, x, y, seed=3, **FAST)
    c = variational_fisher(probe, x, y, seed=4, **FAST)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # kl_factor and bn_mode change the result (at the default beta the KL and the data
    # gradients of logvar0 are comparable on this probe: 0.6% apart after 4 steps)
    k2 = variational_fisher(probe, x, y, seed=3, kl_factor=2.0, **FAST)
    assert np.abs(np.log(a[0] / k2[0])).max() > 1e-3
    t = variational_fisher(probe, x, y, seed=3, bn_mode="train", **FAST)
    assert not np.allclose(a[0], t[0])


def test_bad_input() -> None:
    probe = _probe()
    x, y = _data()
    with pytest.raises(TaskspaceError, match="labels"):
        variational_fisher(probe, x, y[:-1], **FAST)
    with pytest.raises(TaskspaceError, match="draws_per_epoch"):
        variational_fisher(probe, x, y, draws_per_epoch=8, batch_size=16)
    with pytest.raises(TaskspaceError, match="contract"):
        variational_fisher(nn.Linear(2, 2), x, y, **FAST)
    with pytest.raises(TaskspaceError, match="3-way classifier"):
        variational_fisher(probe, x, y + 1, **FAST)
    with pytest.raises(TaskspaceError, match="bn_mode"):
        variational_fisher(probe, x, y, bn_mode="frozen", **FAST)


def test_cifar_resnet18_dimension_rule_and_skip_6() -> None:
    from taskspace.embed.probe import as_probe
    from taskspace.models import create_model

    torch.manual_seed(0)
    probe = as_probe(create_model("resnet18", 4))
    # reference section 2: ResNet-18 has 4,800 conv filters, 3,840 from layer3 (skip 6) on
    for skip, dim in ((0, 4800), (6, 3840)):
        assert sum(int(m.weight.shape[0]) for _, m in noisy_modules(probe, skip)) == dim
    # the original's crash: skip > 0 on cached features of layers[6] (layer3's input)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        feats = probe.eval().layers[:6](x)
    y = torch.arange(8) % 4
    h, s, layout = variational_fisher(
        probe, feats, y, skip_layers=6, draws_per_epoch=8, batch_size=8
    )
    assert h.shape == s.shape == (3840,)
    assert layout[0] == ["layers.layer3.0.conv1", "filter", 256]
    assert sum(r[2] for r in layout) == 3840


def test_average_last_is_the_mean_of_the_last_iterates() -> None:
    """``average_last=0.5`` over 4 one-step epochs embeds the mean log-variance of iterates
    3 and 4 (the last iterates of 3- and 4-epoch runs, whose draws and noise are prefixes);
    0 is the last iterate, the original."""
    probe, (x, y) = _probe(), _data()
    run = {"draws_per_epoch": 16, "batch_size": 16, "seed": 2}
    h3, _, _ = variational_fisher(probe, x, y, epochs=3, **run)
    h4, s4, _ = variational_fisher(probe, x, y, epochs=4, **run)
    avg, s_avg, _ = variational_fisher(probe, x, y, epochs=4, average_last=0.5, **run)
    np.testing.assert_allclose(-np.log(avg), (-np.log(h3) - np.log(h4)) / 2, rtol=1e-5)
    assert np.abs(np.log(avg) - np.log(h4)).max() > 1e-4
    last, _, _ = variational_fisher(probe, x, y, epochs=4, average_last=0.0, **run)
    np.testing.assert_array_equal(last, h4)
    with pytest.raises(TaskspaceError, match="average_last must be in"):
        variational_fisher(probe, x, y, epochs=4, average_last=1.0, **run)
