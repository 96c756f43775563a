"""The differentiable inner loop: many learners trained by plain SGD on soft labels.

``M`` learners of one architecture (for discovery ``M = heads x 2``: a pair per head) are
held as stacked parameters ``{name: [M, ...]}`` and run with ``vmap(functional_call)``.
One inner step is::

    loss = 0.5 * sum_m CE(f(x_m; w_m), q_m)        # 0.5 (L_A + L_B) for every pair
    w_m <- w_m - lr * d loss / d w_m                 # create_graph=True: differentiable

so each learner takes an effective step of ``0.5 * lr`` on its own soft cross-entropy,
exactly as the reference's ``0.5 (L_A + L_B)`` with SGD lr 0.01. The learners are
independent, so the gradient of the summed loss is every learner's own gradient.

The soft labels ``q_t`` of every step carry the graph back to the task encoder, so the
meta-gradient flows through all steps (a full second-order unroll). With
``use_checkpoint=True`` each step is wrapped in
``torch.utils.checkpoint.checkpoint(use_reentrant=False)``: only the parameters between steps
are stored and a step's graph is rebuilt during the backward pass (same gradient, much less
memory for large learners). Core PyTorch only: no ``higher``, no TorchOpt.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state
from torch.utils.checkpoint import checkpoint

from taskspace.engine.batchnorm import use_reduction_batchnorm
from taskspace.models import create_model

__all__ = ["InnerLearners", "soft_cross_entropy", "symmetric_agreement_loss"]


def soft_cross_entropy(logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``-mean_i sum_c q_ic log softmax(logits_i)_c`` over the last two dims: ``[...]``."""
    return -(q * F.log_softmax(logits, dim=-1)).sum(-1).mean(-1)


def symmetric_agreement_loss(la: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
    """Reference ``ce_agreement``: ``0.5 [CE(a->b) + CE(b->a)]`` on logits, neither detached.

    ``la, lb``: ``[..., B, C]``; returns ``[...]`` (one value per pair).
    """
    pa, pb = F.softmax(la, dim=-1), F.softmax(lb, dim=-1)
    return 0.5 * (soft_cross_entropy(lb, pa) + soft_cross_entropy(la, pb))


class InnerLearners:
    """Builds, batches and trains (differentiably) learners of one architecture.

    Args:
        arch: learner architecture (a :func:`taskspace.models.create_model` name).
        in_channels, image_size: input shape.
        num_outputs: 2 for binary tasks.
        model_kwargs: architecture overrides.
    """

    def __init__(
        self,
        arch: str,
        *,
        in_channels: int,
        image_size: int,
        num_outputs: int = 2,
        model_kwargs: dict | None = None,
    ) -> None:
        self.arch = arch
        self.kwargs = dict(model_kwargs or {})
        self.shape = {"in_channels": in_channels, "image_size": image_size}
        self.num_outputs = num_outputs
        template = create_model(arch, num_outputs, **self.shape, **self.kwargs)
        self.num_params = sum(p.numel() for p in template.parameters())
        # reduction-based BatchNorm: the native kernel's backward on vmap's folded
        # [b, M*C] layout was a fifth of a batched meta-step on a CPU
        self.base = use_reduction_batchnorm(copy.deepcopy(template)).to("meta")

    def init(self, seeds: Sequence[int], dtype: torch.dtype = torch.float32,
             device: str | torch.device = "cpu") -> tuple[dict, dict]:
        """Stacked ``(params, buffers)`` of fresh learners, one per seed (PyTorch default init).

        The global RNG is forked, so drawing initialisations never disturbs other streams.
        """
        models = []
        with torch.random.fork_rng(devices=[]):
            for s in seeds:
                torch.manual_seed(int(s))
                m = create_model(self.arch, self.num_outputs, **self.shape, **self.kwargs)
                models.append(m.to(device=device, dtype=dtype).train())
        params, buffers = stack_module_state(models)
        params = {k: v.detach() for k, v in params.items()}
        buffers = {k: v.detach() for k, v in buffers.items()}
        return params, buffers

    def forward(self, params: dict, buffers: dict, x: torch.Tensor, *, shared: bool,
                train: bool = True) -> torch.Tensor:
        """Logits ``[M, b, C]``; ``x`` is ``[b, ...]`` (``shared``) or ``[M, b, ...]``.

        ``train`` selects BatchNorm batch statistics (updating the running statistics in
        ``buffers`` in place) or the running statistics.
        """
        self.base.train(train)

        def fwd(p: dict, b: dict, xx: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (xx,))

        in_dims = (0, 0, None if shared else 0)
        return torch.vmap(fwd, in_dims=in_dims, randomness="different")(params, buffers, x)

    def step(self, params: dict, buffers: dict, x: torch.Tensor, q: torch.Tensor, lr: float,
             *, shared: bool, create_graph: bool = True) -> dict:
        """One differentiable SGD step of every learner on soft labels ``q [M, b, C]``."""
        logits = self.forward(params, buffers, x, shared=shared, train=True)
        loss = 0.5 * soft_cross_entropy(logits, q).sum()
        names = list(params)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph)
        return {n: params[n] - lr * g for n, g in zip(names, grads)}

    def unroll(
        self,
        params: dict,
        buffers: dict,
        xs: Sequence[torch.Tensor],
        qs: Sequence[torch.Tensor],
        lr: float,
        *,
        shared: bool = False,
        use_checkpoint: bool = False,
        first_order: bool = False,
    ) -> tuple[dict, dict]:
        """Train from ``params`` for ``len(xs)`` steps; returns the final ``(params, buffers)``.

        The soft labels ``qs[t]`` carry the encoder's graph; ``params`` may carry a graph of
        their own (e.g. in a finite-difference test). ``buffers`` are cloned first, so the
        caller's copy (a fixed initialisation) is never modified. ``first_order`` drops the
        second-order terms (the reference's ``foxas``): each step's gradient is a constant.
        """
        buffers = {k: v.clone() for k, v in buffers.items()}
        names = list(params)
        params = {k: v if v.requires_grad else v.detach().requires_grad_(True)
                  for k, v in params.items()}
        create_graph = not first_order
        for x, q in zip(xs, qs):
            if use_checkpoint:
                def _step(x_: torch.Tensor, q_: torch.Tensor, *flat: torch.Tensor,
                          _buf: dict = buffers) -> tuple[torch.Tensor, ...]:
                    new = self.step(dict(zip(names, flat)), _buf, x_, q_, lr, shared=shared,
                                    create_graph=create_graph)
                    return tuple(new[n] for n in names)

                out = checkpoint(_step, x, q, *[params[n] for n in names], use_reentrant=False)
                params = dict(zip(names, out))
            else:
                params = self.step(params, buffers, x, q, lr, shared=shared,
                                   create_graph=create_graph)
        return params, buffers
