"""Task2Vec probes and embeddings: the probe contract, adapters, loading, the ResNet-18
embedding dimension of reference section 2, storage and the comparability check."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from taskspace.data import ImageDataset
from taskspace.embed.api import embed_tasks
from taskspace.embed.embedding import (
    COMPARE_KEYS,
    Embedding,
    check_comparable,
    load_embeddings,
    save_embeddings,
)
from taskspace.embed.probe import (
    Probe,
    as_probe,
    fresh_probe,
    load_probe,
    probe_digest,
    run_layers,
)
from taskspace.engine.ensemble import Ensemble
from taskspace.errors import TaskspaceError
from taskspace.models import create_model
from taskspace.tasks.builders import human_tasks

pytestmark = pytest.mark.usefixtures("one_thread")

RESNET_LAYOUT = [
    "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool",
    "flatten", "fc",
]  # fmt: skip


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# ---------------------------------------------------------------------- adapters
def test_cifar_resnet18_probe_layout_and_filter_count() -> None:
    """The registry ResNet-18 has the original's layer list (skip 6 = layer3), its probe
    computes the model's logits, and it has 4,800 conv filters (downsample convs included)
    and 4,800 BN channels, the numbers behind section 2's 9,600 / 7,680."""
    torch.manual_seed(0)
    model = create_model("resnet18", 10).eval()
    probe = as_probe(model, "resnet18")
    assert list(probe.layers._modules) == RESNET_LAYOUT
    assert probe.layers[6] is model.backbone.layer3
    assert probe.classifier is model.head
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(probe(x), model(x), atol=1e-6)
    h = run_layers(probe, x, 0, 6)
    assert torch.allclose(probe(h, start_from=6), model(x), atol=1e-6)
    convs = [m for m in probe.modules() if isinstance(m, nn.Conv2d)]
    assert sum(m.out_channels for m in convs) == 4800
    assert sum(m.out_channels for m in convs if m.kernel_size == (1, 1)) == 128 + 256 + 512
    bns = [m for m in probe.modules() if isinstance(m, nn.BatchNorm2d)]
    assert sum(m.num_features for m in bns) == 4800
    late = [m for m in probe.layers[6:].modules() if isinstance(m, nn.Conv2d)]
    assert sum(m.out_channels for m in late) == 3840


@pytest.mark.parametrize(
    ("name", "kwargs", "channels", "size", "n_layers"),
    [
        ("convnet", {"widths": (4, 8)}, 1, 8, 10),
        ("convnet", {"widths": (4, 8), "pool": "flatten"}, 3, 8, 10),
        ("mlp", {"widths": (16, 8)}, 1, 8, 7),
        ("vit4", {"dim": 16, "depth": 2, "heads": 2, "dim_head": 8, "mlp_dim": 16}, 3, 8, 5),
        ("resnet50", {"width": 2}, 3, 8, 11),
    ],
)
def test_registry_adapters_compose_to_forward(
    name: str, kwargs: dict, channels: int, size: int, n_layers: int
) -> None:
    """Every registry model's probe has the expected number of layers, composes to the
    model's forward, and ``forward(x, start_from=k)`` continues from ``layers[k]``'s input."""
    torch.manual_seed(0)
    model = create_model(name, 3, in_channels=channels, image_size=size, **kwargs).eval()
    probe = as_probe(model)
    assert len(probe.layers) == n_layers
    assert isinstance(probe.classifier, nn.Linear) and probe.classifier is model.head
    x = torch.randn(3, channels, size, size)
    assert torch.allclose(probe(x), model(x), atol=1e-5)
    for k in (1, n_layers - 2):
        assert torch.allclose(probe(run_layers(probe, x, 0, k), start_from=k), model(x), atol=1e-5)


