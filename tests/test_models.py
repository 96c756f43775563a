"""Tests for the model registry: exact reference sizes, the shared interface, vmap, 2nd order."""

from __future__ import annotations

import copy
import sys
import types
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from taskspace.errors import TaskspaceError
from taskspace.models import Classifier, create_model, list_models, register_model
from taskspace.models import registry as registry_module

# Small variants keep the suite fast; the reference sizes are checked by parameter count.
SMALL: dict[str, dict[str, Any]] = {
    "mlp": {"widths": (32, 16)},
    "convnet": {"widths": (8, 16, 16)},
    "resnet18": {"width": 4},
    "resnet50": {"width": 2},
    "vit4": {"dim": 16, "depth": 2, "heads": 2, "dim_head": 8, "mlp_dim": 16},
}


def n_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters())


def test_registry_lists_builtin_models() -> None:
    """Every built-in model is registered under its documented name."""
    assert list_models() == ["convnet", "mlp", "resnet18", "resnet50", "vit4"]


@pytest.mark.parametrize(
    ("name", "expected", "backbone", "feature_dim"),
    [
        ("mlp", 3_823_042, 3_822_912, 64),
        ("resnet18", 11_169_858, 11_168_832, 512),
        ("vit4", 3_186_946, 3_186_432, 256),
        ("resnet50", 23_504_450, 23_500_352, 2048),
    ],
)
def test_reference_parameter_counts(
    name: str, expected: int, backbone: int, feature_dim: int
) -> None:
    """Sizes match the reference exactly (2 outputs, 3x32x32 input)."""
    model = create_model(name, 2)
    assert n_params(model) == expected
    assert n_params(model.backbone) == backbone
    assert model.feature_dim == feature_dim
    assert isinstance(model.head, nn.Linear)
    assert (model.head.in_features, model.head.out_features) == (feature_dim, 2)


def test_mlp_layer_order_matches_reference() -> None:
    """BN after ReLU, no BN after the last hidden layer, all Linears with bias."""
    model = create_model("mlp", 2)
    kinds = [type(m).__name__ for m in model.backbone]
    assert kinds == ["Flatten"] + ["Linear", "ReLU", "BatchNorm1d"] * 3 + ["Linear", "ReLU"]
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize(("channels", "size"), [(1, 8), (3, 32)])
def test_shapes_and_head_of_features(name: str, channels: int, size: int) -> None:
    """Digits-sized and CIFAR-sized inputs give the right shapes; forward == head(features)."""
    torch.manual_seed(0)
    model = create_model(name, 5, in_channels=channels, image_size=size, **SMALL[name])
    x = torch.randn(4, channels, size, size)
    logits = model(x)
    assert logits.shape == (4, 5)
    feats = model.features(x)
    assert feats.shape == (4, model.feature_dim)
    model.eval()
    torch.testing.assert_close(model(x), model.head(model.features(x)), rtol=0, atol=0)


def test_convolutional_models_accept_other_sizes() -> None:
    """Convolutional models are not tied to the image_size they were built for."""
    x = torch.randn(2, 3, 12, 12)
    for name in ("convnet", "resnet18"):
        model = create_model(name, 2, image_size=32, **SMALL[name])
        assert model(x).shape == (2, 2)


def test_convnet_flatten_head_sees_the_whole_feature_map() -> None:
    """``pool="flatten"``: the head reads C*h*w position-specific features of a fixed size."""
    model = create_model("convnet", 2, image_size=32, widths=(8, 16, 16), pool="flatten")
    assert model.feature_dim == 16 * 4 * 4
    x = torch.randn(2, 3, 32, 32)
    assert model.features(x).shape == (2, 256) and model(x).shape == (2, 2)
    with pytest.raises(TaskspaceError, match="built for 32x32"):
        model(torch.randn(2, 3, 12, 12))
    with pytest.raises(TaskspaceError, match="pool must be"):
        create_model("convnet", 2, pool="max")
    digits = create_model(
        "convnet", 2, in_channels=1, image_size=8, widths=(4, 4, 4, 4), pool="flatten"
    )
    assert digits(torch.randn(3, 1, 8, 8)).shape == (3, 2)  # 8 -> 4 -> 2 -> 1 -> 1


