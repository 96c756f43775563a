"""Probe networks for Task2Vec: the probe contract and adapters onto it.

The contract (reference section 2): a probe exposes an ordered ``layers`` sequence whose
composition is ``forward``; ``forward(x, start_from=k)`` runs ``layers[k:]`` only; and
``classifier``, the last layer, an ``nn.Linear`` refitted per task and excluded from the
embedding. :class:`Probe` is a plain module meeting it, and :func:`as_probe` adapts:

- registry models (:mod:`taskspace.models`): ``resnet18`` / ``resnet50`` with the ResNet
  layout ``conv1, bn1, relu, maxpool (identity: the CIFAR stem has none), layer1..4,
  avgpool, flatten, fc``, so ``skip_layers=6`` starts at ``layer3`` as in the original;
  ``convnet`` (one layer per conv / BN / ReLU / pool, then the pool and ``fc``); ``mlp``
  (its Sequential, then ``fc``); ``vit4`` (embedding, each block, CLS + norm, ``fc``); any
  other :class:`~taskspace.models.Classifier` as ``[backbone, fc]``;
- torchvision / timm ResNets (``tv:resnet18`` or a module with ``conv1 ... fc``) with the
  same layout, and any other timm model as ``[features + pool, fc]``;
- any user ``nn.Module`` already meeting the contract (returned as is).

:func:`load_probe` builds one from a name, a ``tv:`` / ``timm:`` name or a checkpoint
path, optionally loading a local weights file; it never downloads. :func:`fresh_probe`
gives the per-task copy with a new head; :func:`probe_digest` hashes the trunk weights.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskspace.errors import TaskspaceError
from taskspace.models import Classifier, create_model
from taskspace.models.convnet import ConvNetBackbone
from taskspace.models.resnet import ResNetBackbone
from taskspace.models.vit import ViTBackbone

__all__ = [
    "Probe",
    "as_probe",
    "fresh_probe",
    "load_probe",
    "probe_digest",
    "probe_name",
    "run_layers",
]

TIMM_PREFIX = "timm:"
TV_PREFIX = "tv:"


class Probe(nn.Module):
    """An ordered stack of layers ending in a linear ``classifier``.

    ``layers`` is an ``nn.Sequential`` (named entries, so the embedding layout reads
    ``layers.layer3.0.conv1``); ``forward(x, start_from=k)`` runs ``layers[k:]``.
    """

    def __init__(self, layers: Sequence[tuple[str, nn.Module]], name: str = "probe") -> None:
        super().__init__()
        self.layers = nn.Sequential(OrderedDict(layers))
        self.probe_name = str(name)
        if not isinstance(self.layers[-1], nn.Linear):
            raise TaskspaceError(
                f"probe {name!r}: the last layer must be an nn.Linear classifier, got "
                f"{type(self.layers[-1]).__name__}"
            )

    @property
    def classifier(self) -> nn.Linear:
        """The last layer (refitted per task, excluded from the embedding)."""
        last = self.layers[-1]
        assert isinstance(last, nn.Linear)
        return last

    def forward(self, x: torch.Tensor, start_from: int = 0) -> torch.Tensor:
        """Run ``layers[start_from:]`` on ``x`` (the input of ``layers[start_from]``)."""
        for layer in list(self.layers)[start_from:]:
            x = layer(x)
        return x


class _GlobalMeanFlat(nn.Module):
    """Global mean over the spatial dimensions: ``[B, C, H, W] -> [B, C]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class _GrayToRGB(nn.Module):
    """Repeat 1-channel inputs to 3 channels, then run ``inner`` (a first layer)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)


class _ViTEmbed(nn.Module):
    """ViT patch embedding, CLS token and position embedding (the backbone's own tensors)."""

    def __init__(self, backbone: ViTBackbone) -> None:
        super().__init__()
        self.patch_size = backbone.patch_size
        self.to_patch = backbone.to_patch
        self.cls_token = backbone.cls_token
        self.pos_embedding = backbone.pos_embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        tokens = self.to_patch(x.reshape(b, (h // p) * (w // p), p * p * c))
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embedding


class _ViTPool(nn.Module):
    """The CLS token of the last block, through the backbone's final BatchNorm."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x[:, 0])


class _TimmTrunk(nn.Module):
    """A timm model without its classifier: ``forward_head(forward_features(x), pre_logits)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m: Any = self.model
        return m.forward_head(m.forward_features(x), pre_logits=True)


# ---------------------------------------------------------------------- contract checks
def _has_contract(model: nn.Module) -> bool:
    """Whether ``model`` has ``layers``, a linear last-layer ``classifier`` and
    ``forward(x, start_from=)``."""
    try:
        layers = model.layers
        classifier = model.classifier
        n = len(layers)  # type: ignore[arg-type]
        last = layers[n - 1]  # type: ignore[index]
    except (AttributeError, TypeError, IndexError):
        return False
    if not isinstance(classifier, nn.Linear) or last is not classifier:
        return False
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "start_from" in params


def _contract_error(name: str) -> TaskspaceError:
    return TaskspaceError(
        f"probe {name} lacks `layers` / `forward(x, start_from=)` / `classifier` (the last "
        "layer, an nn.Linear); pass a taskspace model, a tv:/timm: name, or a module with "
        "that contract"
    )


def probe_name(probe: nn.Module) -> str:
    """The probe's name (``probe_name`` attribute, else its class name)."""
    return str(getattr(probe, "probe_name", type(probe).__name__))


# ---------------------------------------------------------------------- adapters
def _resnet_like(m: nn.Module) -> bool:
    names = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
    return all(isinstance(getattr(m, n, None), nn.Module) for n in names)


def _resnet_layers(m: nn.Module, head: nn.Linear, gray: bool) -> list[tuple[str, nn.Module]]:
    """``conv1, bn1, relu, maxpool, layer1..4, avgpool, flatten, fc`` of a ResNet module."""
    act = getattr(m, "relu", None) or getattr(m, "act1", None) or nn.ReLU()
    pool = getattr(m, "maxpool", None) or nn.Identity()
    avg = getattr(m, "avgpool", None) or getattr(m, "global_pool", None)
    if not isinstance(avg, nn.Module):
        avg = _GlobalMeanFlat()
    conv1: nn.Module = getattr(m, "conv1")  # noqa: B009
    return [
        ("conv1", _GrayToRGB(conv1) if gray else conv1),
        ("bn1", getattr(m, "bn1")),  # noqa: B009
        ("relu", act),
        ("maxpool", pool),
        *((f"layer{i}", getattr(m, f"layer{i}")) for i in range(1, 5)),
        ("avgpool", avg),
        ("flatten", nn.Flatten(1)),
        ("fc", head),
    ]


def _cifar_resnet_layers(bb: ResNetBackbone, head: nn.Linear) -> list[tuple[str, nn.Module]]:
    return [
        ("conv1", bb.conv1),
        ("bn1", bb.bn1),
        ("relu", nn.ReLU()),
        ("maxpool", nn.Identity()),
        ("layer1", bb.layer1),
        ("layer2", bb.layer2),
        ("layer3", bb.layer3),
        ("layer4", bb.layer4),
        ("avgpool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten(1)),
        ("fc", head),
    ]


def _convnet_layers(bb: ConvNetBackbone, head: nn.Linear) -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []
    kinds = ("conv", "bn", "relu", "pool")
    for i, layer in enumerate(bb.layers):
        out.append((f"{kinds[i % 4]}{i // 4 + 1}", layer))
    pool: nn.Module = _GlobalMeanFlat() if bb.pool == "mean" else nn.Flatten(1)
    return [*out, ("avgpool" if bb.pool == "mean" else "flatten", pool), ("fc", head)]


def _sequential_layers(seq: nn.Sequential, head: nn.Linear) -> list[tuple[str, nn.Module]]:
    out = [(f"{type(m).__name__.lower()}{i}", m) for i, m in enumerate(seq)]
    return [*out, ("fc", head)]


def _vit_layers(bb: ViTBackbone, head: nn.Linear) -> list[tuple[str, nn.Module]]:
    blocks = [(f"block{i + 1}", blk) for i, blk in enumerate(bb.blocks)]
    return [("embed", _ViTEmbed(bb)), *blocks, ("pool", _ViTPool(bb.norm)), ("fc", head)]


def _classifier_layers(model: Classifier) -> list[tuple[str, nn.Module]]:
    """The layers of a taskspace :class:`Classifier` (registry or ``tv:`` model)."""
    bb, head = model.backbone, model.head
    if isinstance(bb, ResNetBackbone):
        return _cifar_resnet_layers(bb, head)
    if isinstance(bb, ConvNetBackbone):
        return _convnet_layers(bb, head)
    if isinstance(bb, ViTBackbone):
        return _vit_layers(bb, head)
    inner = getattr(bb, "model", None)  # torchvision's GrayToRGB wrapper
    gray = isinstance(inner, nn.Module) and type(bb).__name__ == "GrayToRGB"
    target = inner if gray and isinstance(inner, nn.Module) else bb
    if _resnet_like(target):
        return _resnet_layers(target, head, gray)
    if isinstance(bb, nn.Sequential):
        return _sequential_layers(bb, head)
    return [("backbone", bb), ("fc", head)]


def as_probe(model: nn.Module, name: str | None = None) -> nn.Module:
    """``model`` seen through the probe contract (shares its parameters, no copy).

    Raises:
        TaskspaceError: the module is neither an adaptable model nor meets the contract.
    """
    label = name or probe_name(model)
    if not isinstance(model, nn.Module):
        raise _contract_error(repr(label))
    if isinstance(model, Probe):
        return model
    if isinstance(model, Classifier):
        return Probe(_classifier_layers(model), label)
    if _has_contract(model):
        return model
    fc = getattr(model, "fc", None)
    if _resnet_like(model) and isinstance(fc, nn.Linear):
        return Probe(_resnet_layers(model, fc, gray=False), label)
    if callable(getattr(model, "forward_features", None)) and callable(
        getattr(model, "get_classifier", None)
    ):
        return _timm_probe(model, label)
    raise _contract_error(repr(label))


def _timm_probe(model: nn.Module, label: str) -> Probe:
    """A timm model as ``[trunk, fc]`` (ResNets get the ResNet layout)."""
    m: Any = model
    head: Any = m.get_classifier()
    if not isinstance(head, nn.Linear):
        raise _contract_error(f"{label!r} (its classifier is {type(head).__name__})")
    fc: nn.Linear = head
    if _resnet_like(model) and getattr(model, "fc", None) is fc:
        return Probe(_resnet_layers(model, fc, gray=False), label)
    m.reset_classifier(0)
    return Probe([("trunk", _TimmTrunk(model)), ("fc", head)], label)


def run_layers(probe: nn.Module, x: torch.Tensor, start: int, stop: int | None = None) -> Any:
    """Run ``probe.layers[start:stop]`` on ``x`` (``stop=None``: to the end)."""
    layers: Any = probe.layers
    n = len(layers)
    stop = n if stop is None else stop
    for i in range(start, stop):
        x = layers[i](x)
    return x


# ---------------------------------------------------------------------- copies and hashes
def fresh_probe(
    probe: nn.Module, num_classes: int, generator: torch.Generator | None = None
) -> nn.Module:
    """A deep copy of ``probe`` whose classifier is a new ``nn.Linear(F, num_classes)``.

    The new head is initialised as ``nn.Linear`` does (uniform in ``+-1/sqrt(F)``), from
    ``generator`` when given.
    """
    new = copy.deepcopy(probe)
    old: Any = new.classifier
    head = new_head(old.in_features, num_classes, generator).to(
        device=old.weight.device, dtype=old.weight.dtype
    )
    for module in new.modules():
        for key, child in list(module._modules.items()):
            if child is old:
                setattr(module, key, head)
    layers = getattr(new, "layers", None)
    if isinstance(layers, list):
        layers[:] = [head if m is old else m for m in layers]
    if new.classifier is not head:
        raise _contract_error(f"{probe_name(probe)!r} (its classifier cannot be replaced)")
    return new


def new_head(in_features: int, num_classes: int, generator: torch.Generator | None) -> nn.Linear:
    """``nn.Linear(in_features, num_classes)`` initialised like PyTorch's default."""
    head = nn.Linear(in_features, num_classes)
    bound = 1.0 / max(in_features, 1) ** 0.5
    with torch.no_grad():
        head.weight.uniform_(-bound, bound, generator=generator)
        head.bias.uniform_(-bound, bound, generator=generator)
    return head


def probe_digest(probe: nn.Module) -> str:
    """SHA-256 (16 hex digits) of the trunk's parameters and buffers (classifier excluded)."""
    classifier: Any = probe.classifier
    skip = {id(t) for t in (*classifier.parameters(), *classifier.buffers())}
    h = hashlib.sha256()
    for key, t in probe.state_dict(keep_vars=True).items():
        if id(t) in skip:
            continue
        data = t.detach().cpu().contiguous()
        h.update(f"{key}:{tuple(data.shape)}:{data.dtype}".encode())
        h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------- loading
def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or ``torch.load(weights_only=True)``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user error here
        raise TaskspaceError(f"cannot read weights file {path} ({type(err).__name__})") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TaskspaceError(f"weights file {path} does not hold a state dict of tensors")
    return state


def _load_weights(model: nn.Module, path: Path) -> None:
    """Load ``path`` into ``model``'s trunk (head tensors dropped, as the original does)."""
    if not path.is_file():
        raise TaskspaceError(f"weights file {path} does not exist")
    state = _read_state(path)
    head_prefixes = ("head.", "fc.", "classifier.")
    own = model.state_dict()
    trunk = {k: v for k, v in state.items() if not k.startswith(head_prefixes)}
    missing = [k for k in own if not k.startswith(head_prefixes) and k not in trunk]
    unknown = [k for k in trunk if k not in own]
    if missing or unknown:
        example = (missing or unknown)[0]
        raise TaskspaceError(
            f"weights file {path} does not fit the probe: {len(missing)} trunk tensor(s) "
            f"missing, {len(unknown)} unknown (e.g. {example!r})"
        )
    bad = [k for k, v in trunk.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise TaskspaceError(
            f"weights file {path}: tensor {bad[0]!r} has shape {tuple(trunk[bad[0]].shape)}, "
            f"the probe expects {tuple(own[bad[0]].shape)}"
        )
    model.load_state_dict(trunk, strict=False)


def _ensemble_json(path: Path) -> Path | None:
    """The JSON of a saved taskspace ensemble at ``path`` (stem or either file), if any."""
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    candidate = stem.with_name(stem.name + ".json")
    if not candidate.is_file():
        return None
    try:
        record = json.loads(candidate.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return candidate if record.get("format") == "taskspace.ensemble" else None


def _timm_model(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    try:
        timm: Any = importlib.import_module("timm")
    except ImportError as exc:
        raise TaskspaceError("timm is not installed; pip install timm") from exc
    if kwargs.pop("pretrained", False):
        raise TaskspaceError(f"timm:{name}: pretrained=True is not supported; pass weights=")
    try:
        model: nn.Module = timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs
        )
    except (RuntimeError, ValueError, TypeError) as exc:
        raise TaskspaceError(f"timm:{name}: {exc}") from exc
    return model


def load_probe(
    spec: str | Path | nn.Module,
    num_classes: int = 2,
    in_channels: int = 3,
    image_size: int = 32,
    weights: str | Path | None = None,
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a probe; never downloads anything.

    Args:
        spec: a registry name (``resnet18``, ``convnet``...), ``tv:<name>`` (torchvision,
            optional), ``timm:<name>`` (timm, optional), a path to a saved taskspace
            ensemble (``Ensemble.save``; model 0 is used), or an ``nn.Module``.
        num_classes: outputs of the initial head (replaced per task by :func:`fresh_probe`).
        in_channels, image_size: the input the model is built for.
        weights: a local weights file (``.safetensors`` or a ``torch.save`` state dict,
            read with ``weights_only=True``) loaded into the trunk; head tensors are dropped.
        seed: when given, a model built by name is initialised from this seed (without
            touching the global random state), so a random probe is reproducible.
        kwargs: architecture options (``width=``, ``widths=``...).
    """
    if seed is not None and not isinstance(spec, nn.Module):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return load_probe(spec, num_classes, in_channels, image_size, weights, None, **kwargs)
    if isinstance(spec, nn.Module):
        model: nn.Module = spec
        label = probe_name(spec)
    else:
        text = str(spec).strip()
        path = Path(text)
        ens = _ensemble_json(path) if text else None
        if ens is not None:
            from taskspace.engine.ensemble import Ensemble

            saved = Ensemble.load(ens)
            model, label = saved.model(0), saved.model_name
        elif text.lower().startswith(TIMM_PREFIX):
            name = text[len(TIMM_PREFIX) :]
            model, label = _timm_model(name, num_classes, in_channels, **kwargs), text
        elif path.suffix in (".json", ".safetensors", ".pt", ".pth") or path.is_file():
            raise TaskspaceError(
                f"probe {text!r} is not a saved taskspace ensemble; pass a model name and "
                "weights=<file> for a plain weights file"
            )
        else:
            model, label = (
                create_model(
                    text, num_classes, in_channels=in_channels, image_size=image_size, **kwargs
                ),
                text.lower(),
            )
    if weights is not None:
        _load_weights(model, Path(weights))
    probe = as_probe(model, label)
    if isinstance(probe, Probe):
        probe.probe_name = label
    return probe
