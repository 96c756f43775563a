"""A vmap-friendly BatchNorm for the batched engine.

Under ``torch.vmap`` the native batch-norm kernel sees M models' channels folded into one
strided ``[B, M*C]`` input, and its CPU backward on that layout was half of a batched MLP
step. Written with plain reductions instead, vmap turns BatchNorm into contiguous
reductions over the batch dimension. Semantics are those of ``nn.BatchNorm1d/2d`` (biased
variance to normalise, unbiased variance in the running estimate, ``momentum`` or the
cumulative average when ``momentum=None``).

Only the native ``BatchNorm1d/2d/3d`` classes are replaced: a subclass with its own
``forward`` keeps it, unless it says how its input is laid out with a class attribute
``reduction_layout = "tokens"`` (``[..., C]`` inputs normalised over all leading
dimensions, as the ViT's token BatchNorm does).
"""

from __future__ import annotations

import torch
from torch import nn


class ReductionBatchNorm(nn.Module):
    """Drop-in replacement for a ``_BatchNorm`` module (same parameters and buffers)."""

    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, tokens: bool = False) -> None:
        super().__init__()
        self.tokens = tokens
        self.eps, self.momentum = bn.eps, bn.momentum
        self.affine, self.track = bn.affine, bn.track_running_stats
        self.training = bn.training
        self.weight, self.bias = bn.weight, bn.bias
        if self.track:
            self.register_buffer("running_mean", bn.running_mean)
            self.register_buffer("running_var", bn.running_var)
            self.register_buffer("num_batches_tracked", bn.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens:
            return self._normalize(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        return self._normalize(x)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """BatchNorm of ``[B, C, ...]``: statistics over every dimension but ``C``."""
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        if self.training or not self.track:
            mean = x.mean(dims, keepdim=True)
            xc = x - mean
            var = (xc * xc).mean(dims, keepdim=True)  # two-pass, like the native kernel
            if self.training and self.track:
                n = x.numel() / x.shape[1]
                with torch.no_grad():
                    self.num_batches_tracked.add_(1)
                    mom = (
                        1.0 / self.num_batches_tracked.float()
                        if self.momentum is None
                        else self.momentum
                    )
                    self.running_mean.mul_(1 - mom).add_(mom * mean.detach().view(-1))
                    self.running_var.mul_(1 - mom).add_(
                        mom * var.detach().view(-1) * (n / max(n - 1, 1))
                    )
        else:
            xc = x - self.running_mean.view(shape)
            var = self.running_var.view(shape)
        y = xc * torch.rsqrt(var + self.eps)
        if self.affine:
            y = torch.addcmul(self.bias.view(shape), y, self.weight.view(shape))
        return y


_NATIVE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def use_reduction_batchnorm(module: nn.Module) -> nn.Module:
    """Replace the BatchNorm submodules of ``module`` in place (see the module docstring);
    returns ``module``."""
    for name, child in list(module.named_children()):
        if not isinstance(child, nn.modules.batchnorm._BatchNorm):
            use_reduction_batchnorm(child)
        elif type(child) in _NATIVE:
            setattr(module, name, ReductionBatchNorm(child))
        elif getattr(type(child), "reduction_layout", None) == "tokens":
            setattr(module, name, ReductionBatchNorm(child, tokens=True))
    return module