class _UserProbe(nn.Module):
    """A user module already meeting the contract (like the original's ProbeNetwork)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(3, 2)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    @property
    def layers(self) -> list[nn.Module]:
        return [self.conv, self.pool, self.fc]

    @property
    def classifier(self) -> nn.Linear:
        return self.fc

    def forward(self, x: torch.Tensor, start_from: int = 0) -> torch.Tensor:
        for layer in self.layers[start_from:]:
            x = layer(x)
        return x


def test_user_module_with_contract_is_used_as_is_and_gets_a_fresh_head() -> None:
    probe = _UserProbe()
    assert as_probe(probe) is probe
    fresh = fresh_probe(probe, 5, torch.Generator().manual_seed(0))
    assert fresh.classifier.out_features == 5 and fresh.fc is fresh.classifier
    assert probe.classifier.out_features == 2  # the original is untouched
    assert fresh(torch.randn(2, 1, 5, 5)).shape == (2, 5)
    assert probe_digest(fresh) == probe_digest(probe)  # the head is not part of the digest
    with torch.no_grad():
        fresh.conv.weight.add_(1.0)
    assert probe_digest(fresh) != probe_digest(probe)


@pytest.mark.parametrize(
    "module", [nn.Conv2d(1, 2, 3), nn.Sequential(nn.Flatten(), nn.Linear(4, 2))]
)
def test_module_without_contract_is_refused_in_one_line(module: nn.Module) -> None:
    with pytest.raises(TaskspaceError) as err:
        as_probe(module)
    text = _one_line(err)
    assert "lacks `layers` / `forward(x, start_from=)` / `classifier`" in text


def test_torchvision_resnet_probe_starts_layer3_at_skip_6() -> None:
    """``tv:resnet18`` (skipped without torchvision): the original's layer list."""
    pytest.importorskip("torchvision")
    probe = load_probe("tv:resnet18", num_classes=3, in_channels=3, image_size=32)
    assert list(probe.layers._modules) == RESNET_LAYOUT
    convs = [m for m in probe.modules() if isinstance(m, nn.Conv2d)]
    assert sum(m.out_channels for m in convs) == 4800


def test_timm_name_without_timm_is_one_line() -> None:
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(TaskspaceError) as err:
            load_probe("timm:resnet18")
        assert "timm is not installed" in _one_line(err)
    else:
        probe = load_probe("timm:resnet18", num_classes=3)
        assert list(probe.layers._modules)[6] == "layer3"


# ---------------------------------------------------------------------- loading
def test_load_probe_from_checkpoint_and_weights_files(tmp_path: Path) -> None:
    """An ``Ensemble`` checkpoint and a local weights file (safetensors or torch.save)
    give the trained trunk: same digest as the module they were saved from."""
    torch.manual_seed(0)
    model = create_model("convnet", 4, in_channels=1, image_size=8, widths=(4, 8))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    want = probe_digest(as_probe(model))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = {k: v[None] for k, v in state.items() if k in dict(model.named_parameters())}
    buffers = {k: v[None] for k, v in state.items() if k not in params}
    ens = Ensemble("convnet", 4, 1, 8, {"widths": [4, 8]}, params, buffers)
    ens.save(tmp_path / "ckpt")
    assert probe_digest(load_probe(str(tmp_path / "ckpt.json"))) == want
    assert load_probe(str(tmp_path / "ckpt")).probe_name == "convnet"

    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pt")
    for file in ("w.safetensors", "w.pt"):
        probe = load_probe(
            "convnet", 2, in_channels=1, image_size=8, weights=tmp_path / file, widths=(4, 8)
        )
        assert probe_digest(probe) == want
        assert probe.classifier.out_features == 2  # head tensors dropped, a new head
    with pytest.raises(TaskspaceError) as err:
        load_probe("convnet", 2, in_channels=1, image_size=8, weights=tmp_path / "w.pt")
    assert "does not fit the probe" in _one_line(err)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TaskspaceError) as err:
        load_probe("convnet", 2, weights=tmp_path / "bad.pt")
    assert "cannot read weights file" in _one_line(err)
    with pytest.raises(TaskspaceError) as err:
        load_probe("no_such_model")
    assert "unknown model" in _one_line(err)


# ---------------------------------------------------------------------- dimension
@pytest.mark.parametrize(("skip", "dim"), [(0, 9600), (6, 7680)])
def test_resnet18_mc_embedding_dimension_follows_section_2(
    digits: ImageDataset, skip: int, dim: int
) -> None:
    """MC embedding of the registry ResNet-18: conv filters + BN channels of
    ``layers[skip:-1]`` (9,600 at skip 0, 7,680 at skip 6), the head excluded, in module
    order, scale ones."""
    tasks = human_tasks(digits.classes, digits.num_classes, max_tasks=1, include_original=False)
    (emb,) = embed_tasks(
        digits, tasks, "resnet18", skip_layers=skip, max_samples=64, estimator="batch_mean_sq",
        head_epochs=1, head_draws=64,
    )  # fmt: skip
    assert emb.dim == dim and emb.hessian.dtype == np.float64
    assert np.array_equal(emb.scale, np.ones(dim))
    layout = emb.meta["layout"]
    assert sum(count for _, _, count in layout) == dim
    filters = sum(c for _, kind, c in layout if kind == "filter")
    gammas = sum(c for _, kind, c in layout if kind == "bn_gamma")
    assert filters == gammas == dim // 2
    assert all("fc" not in name for name, _, _ in layout)
    assert layout[0][0] == ("layers.conv1" if skip == 0 else "layers.layer3.0.conv1")
    assert layout[1] == [layout[1][0], "bn_gamma", layout[0][2]]  # interleaved conv, bn
    assert (emb.hessian >= 0).all() and (emb.hessian > 0).mean() > 0.5


