"""A hand-written training step for M stacked MLPs (Flatten / Linear / ReLU / BatchNorm1d).

Why: for many small MLPs on a CPU the batched matrix products run near the cores' peak, and
what is left of a vmap + autograd step is elementwise passes over ``[M, B, width]``
activations. Written out by hand, the same arithmetic needs fewer of them: the ReLU
backward is one fused ``threshold_backward``, BatchNorm's backward is its closed form
``gamma * rstd * (dy - mean(dy) - xhat * mean(dy * xhat))``, no gradient is formed for the
input images, and temporaries are updated in place, which made training measurably faster
than the vmap + autograd step (benchmarks/bench_engine.py, column "vmap step s").
Gradients and running statistics equal autograd's (tests/test_engine.py).

``fit_many`` uses it (``mlp_step=True``, the default) on CPUs, where it was measured, when
the objective is plain cross-entropy (the gradient of the loss is written out here), for
:class:`~taskspace.models.registry.Classifier` models whose backbone is a
``nn.Sequential`` of exactly those four layer types and whose head is a Linear (the
``mlp`` registry model); :func:`stacked_mlp_layers` returns None for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["StackedMLPStep", "stacked_mlp_layers"]


@dataclass(frozen=True)
class Layer:
    """One layer of the plan: ``kind`` in flatten/linear/relu/bn, ``name`` its state prefix."""

    kind: str
    name: str = ""
    eps: float = 1e-5
    momentum: float | None = 0.1


def stacked_mlp_layers(model: nn.Module) -> list[Layer] | None:
    """The layers of ``model`` in order (head last), or None if it is not a plain MLP."""
    backbone, head = getattr(model, "backbone", None), getattr(model, "head", None)
    if not isinstance(backbone, nn.Sequential) or type(head) is not nn.Linear:
        return None
    layers = []
    for name, mod in backbone.named_children():
        prefix = f"backbone.{name}"
        if type(mod) is nn.Flatten and mod.start_dim == 1 and mod.end_dim == -1:
            layers.append(Layer("flatten"))
        elif type(mod) is nn.Linear and mod.bias is not None:
            layers.append(Layer("linear", prefix))
        elif type(mod) is nn.ReLU:
            layers.append(Layer("relu"))
        elif type(mod) is nn.BatchNorm1d and mod.affine and mod.track_running_stats:
            layers.append(Layer("bn", prefix, mod.eps, mod.momentum))
        else:
            return None
    if head.bias is None or not layers or layers[0].kind != "flatten":
        return None
    return [*layers, Layer("linear", "head")]


class StackedMLPStep:
    """Forward and backward of M stacked MLPs on one batch, gradients into ``param.grad``.

    Semantics are those of the vmap path of ``fit_many``: the loss is
    ``sum_m active_m * mean_b(w_mb * CE_mb)``, BatchNorm uses batch statistics and updates
    the running statistics (unbiased variance) of active models only.
    """

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers

    @torch.no_grad()
    def __call__(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor | None,
        active: torch.Tensor,
        *,
        shared: bool,
    ) -> None:
        """``x``: ``[B, ...]`` read by every model (``shared``) or ``[M, B, ...]``;
        ``y``, ``w``: ``[M, B]``; ``active``: ``[M]`` bool (inactive models get zero
        gradients and keep their running statistics)."""
        m, b = y.shape
        act = active.to(x.device, x.dtype).view(m, 1, 1)
        h = x.flatten(1).expand(m, -1, -1) if shared else x.flatten(2)
        saved: list[tuple[torch.Tensor, ...]] = []
        for layer in self.layers:
            if layer.kind == "linear":
                wt, bias = params[f"{layer.name}.weight"], params[f"{layer.name}.bias"]
                saved.append((h,))
                h = torch.baddbmm(bias.unsqueeze(1), h, wt.transpose(1, 2))
            elif layer.kind == "relu":
                h = h.clamp_min_(0)
                saved.append((h,))
            elif layer.kind == "bn":
                mean = h.mean(1, keepdim=True)
                xhat = h - mean
                var = (xhat * xhat).mean(1, keepdim=True)
                rstd = torch.rsqrt(var + layer.eps)
                xhat.mul_(rstd)
                gamma = params[f"{layer.name}.weight"].unsqueeze(1)
                saved.append((xhat, rstd, gamma))
                h = torch.addcmul(params[f"{layer.name}.bias"].unsqueeze(1), xhat, gamma)
                self._update_running(buffers, layer, mean, var, b, active)
            else:
                saved.append(())
        # d(loss)/d(logits) of the weighted per-model mean cross-entropy
        g = torch.softmax(h, dim=-1)
        g.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(g[..., :1], -1.0))
        g.mul_(act / b if w is None else act * w.unsqueeze(-1).to(g.dtype) / b)
        for i in range(len(self.layers) - 1, -1, -1):
            layer, s = self.layers[i], saved[i]
            if layer.kind == "linear":
                (inp,) = s
                params[f"{layer.name}.weight"].grad = torch.bmm(g.transpose(1, 2), inp)
                params[f"{layer.name}.bias"].grad = g.sum(1)
                if i > 1:  # no gradient for the images (layer 0 is the flatten)
                    g = torch.bmm(g, params[f"{layer.name}.weight"])
            elif layer.kind == "relu":
                g = torch.ops.aten.threshold_backward(g, s[0], 0.0)
            elif layer.kind == "bn":
                xhat, rstd, gamma = s
                dbeta = g.sum(1, keepdim=True)
                dgamma = (g * xhat).sum(1, keepdim=True)
                params[f"{layer.name}.weight"].grad = dgamma.squeeze(1)
                params[f"{layer.name}.bias"].grad = dbeta.squeeze(1)
                g = torch.addcmul(g - dbeta / b, xhat, dgamma / b, value=-1.0)
                g.mul_(gamma * rstd)

    @staticmethod
    def _update_running(
        buffers: dict[str, torch.Tensor],
        layer: Layer,
        mean: torch.Tensor,
        var: torch.Tensor,
        b: int,
        active: torch.Tensor,
    ) -> None:
        """Running statistics of active models, as ``nn.BatchNorm1d`` updates them."""
        count = buffers[f"{layer.name}.num_batches_tracked"]
        rm, rv = buffers[f"{layer.name}.running_mean"], buffers[f"{layer.name}.running_var"]
        act = active.to(rm.device)
        count.add_(act.to(count.dtype))
        if layer.momentum is None:
            mom = (1.0 / count.clamp_min(1).to(rm.dtype)).unsqueeze(1)
        else:
            mom = torch.full_like(rm[:, :1], layer.momentum)
        mom = mom * act.to(rm.dtype).unsqueeze(1)
        rm.mul_(1 - mom).add_(mom * mean.squeeze(1))
        rv.mul_(1 - mom).add_(mom * var.squeeze(1) * (b / max(b - 1, 1)))
