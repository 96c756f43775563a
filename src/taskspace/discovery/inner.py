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

``first_order=True`` (off by default; the reference has no such estimator, see below) is the
first-order approximation of that unroll: it keeps the label path and drops only the
learner-to-learner second-order terms. With ``g(w, q)`` the inner gradient and
``v = dL/dw_T`` the meta-loss gradient at the final learners, the full meta-gradient
reaching step ``t``'s labels is ``-lr (dg/dq_t)^T prod_{s>t} (I - lr H_s) v``; the first-order
one sets every ``d w_{s+1} / d w_s = I - lr H_s`` to the identity::

    dL/dq_t = -lr (d g(w_t, q_t) / d q_t)^T v = -lr d/dq_t [ v . g(w_t, q_t) ]

and ``v . g(w_t, q_t)`` is the directional derivative of the inner loss along ``v``, one
forward-mode (dual-number) pass of the learners at ``w_t``. So no step keeps a graph: the
forward pass takes plain gradients and each step stores only its inputs (``w_t``, ``x_t``,
``q_t``), and the backward pass costs one forward-mode pass per step instead of a double
backward. Per-step checkpointing then saves nothing and is skipped. Because ``g`` is linear
in ``q`` (soft cross-entropy), the label path is exact given the trajectory; only the
Hessian products between steps are dropped.