def test_unknown_model_lists_available() -> None:
    """A typo names the problem and the valid choices."""
    with pytest.raises(TaskspaceError, match=r"unknown model 'nope'; available: convnet, mlp"):
        create_model("nope", 2)


def test_bad_options_and_inputs_raise_taskspace_error() -> None:
    """User mistakes (options, sizes, inputs) are one-line TaskspaceErrors, not tracebacks."""
    with pytest.raises(TaskspaceError, match="has no option"):
        create_model("mlp", 2, width=3)
    with pytest.raises(TaskspaceError, match="num_outputs"):
        create_model("mlp", 0)
    with pytest.raises(TaskspaceError, match="widths"):
        create_model("convnet", 2, widths=())
    with pytest.raises(TaskspaceError, match="patch_size 5 does not divide"):
        create_model("vit4", 2, patch_size=5)
    model = create_model("mlp", 2, in_channels=1, image_size=8, widths=(8,))
    with pytest.raises(TaskspaceError, match="input channel"):
        model(torch.randn(2, 3, 8, 8))
    with pytest.raises(TaskspaceError, match="8x8 images"):
        model(torch.randn(2, 1, 16, 16))
    with pytest.raises(TaskspaceError, match=r"\[B, C, H, W\]"):
        model(torch.randn(2, 64))


def test_register_model_adds_and_rejects_duplicates() -> None:
    """Plug-in models become available by name; name clashes are refused."""

    @register_model("tiny-test")
    def tiny(num_outputs: int, *, in_channels: int = 3, image_size: int = 32) -> Classifier:
        backbone = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, 4))
        return Classifier(
            backbone,
            4,
            num_outputs,
            in_channels=in_channels,
            image_size=image_size,
            fixed_size=True,
        )

    try:
        assert "tiny-test" in list_models()
        model = create_model("TINY-test", 3, in_channels=1, image_size=8)
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
        with pytest.raises(ValueError, match="already registered"):
            register_model("tiny-test")(lambda n, **kw: tiny(n, **kw))
        with pytest.raises(ValueError, match="invalid model name"):
            register_model("tv:x")
    finally:
        registry_module._REGISTRY.pop("tiny-test", None)


@pytest.mark.parametrize(("name", "per_model_input"), [("mlp", False), ("convnet", True)])
def test_vmap_over_stacked_models_matches_loop(name: str, per_model_input: bool) -> None:
    """Three stacked copies under vmap in train mode == three separate models, BN stats too."""
    torch.manual_seed(0)
    models = [create_model(name, 3, **SMALL[name]).train() for _ in range(3)]
    separate = [copy.deepcopy(m) for m in models]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def call(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor):
        return functional_call(base, (p, b), (x,))

    if per_model_input:
        x = torch.randn(3, 6, 3, 32, 32)
        out = torch.vmap(call, in_dims=(0, 0, 0))(params, buffers, x)
        expected = [m(x[i]) for i, m in enumerate(separate)]
    else:
        x = torch.randn(6, 3, 32, 32)
        out = torch.vmap(call, in_dims=(0, 0, None))(params, buffers, x)
        expected = [m(x) for m in separate]
    assert out.shape == (3, 6, 3)
    for i, m in enumerate(separate):
        torch.testing.assert_close(out[i], expected[i], rtol=1e-5, atol=1e-5)
        for key, buf in m.named_buffers():
            torch.testing.assert_close(buffers[key][i], buf, rtol=1e-5, atol=1e-5)
    key = next(k for k in buffers if k.endswith("running_mean"))
    assert not torch.equal(buffers[key], torch.zeros_like(buffers[key]))
    counts = [v for k, v in buffers.items() if k.endswith("num_batches_tracked")]
    assert counts and all(torch.equal(c, torch.ones(3, dtype=c.dtype)) for c in counts)


