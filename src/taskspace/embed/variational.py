"""The variational Fisher estimator of Task2Vec (reference section 2, "Variational").

Instead of averaging squared gradients, learn for every conv/linear filter the largest
Gaussian weight noise the task tolerates: a posterior ``N(w, sigma^2)`` per filter against a
per-layer prior ``N(0, lambda^2)``, trained on cross-entropy + ``beta * KL``. The
optimal noise variance approximates the inverse Fisher, so the embedding is
``hessian = exp(-logvar0) = 1/sigma^2`` per filter and ``scale = exp(-loglambda2)`` (the
prior precision) repeated per filter.

Setup, per conv/linear module in ``layers[skip_layers:-1]`` (the classifier excluded):

* ``logvar0`` per output filter, initialised to ``log(0.05 * Var(filter weights) + 1e-8)``
  (unbiased variance over the filter's weights);
* ``loglambda2`` per layer, initialised to ``log(mean(w^2) + 1e-8)``;
* forward by local reparameterisation: ``conv(x, w, b) + sqrt(conv(x^2 + 0.01, sigma^2)) *
  eps`` (``linear`` likewise), ``eps ~ N(0, 1)`` per output entry;
* ``KL = kl_factor / 2 * (sum ||w||^2/lambda^2 + sum sigma^2/lambda^2 + k log lambda^2 -
  sum log sigma^2 - k)`` summed over all ``k`` weights, ``sigma^2`` broadcast per filter
  (:func:`variational_kl`);
* Adam (betas 0.9, 0.999): ``lr_noise`` for ``logvar0``/``loglambda2``, ``lr_head`` for the
  classifier; every other weight frozen.

Switches and fixed bugs of the original (faithful value -> default):

* ``kl_factor``: 2 -> 1. The original's KL omits the 1/2 of the Gaussian KL, i.e. doubles it.
* ``bn_mode``: ``"train"`` -> ``"eval"``. The original left the model in train mode (BN
  running statistics drift, dropout on); its BN parameter group was dead anyway (BN
  weights had ``requires_grad=False``). Here BN parameters are never in the optimiser.
* ``skip_layers > 0`` works: ``inputs`` are the inputs of ``layers[skip_layers]`` (cached
  features) and the loop runs ``forward(x, start_from=skip_layers)``; the original's loop
  was not given the start layer and fed cached features to the first layer (crash).
* The probe is not mutated: the work happens on a deep copy (the original patched the
  probe's ``forward`` methods and trained its head in place).
* Data: ``epochs`` times ``draws_per_epoch`` class-balanced draws with replacement (weight
  ``1/(n_c C)``, the original's ``WeightedRandomSampler``), ``batch_size`` per step, the
  last partial batch dropped (10,000 / 64 -> 156 steps); draws and noise seeded.

A conv/linear module whose ``forward`` is never called (e.g. an attention block's output
projection, used through its weight) gets no data gradient; it is left out of the
embedding (deterministic for a given architecture).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taskspace.errors import TaskspaceError
from taskspace.progress import progress_bar
from taskspace.seeding import derive_seed

__all__ = [
    "BN_MODES",
    "NOISE_MODULES",
    "VARIANCE_SCALING",
    "noisy_modules",
    "variational_fisher",
    "variational_kl",
]

#: Modules that get weight noise (the original supported Conv2d and Linear).
NOISE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: ``logvar0`` starts at ``log(VARIANCE_SCALING * Var(filter) + 1e-8)``.
VARIANCE_SCALING = 0.05
#: Added to ``x^2`` in the output-variance convolution, as the original.
_X2_FLOOR = 1e-2
BN_MODES = ("eval", "train")
_NOISE_STREAM = 1  # derive_seed(seed, _NOISE_STREAM): the weight-noise draws


@dataclass
class _Noisy:
    """One noisy module: its name, the module, and its variational parameters."""

    name: str
    module: nn.Module
    logvar0: torch.Tensor  # [out_channels], leaf
    loglambda2: torch.Tensor  # scalar, leaf
    fired: bool = False  # set by the hook when the module's forward runs

    @property
    def weight(self) -> torch.Tensor:
        w = self.module.weight
        assert isinstance(w, torch.Tensor)
        return w


def _contract(probe: nn.Module) -> list[Any]:
    layers = getattr(probe, "layers", None)
    if layers is None or not hasattr(probe, "classifier"):
        raise TaskspaceError(
            "probe lacks the contract (`layers`, `forward(x, start_from=)`, `classifier`); "
            "wrap it with taskspace.embed.probe.as_probe"
        )
    return list(layers.values()) if isinstance(layers, nn.ModuleDict) else list(layers)


def noisy_modules(probe: nn.Module, skip_layers: int = 0) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs that get weight noise: every conv/linear module inside
    ``layers[skip_layers:-1]``, in the probe's ``named_modules`` order, the classifier
    excluded. Any other module there with a weight of 2+ dimensions raises
    :class:`TaskspaceError` (the original had no noisy forward for it either)."""
    layers = _contract(probe)
    if not 0 <= skip_layers < len(layers):
        raise TaskspaceError(
            f"skip_layers={skip_layers} is out of range for a probe with {len(layers)} layers"
        )
    classifier = probe.classifier
    wanted: dict[int, nn.Module] = {}
    for k, layer in enumerate(layers[skip_layers:-1], start=skip_layers):
        if not isinstance(layer, nn.Module):
            continue  # a plain function between layers (the original skipped lambdas)
        for sub_name, m in layer.named_modules():
            if m is classifier or id(m) in wanted:
                continue
            w = getattr(m, "weight", None)
            if not isinstance(w, torch.Tensor) or w.ndim < 2:
                continue
            if isinstance(m, NOISE_MODULES) and not isinstance(m, nn.modules.conv._ConvTransposeNd):
                wanted[id(m)] = m
            else:
                where = f"layers[{k}]" + (f".{sub_name}" if sub_name else "")
                raise TaskspaceError(
                    f"the variational estimator has no noisy forward for {type(m).__name__} at "
                    f"{where}; use method=montecarlo or skip_layers past it"
                )
    out = [(n, m) for n, m in probe.named_modules() if id(m) in wanted]
    registered = {id(m) for _, m in out}
    out += [
        (f"unregistered.{j}", m) for j, m in enumerate(wanted.values()) if id(m) not in registered
    ]
    return out