# ---------------------------------------------------------------------- storage
def _emb(task: str, dim: int = 4, **meta: object) -> Embedding:
    base = {k: None for k in COMPARE_KEYS} | {"probe": "p", "probe_digest": "d", "task": task}
    return Embedding(np.arange(1.0, dim + 1), np.ones(dim), base | meta)


def test_save_load_round_trip_and_bad_files(tmp_path: Path) -> None:
    embs = [_emb("a", layout=[["m", "filter", 4]]), _emb("b.c", skip_layers=6)]
    embs[1].hessian[:] = [0.5, 1e-12, 3.0, 7.0]
    save_embeddings(tmp_path / "out", embs)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "embeddings.safetensors",
        "meta.json",
    ]
    back = load_embeddings(tmp_path / "out" / "meta.json")
    assert [e.task for e in back] == ["a", "b.c"]
    assert np.array_equal(back[1].hessian, embs[1].hessian)
    assert back[0].meta["layout"] == [["m", "filter", 4]]
    check_comparable(back[0], embs[0])
    with pytest.raises(TaskspaceError) as err:
        save_embeddings(tmp_path / "dup", [_emb("a"), _emb("a")])
    assert "unique" in _one_line(err)
    with pytest.raises(TaskspaceError) as err:
        load_embeddings(tmp_path / "missing")
    assert "no saved embeddings" in _one_line(err)
    (tmp_path / "out" / "embeddings.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(TaskspaceError) as err:
        load_embeddings(tmp_path / "out")
    assert "corrupt" in _one_line(err)
    (tmp_path / "out" / "meta.json").write_text("{not json")
    with pytest.raises(TaskspaceError) as err:
        load_embeddings(tmp_path / "out")
    assert "not readable JSON" in _one_line(err)
    (tmp_path / "out" / "meta.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(TaskspaceError) as err:
        load_embeddings(tmp_path / "out")
    assert "not a saved taskspace embeddings" in _one_line(err)


def test_check_comparable_names_the_first_differing_key() -> None:
    a = _emb("a")
    check_comparable(a, _emb("b"))
    with pytest.raises(TaskspaceError) as err:
        check_comparable(a, _emb("b", probe_digest="other"))
    text = _one_line(err)
    assert "probe_digest differs ('d' vs 'other')" in text and "'a'" in text and "'b'" in text
    with pytest.raises(TaskspaceError) as err:
        check_comparable(a, _emb("b", skip_layers=6))
    assert "skip_layers differs (None vs 6)" in _one_line(err)
    with pytest.raises(TaskspaceError) as err:
        check_comparable(a, _emb("b", dim=5))
    assert "dimension differs (4 vs 5)" in _one_line(err)


def test_embeddings_of_two_probes_are_not_comparable(digits: ImageDataset) -> None:
    """Two probes (different trunk weights) give embeddings that refuse comparison."""
    tasks = human_tasks(digits.classes, digits.num_classes, max_tasks=1, include_original=False)
    kw = {"max_samples": 64, "head_epochs": 1, "head_draws": 64, "probe_kwargs": {"widths": (4,)}}
    (a,) = embed_tasks(digits, tasks, "convnet", seed=0, **kw)
    (b,) = embed_tasks(digits, tasks, "convnet", seed=1, **kw)
    assert a.meta["probe"] == b.meta["probe"] == "convnet"
    with pytest.raises(TaskspaceError) as err:
        check_comparable(a, b)
    assert "probe_digest differs" in _one_line(err)


def test_probe_needs_a_linear_last_layer() -> None:
    with pytest.raises(TaskspaceError) as err:
        Probe([("conv", nn.Conv2d(1, 1, 1)), ("relu", nn.ReLU())])
    assert "nn.Linear" in _one_line(err)


def test_probe_sequential_names_are_kept() -> None:
    probe = Probe(OrderedDict([("a", nn.Linear(3, 4)), ("fc", nn.Linear(4, 2))]).items())
    assert list(probe.layers._modules) == ["a", "fc"]
    assert probe(torch.randn(2, 3), start_from=0).shape == (2, 2)