def test_backbone_can_be_called_functionally() -> None:
    """``functional_call(model.backbone, ...)`` gives the features, for encoder reuse."""
    model = create_model("convnet", 2, **SMALL["convnet"]).eval()
    state = {k.removeprefix("backbone."): v for k, v in model.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(functional_call(model.backbone, state, (x,)), model.features(x))


@pytest.mark.parametrize("name", ["vit4", "convnet"])
def test_double_backward_through_one_sgd_step(name: str) -> None:
    """Meta-gradient of a post-step loss w.r.t. soft training labels (as in discovery)."""
    torch.manual_seed(0)
    model = create_model(name, 2, **SMALL[name]).train()
    params = dict(model.named_parameters())
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    x_in, x_out = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    soft = torch.rand(8, requires_grad=True)
    targets = torch.stack([soft, 1 - soft], dim=1)

    logits = functional_call(model, (params, buffers), (x_in,))
    inner = F.cross_entropy(logits, targets)
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    stepped = {k: p - 0.1 * g for (k, p), g in zip(params.items(), grads)}
    outer = F.cross_entropy(
        functional_call(model, (stepped, buffers), (x_out,)), torch.randint(0, 2, (8,))
    )
    (meta,) = torch.autograd.grad(outer, soft)
    assert torch.isfinite(meta).all()
    assert meta.abs().sum() > 0


class _FakeTorchvisionNet(nn.Module):
    """Stand-in for a torchvision classifier with its final Linear at ``fc`` or ``classifier``."""

    def __init__(self, num_classes: int, sequential: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        if sequential:
            self.classifier = nn.Sequential(nn.Dropout(0.0), nn.Linear(4, num_classes))
        else:
            self.fc = nn.Linear(4, num_classes)
        self.sequential = sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).mean(dim=(2, 3))
        return self.classifier(h) if self.sequential else self.fc(h)


@pytest.fixture
def fake_torchvision(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Install a fake ``torchvision.models`` recording every ``get_model`` call."""
    calls: list[dict[str, Any]] = []

    def get_model(name: str, **kwargs: Any) -> nn.Module:
        calls.append({"name": name, **kwargs})
        if name not in ("fakenet", "fakeseq"):
            raise ValueError(f"Unknown model {name}")
        return _FakeTorchvisionNet(kwargs["num_classes"], sequential=name == "fakeseq")

    models = types.ModuleType("torchvision.models")
    models.get_model = get_model  # type: ignore[attr-defined]
    package = types.ModuleType("torchvision")
    package.models = models  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    return calls


@pytest.mark.parametrize("name", ["fakenet", "fakeseq"])
@pytest.mark.parametrize("channels", [1, 3])
def test_torchvision_wrapper_with_fake_module(
    fake_torchvision: list[dict[str, Any]], name: str, channels: int
) -> None:
    """The wrapper finds the final Linear (fc or classifier[-1]) and adapts 1 channel."""
    model = create_model(f"tv:{name}", 3, in_channels=channels, image_size=8)
    assert fake_torchvision[-1]["weights"] is None
    assert fake_torchvision[-1]["num_classes"] == 3
    assert model.feature_dim == 4
    assert isinstance(model.head, nn.Linear)
    assert n_params(model) == 3 * 4 * 9 + 4 + 4 * 3 + 3  # head not duplicated
    x = torch.randn(2, channels, 8, 8)
    assert model.features(x).shape == (2, 4)
    torch.testing.assert_close(model(x), model.head(model.features(x)))


def test_torchvision_errors(fake_torchvision: list[dict[str, Any]]) -> None:
    """Unknown names, unsupported channels and pretrained weights are refused clearly."""
    with pytest.raises(TaskspaceError, match="unknown torchvision model 'nope'"):
        create_model("tv:nope", 2)
    with pytest.raises(TaskspaceError, match="1 or 3 input channels"):
        create_model("tv:fakenet", 2, in_channels=4)
    with pytest.raises(TaskspaceError, match="never loaded"):
        create_model("tv:fakenet", 2, weights="DEFAULT")


def test_torchvision_missing_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision is optional: without it, tv: names give an install hint."""
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(TaskspaceError, match="torchvision is not installed; pip install"):
        create_model("tv:resnet18", 2)


def test_real_torchvision_resnet18() -> None:
    """With torchvision installed, a real model is wrapped (1-channel input adapted)."""
    pytest.importorskip("torchvision")
    model = create_model("tv:resnet18", 2, in_channels=1, image_size=32)
    assert model.feature_dim == 512
    x = torch.randn(2, 1, 32, 32)
    assert model(x).shape == (2, 2)
    model.eval()
    torch.testing.assert_close(model(x), model.head(model.features(x)))