def variational_kl(
    weights: Sequence[torch.Tensor],
    logvar0: Sequence[torch.Tensor],
    loglambda2: Sequence[torch.Tensor],
    kl_factor: float = 1.0,
) -> torch.Tensor:
    """``kl_factor/2 * (sum ||w||^2/lambda^2 + sum sigma^2/lambda^2 + k log lambda^2 -
    sum log sigma^2 - k)`` over all layers' ``k`` weights, ``sigma^2 = exp(logvar0)`` per
    output filter broadcast over the filter's weights, ``lambda^2 = exp(loglambda2)`` per
    layer. ``kl_factor=1`` is the Gaussian KL(N(w, sigma^2) || N(0, lambda^2)); 2 is the
    original's (faithful) value."""
    terms = []
    k = 0
    for w, lv, ll2 in zip(weights, logvar0, loglambda2, strict=True):
        per_filter = w.numel() // w.shape[0]
        lam2 = ll2.exp()
        terms.append(
            w.pow(2).sum() / lam2
            + lv.exp().sum() * per_filter / lam2
            + ll2 * w.numel()
            - lv.sum() * per_filter
        )
        k += w.numel()
    if not terms:
        raise TaskspaceError("no layers given to the KL term")
    return kl_factor / 2.0 * (torch.stack(terms).sum() - k)