The reference's ``foxas`` option (``FOXASLoss``, ``data_mode=full`` only) is a different,
online algorithm, not this one: its learners are carried from one inner step to the next;
at every inner step they take one differentiable SGD step on the encoder's soft labels of
the current training batch, the symmetric agreement loss on the *next training batch* is
back-propagated through that single step (plus uniformity), and the encoder takes an Adam
step, i.e. ``T`` encoder updates per head, each with a one-step meta-gradient. Ours keeps
the ``T``-step unroll, the held-out meta-evaluation and one encoder update per meta-step.
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

    def init(
        self,
        seeds: Sequence[int],
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> tuple[dict, dict]:
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

    def forward(
        self, params: dict, buffers: dict, x: torch.Tensor, *, shared: bool, train: bool = True
    ) -> torch.Tensor:
        """Logits ``[M, b, C]``; ``x`` is ``[b, ...]`` (``shared``) or ``[M, b, ...]``.

        ``train`` selects BatchNorm batch statistics (updating the running statistics in
        ``buffers`` in place) or the running statistics.
        """
        self.base.train(train)

        def fwd(p: dict, b: dict, xx: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (xx,))

        in_dims = (0, 0, None if shared else 0)
        return torch.vmap(fwd, in_dims=in_dims, randomness="different")(params, buffers, x)

    def loss(
        self, params: dict, buffers: dict, x: torch.Tensor, q: torch.Tensor, *, shared: bool
    ) -> torch.Tensor:
        """The inner loss ``0.5 * sum_m CE(f(x_m; w_m), q_m)`` (BatchNorm batch statistics)."""
        logits = self.forward(params, buffers, x, shared=shared, train=True)
        return 0.5 * soft_cross_entropy(logits, q).sum()

    def step(
        self,
        params: dict,
        buffers: dict,
        x: torch.Tensor,
        q: torch.Tensor,
        lr: float,
        *,
        shared: bool,
        create_graph: bool = True,
    ) -> dict:
        """One differentiable SGD step of every learner on soft labels ``q [M, b, C]``."""
        loss = self.loss(params, buffers, x, q, shared=shared)
        names = list(params)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph)
        return {n: params[n] - lr * g for n, g in zip(names, grads)}

    def first_order_step(
        self,
        params: dict,
        buffers: dict,
        x: torch.Tensor,
        q: torch.Tensor,
        lr: float,
        *,
        shared: bool,
    ) -> dict:
        """One SGD step whose backward treats ``d w_{t+1} / d w_t`` as the identity and keeps
        the label path ``d w_{t+1} / d q_t`` (see the module docstring)."""
        names = list(params)
        out = _FirstOrderStep.apply(
            self, names, buffers, x, lr, shared, q, *[params[n] for n in names]
        )
        return dict(zip(names, out))

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
        caller's copy (a fixed initialisation) is never modified. ``first_order`` keeps the
        label path and drops the Hessian products between steps (module docstring); it
        stores no step graph, so ``use_checkpoint`` has nothing to save and is ignored.
        """
        buffers = {k: v.clone() for k, v in buffers.items()}
        names = list(params)
        params = {
            k: v if v.requires_grad else v.detach().requires_grad_(True) for k, v in params.items()
        }
        for x, q in zip(xs, qs):
            if first_order:
                params = self.first_order_step(params, buffers, x, q, lr, shared=shared)
            elif use_checkpoint:

                def _step(
                    x_: torch.Tensor, q_: torch.Tensor, *flat: torch.Tensor, _buf: dict = buffers
                ) -> tuple[torch.Tensor, ...]:
                    new = self.step(dict(zip(names, flat)), _buf, x_, q_, lr, shared=shared)
                    return tuple(new[n] for n in names)

                out = checkpoint(_step, x, q, *[params[n] for n in names], use_reentrant=False)
                params = dict(zip(names, out))
            else:
                params = self.step(params, buffers, x, q, lr, shared=shared)
        return params, buffers


class _FirstOrderStep(torch.autograd.Function):
    """``w_{t+1} = w_t - lr g(w_t, q_t)`` with ``d w_{t+1}/d w_t := I`` in the backward pass.

    Forward: a plain (graph-free) SGD step; BatchNorm running statistics are updated once, in
    ``buffers``, as in the exact step. Backward: the incoming ``v = dL/dw_{t+1}`` goes to
    ``w_t`` unchanged, and to the labels as ``-lr d/dq [v . g(w_t, q)]``, where ``v . g`` is
    the tangent of the inner loss in a forward-mode pass (``torch.func.jvp``, which composes
    with the learners' vmap; ``torch.autograd.forward_ad`` under vmap was much slower on a
    CPU) at ``w_t`` along ``v``, on a copy of the buffers so that statistics are not updated
    twice. Learners must be deterministic (no dropout): the backward re-runs their forward.
    """

    @staticmethod
    def forward(
        ctx,
        learners: InnerLearners,
        names: list[str],
        buffers: dict,
        x: torch.Tensor,
        lr: float,
        shared: bool,
        q: torch.Tensor,
        *flat: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        ctx.learners, ctx.names, ctx.lr, ctx.shared = learners, names, lr, shared
        ctx.buffers = {k: v.clone() for k, v in buffers.items()}
        ctx.save_for_backward(x, q, *flat)
        with torch.enable_grad():
            params = {n: w.detach().requires_grad_(True) for n, w in zip(names, flat)}
            new = learners.step(
                params, buffers, x, q.detach(), lr, shared=shared, create_graph=False
            )
        return tuple(new[n].detach() for n in names)

    @staticmethod
    def backward(ctx, *grad_w: torch.Tensor | None) -> tuple:
        x, q, *flat = ctx.saved_tensors
        grad_q = None
        if ctx.needs_input_grad[6]:
            tangents = tuple(torch.zeros_like(w) if g is None else g for w, g in zip(flat, grad_w))
            with torch.enable_grad():
                q_ = q.detach().requires_grad_(True)

                def inner_loss(*w: torch.Tensor) -> torch.Tensor:
                    buffers = {k: v.clone() for k, v in ctx.buffers.items()}  # mutated by BN
                    return ctx.learners.loss(
                        dict(zip(ctx.names, w)), buffers, x, q_, shared=ctx.shared
                    )

                primals = tuple(w.detach() for w in flat)
                slope = torch.func.jvp(inner_loss, primals, tangents)[1]  # v . g(w_t, q)
                (grad,) = torch.autograd.grad(slope, q_)
            grad_q = -ctx.lr * grad
        return (None, None, None, None, None, None, grad_q, *grad_w)