def _init_noise(module: nn.Module, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    w = weight.detach().to(torch.float32)
    flat = w.reshape(w.shape[0], -1)
    var = flat.var(dim=1, correction=1 if flat.shape[1] > 1 else 0)
    logvar0 = (VARIANCE_SCALING * var + 1e-8).log().to(device).requires_grad_(True)
    loglambda2 = (w.pow(2).mean() + 1e-8).log().to(device).requires_grad_(True)
    return logvar0, loglambda2


def _noise_hook(layer: _Noisy, generator: torch.Generator) -> Any:
    """A forward hook adding ``sqrt(conv(x^2 + 0.01, sigma^2)) * eps`` to the output."""

    def hook(
        module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        layer.fired = True
        x2 = inputs[0].pow(2) + _X2_FLOOR
        w = layer.weight
        var = layer.logvar0.exp().view(-1, *([1] * (w.ndim - 1))).expand_as(w).to(x2.dtype)
        if isinstance(module, nn.Linear):
            out_var = F.linear(x2, var)
        else:
            out_var = module._conv_forward(x2, var, None)  # type: ignore[operator]
        eps = torch.randn(
            output.shape, generator=generator, device=output.device, dtype=output.dtype
        )
        return output + out_var.sqrt() * eps

    return hook


def _balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """``1 / (n_c * C)`` per example, ``C = max(label) + 1`` (the original's sampler)."""
    num_classes = int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    return 1.0 / (counts[labels] * num_classes)


def _check_args(
    inputs: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int,
    draws: int,
    bn_mode: str,
) -> None:
    if labels.ndim != 1 or len(inputs) != len(labels):
        raise TaskspaceError(
            f"variational Fisher needs labels [N] for inputs [N, ...]; got {tuple(labels.shape)} "
            f"and {tuple(inputs.shape)}"
        )
    if len(labels) == 0:
        raise TaskspaceError("variational Fisher needs at least one example")
    if int(labels.min()) < 0:
        raise TaskspaceError("labels must be non-negative class indices")
    if epochs < 1 or batch_size < 1 or draws < batch_size:
        raise TaskspaceError(
            f"need epochs >= 1 and draws_per_epoch >= batch_size >= 1; got epochs={epochs}, "
            f"draws_per_epoch={draws}, batch_size={batch_size}"
        )
    if bn_mode not in BN_MODES:
        raise TaskspaceError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")


def variational_fisher(
    probe: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    skip_layers: int = 0,
    seed: int = 0,
    epochs: int = 1,
    beta: float = 1e-7,
    kl_factor: float = 1.0,
    lr_noise: float = 1e-2,
    lr_head: float = 5e-4,
    batch_size: int = 64,
    draws_per_epoch: int = 10000,
    bn_mode: str = "eval",
    average_last: float = 0.0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[list[Any]]]:
    """Train the per-filter weight noise of a copy of ``probe`` on ``(inputs, labels)``.

    Args:
        probe: a module with the probe contract (``layers``, ``forward(x, start_from=)``,
            ``classifier``); left unchanged (a deep copy is trained).
        inputs: the inputs of ``layers[skip_layers]`` (images when 0, cached features
            otherwise), ``[N, ...]``, on any device (moved per batch).
        labels: ``int64 [N]`` true labels.
        skip_layers: first layer that gets noise and is run.
        seed: seeds the class-balanced draws and the noise.
        epochs, draws_per_epoch, batch_size: ``epochs * (draws_per_epoch // batch_size)``
            steps (original: 1 epoch, 10,000 draws, batch 64).
        beta: weight of the KL term (1e-7).
        kl_factor: 1 = the Gaussian KL (default), 2 = the original's doubled KL (faithful).
        lr_noise, lr_head: Adam learning rates of the noise parameters and of the head.
        bn_mode: ``"eval"`` (default, frozen BN statistics) or ``"train"`` (faithful: the
            whole copy in train mode).
        average_last: embed the mean of the noise parameters over this fraction of the
            last steps (0, the original: the last iterate).
        progress: show a progress bar.

    Returns:
        ``(hessian, scale, layout)``: ``float64 [D]`` arrays with ``hessian =
        exp(-logvar0)`` per filter and ``scale = exp(-loglambda2)`` repeated per filter, and
        ``layout`` rows ``[module_name, "filter", out_channels]`` in embedding order.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    _check_args(inputs, labels, epochs, batch_size, draws_per_epoch, bn_mode)
    if not 0.0 <= average_last < 1.0:
        raise TaskspaceError(f"average_last must be in [0, 1), got {average_last}")
    model = copy.deepcopy(probe)
    modules = noisy_modules(model, skip_layers)
    if not modules:
        raise TaskspaceError(
            f"no conv/linear layers between layer {skip_layers} and the classifier"
        )
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.classifier
    if not isinstance(head, nn.Module):
        raise TaskspaceError("the probe's classifier must be an nn.Module (the linear head)")
    head_params = list(head.parameters())
    outputs = getattr(head, "out_features", None)
    if isinstance(outputs, int) and int(labels.max()) >= outputs:
        raise TaskspaceError(
            f"label {int(labels.max())} does not fit the probe's {outputs}-way classifier; "
            "give the probe a head with max(label) + 1 outputs"
        )
    for p in head_params:
        p.requires_grad_(True)
    model.train(bn_mode == "train")

    noise_gen = torch.Generator(device=device).manual_seed(derive_seed(seed, _NOISE_STREAM))
    layers: list[_Noisy] = []
    handles = []
    for name, m in modules:
        lv, ll2 = _init_noise(m, device)
        layer = _Noisy(name, m, lv, ll2)
        layers.append(layer)
        handles.append(m.register_forward_hook(_noise_hook(layer, noise_gen)))
    noise_params = [t for layer in layers for t in (layer.logvar0, layer.loglambda2)]
    opt = torch.optim.Adam(
        [{"params": noise_params, "lr": lr_noise}, {"params": head_params, "lr": lr_head}],
        betas=(0.9, 0.999),
    )

    weights = _balanced_weights(labels)
    draw_gen = torch.Generator().manual_seed(seed)
    steps = draws_per_epoch // batch_size
    bar = progress_bar(epochs * steps, "variational Fisher", progress)
    average_from = epochs * steps - max(1, round(average_last * epochs * steps))
    sums = [torch.zeros_like(t) for t in noise_params]
    step = 0
    try:
        for _ in range(epochs):
            idx = torch.multinomial(weights, draws_per_epoch, replacement=True, generator=draw_gen)
            for s in range(steps):
                b = idx[s * batch_size : (s + 1) * batch_size]
                x = inputs[b].to(device=device, dtype=dtype if inputs.is_floating_point() else None)
                y = labels[b].to(device)
                out = model(x, start_from=skip_layers)
                kl = variational_kl(
                    [layer.weight for layer in layers],
                    [layer.logvar0 for layer in layers],
                    [layer.loglambda2 for layer in layers],
                    kl_factor,
                )
                loss = F.cross_entropy(out, y) + beta * kl
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                if step > average_from:
                    with torch.no_grad():
                        for acc, t in zip(sums, noise_params):
                            acc += t
                if bar:
                    bar.update(1)
        with torch.no_grad():
            for acc, t in zip(sums, noise_params):
                t.copy_(acc / (epochs * steps - average_from))
    finally:
        for h in handles:
            h.remove()
        if bar:
            bar.close()
    return _extract(layers)


def _extract(layers: list[_Noisy]) -> tuple[np.ndarray, np.ndarray, list[list[Any]]]:
    hess, scale, layout = [], [], []
    for layer in layers:
        if not layer.fired:
            continue  # never run by forward (see the module docstring)
        lv = layer.logvar0.detach().cpu().to(torch.float64).numpy()
        ll2 = float(layer.loglambda2.detach().cpu())
        hess.append(np.exp(-lv))
        scale.append(np.full(lv.size, math.exp(-ll2), dtype=np.float64))
        layout.append([layer.name, "filter", int(lv.size)])
    if not hess:
        raise TaskspaceError("no conv/linear layer ran in the probe's forward; nothing to embed")
    return np.concatenate(hess), np.concatenate(scale), layout
