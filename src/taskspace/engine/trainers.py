"""The two ways to train one chunk of models, step by step, with the same result.

- :class:`BatchedTrainer`: the chunk's parameters stacked (``stack_module_state``), the
  forward pass ``vmap(functional_call)``, the objective's per-model losses summed and one
  ``backward()`` (or, for plain MLPs on a CPU with plain cross-entropy, the hand-written
  step of :mod:`taskspace.engine.mlp_step`), then one :class:`StackedOptimizer` step.
- :class:`LoopTrainer`: each model its own module and stock ``torch.optim`` optimiser: the
  reference path, and the fallback for modules that cannot be vmapped.

Both take a :class:`~taskspace.engine.batches.Batch` per step and expose their complete
state (parameters, buffers, optimiser state) for checkpoints. Before each
:meth:`~taskspace.engine.objectives.Objective.backward` both fill in the step's view of
the :class:`~taskspace.engine.objectives.SharedParams` (a forward pass of the same batch
with replaced shared tensors, the learning rates, weight decays and momentum buffers), which
a lookahead method such as TAG's reads.
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from taskspace.engine.batches import Batch
from taskspace.engine.batchnorm import use_reduction_batchnorm
from taskspace.engine.mlp_step import StackedMLPStep, stacked_mlp_layers
from taskspace.engine.objectives import CrossEntropy, Objective, ObjectiveState, SharedParams
from taskspace.engine.optim import StackedOptimizer, schedule_lr
from taskspace.engine.recipe import Recipe

__all__ = ["BatchedTrainer", "ChunkTrainer", "LoopTrainer"]

Stacked = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


def autocast(recipe: Recipe, device: torch.device) -> torch.autocast:
    enabled = recipe.bf16 and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def is_shared(name: str) -> bool:
    """Whether parameter ``name`` belongs to the trunk (everything but the ``head``)."""
    return not name.startswith("head.")


class ChunkTrainer:
    """Trains ``models`` (the fit's models ``members``) for ``totals [M]`` steps each."""

    def __init__(
        self,
        models: list[nn.Module],
        totals: torch.Tensor,
        recipe: Recipe,
        device: torch.device,
        objective: Objective,
        state: ObjectiveState,
        lrs: torch.Tensor | None = None,
        weight_decays: torch.Tensor | None = None,
    ) -> None:
        """``lrs`` / ``weight_decays`` ``[M]``: per-model base learning rates and weight
        decays (``None``: the recipe's for every model)."""
        self.totals, self.recipe, self.device = totals, recipe, device
        self.objective, self.state = objective, state
        self.lr_mult = None if lrs is None else lrs.double() / recipe.lr
        self.wds = weight_decays
        for mod in models:
            mod.to(device).train()

    def lrs_at(self, step: int) -> torch.Tensor:
        """``[M]`` learning rates at ``step``: the recipe's schedule times each model's base."""
        lrs = schedule_lr(self.recipe, step, self.totals)
        return lrs if self.lr_mult is None else lrs * self.lr_mult

    def weight_decays(self) -> torch.Tensor:
        """``[M]`` weight decays (float64): each model's, or the recipe's."""
        if self.wds is not None:
            return torch.as_tensor(self.wds, dtype=torch.float64)
        return torch.full(self.totals.shape, float(self.recipe.weight_decay), dtype=torch.float64)

    def step(self, batch: Batch) -> torch.Tensor | None:
        """One optimiser step of the active members; the per-model losses when computed."""
        raise NotImplementedError

    def current(self) -> Stacked:
        """The members' current parameters and buffers, stacked ``[M, ...]``."""
        raise NotImplementedError

    def result(self) -> Stacked:
        params, buffers = self.current()
        return (
            {k: v.detach().cpu() for k, v in params.items()},
            {k: v.detach().cpu() for k, v in buffers.items()},
        )

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


class BatchedTrainer(ChunkTrainer):
    """vmap + autograd over stacked parameters, or the hand-written MLP step (used when
    ``mlp_step`` is on, the device is a CPU, the model a plain MLP and the objective plain
    :class:`CrossEntropy`, whose gradient that step computes itself)."""

    def __init__(
        self,
        models: list[nn.Module],
        totals: torch.Tensor,
        recipe: Recipe,
        device: torch.device,
        objective: Objective,
        state: ObjectiveState,
        lrs: torch.Tensor | None = None,
        weight_decays: torch.Tensor | None = None,
        mlp_step: bool = True,
    ) -> None:
        super().__init__(models, totals, recipe, device, objective, state, lrs, weight_decays)
        self.params, self.buffers = stack_module_state(models)
        self.base = use_reduction_batchnorm(copy.deepcopy(models[0]).to("meta"))
        self.opt = StackedOptimizer(list(self.params.values()), recipe, weight_decays)
        names = [k for k in self.params if is_shared(k)]
        self.shared = SharedParams([self.params[k] for k in names], True, names)
        self.shared.recipe = recipe
        self.shared.momentum_buffers = self._momentum_buffers
        self._shared_pos = [list(self.params).index(k) for k in names]
        # plain MLPs on a CPU: the same arithmetic with fewer elementwise passes; on CUDA
        # the vmap step with autocast is kept
        use = mlp_step and device.type == "cpu" and type(objective) is CrossEntropy
        layers = stacked_mlp_layers(models[0]) if use else None
        self.mlp_step = StackedMLPStep(layers) if layers else None

    def step(self, batch: Batch) -> torch.Tensor | None:
        losses = None
        if self.mlp_step is not None:
            self.mlp_step(
                self.params,
                self.buffers,
                batch.x,
                batch.y,
                batch.w,
                batch.active,
                shared=batch.shared,
            )
        else:
            losses = self._vmap_grads(batch)
        self.opt.step(self.lrs_at(batch.step), batch.active)
        self.opt.zero_grad()
        self.shared.forward = None  # the step's batch is not kept alive
        return losses

    def _fwd(self, p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (p, b), (x,))

    def _vmap_grads(self, batch: Batch) -> torch.Tensor:
        """Gradients into ``.grad`` by vmap + autograd; inactive models keep their buffers."""
        x, active = batch.x, batch.active
        if self.recipe.channels_last and self.device.type == "cuda" and batch.shared:
            x = x.contiguous(memory_format=torch.channels_last)
        in_dims = (0, 0, None) if batch.shared else (0, 0, 0)
        old_buffers = None
        if self.buffers and not bool(active.all()):
            old_buffers = {k: v.clone() for k, v in self.buffers.items()}
        with autocast(self.recipe, self.device):
            logits = torch.vmap(self._fwd, in_dims=in_dims, randomness="different")(
                self.params, self.buffers, x
            )
        self.shared.lrs = self.lrs_at(batch.step).to(self.device, torch.float32)
        self.shared.weight_decays = self.weight_decays().to(self.device, torch.float32)
        self.shared.forward = partial(self._replaced_forward, x, in_dims)
        losses = self.objective.backward(logits.float(), batch, self.state, self.shared)
        if old_buffers is not None:
            act = active.to(self.device)
            for k, v in self.buffers.items():
                v.copy_(torch.where(act.view(-1, *[1] * (v.dim() - 1)), v, old_buffers[k]))
        return losses

    @torch.no_grad()
    def _replaced_forward(
        self,
        x: torch.Tensor,
        in_dims: tuple[int | None, ...],
        replacement: list[torch.Tensor],
        mutate_buffers: bool,
    ) -> torch.Tensor:
        """Logits of ``x`` with the shared tensors replaced (``[M, ...]`` each) and the
        heads as they are; the running buffers are updated only if ``mutate_buffers``."""
        params = {k: v.detach() for k, v in self.params.items()}
        params.update(zip(self.shared.names, replacement))
        buffers = (
            self.buffers if mutate_buffers else {k: v.clone() for k, v in self.buffers.items()}
        )
        with autocast(self.recipe, self.device):
            out = torch.vmap(self._fwd, in_dims=in_dims, randomness="different")(params, buffers, x)
        return out.float()

    def _momentum_buffers(self) -> list[torch.Tensor | None]:
        """The shared tensors' SGD momentum buffers ``[M, ...]`` (zero rows for models
        that have not stepped), or ``None`` before the first step."""
        out: list[torch.Tensor | None] = []
        for i in self._shared_pos:
            st = self.opt.state[i]
            buf = st.get("buf")
            if buf is not None and "seen" in st:
                seen = st["seen"].to(buf.device).view(-1, *[1] * (buf.dim() - 1))
                buf = torch.where(seen, buf, torch.zeros_like(buf))
            out.append(buf)
        return out

    def current(self) -> Stacked:
        return self.params, self.buffers

    def state_dict(self) -> dict[str, Any]:
        return {"params": self.params, "buffers": self.buffers, "opt": self.opt.state_dict()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in self.params.items():
            v.copy_(state["params"][k])
        for k, v in self.buffers.items():
            v.copy_(state["buffers"][k])
        self.opt.load_state_dict(state["opt"])


class LoopTrainer(ChunkTrainer):
    """The plain reference path: each model with its own ``torch.optim`` optimiser."""

    def __init__(
        self,
        models: list[nn.Module],
        totals: torch.Tensor,
        recipe: Recipe,
        device: torch.device,
        objective: Objective,
        state: ObjectiveState,
        lrs: torch.Tensor | None = None,
        weight_decays: torch.Tensor | None = None,
    ) -> None:
        super().__init__(models, totals, recipe, device, objective, state, lrs, weight_decays)
        self.models = models
        wds = [recipe.weight_decay] * len(models) if weight_decays is None else weight_decays
        self.opts = [self._optimizer(mod, recipe, float(wd)) for mod, wd in zip(models, wds)]
        self.shared = [self._shared(mod, opt) for mod, opt in zip(models, self.opts)]
        for sp, wd in zip(self.shared, wds):
            sp.recipe = recipe
            sp.weight_decays = torch.tensor([float(wd)], device=device)

    @staticmethod
    def _shared(mod: nn.Module, opt: torch.optim.Optimizer) -> SharedParams:
        named = [(k, p) for k, p in mod.named_parameters() if is_shared(k)]
        sp = SharedParams([p for _, p in named], False, [k for k, _ in named])
        sp.momentum_buffers = partial(LoopTrainer._momentum_buffers, opt, sp.tensors)
        return sp

    @staticmethod
    def _momentum_buffers(
        opt: torch.optim.Optimizer, tensors: list[torch.Tensor]
    ) -> list[torch.Tensor | None]:
        """``torch.optim.SGD``'s momentum buffers of ``tensors``, ``[1, ...]`` each."""
        out: list[torch.Tensor | None] = []
        for p in tensors:
            buf = opt.state.get(p, {}).get("momentum_buffer")
            out.append(None if buf is None else buf.unsqueeze(0))
        return out

    @staticmethod
    @torch.no_grad()
    def _replaced_forward(
        mod: nn.Module,
        x: torch.Tensor,
        recipe: Recipe,
        device: torch.device,
        names: list[str],
        replacement: list[torch.Tensor],
        mutate_buffers: bool,
    ) -> torch.Tensor:
        """``[1, B, outputs]`` logits of one model with its shared tensors replaced
        (``[1, ...]`` each); its running buffers change only if ``mutate_buffers``."""
        tensors: dict[str, torch.Tensor] = {k: r.squeeze(0) for k, r in zip(names, replacement)}
        if not mutate_buffers:
            tensors.update({k: b.clone() for k, b in mod.named_buffers()})
        with autocast(recipe, device):
            out = functional_call(mod, tensors, (x,))
        return out.float()[None]

    @staticmethod
    def _optimizer(mod: nn.Module, r: Recipe, weight_decay: float) -> torch.optim.Optimizer:
        if r.optimizer == "adam":
            return torch.optim.Adam(
                mod.parameters(), lr=r.lr, betas=r.betas, eps=r.eps, weight_decay=weight_decay
            )
        return torch.optim.SGD(
            mod.parameters(),
            lr=r.lr,
            momentum=r.momentum,
            nesterov=r.nesterov,
            weight_decay=weight_decay,
        )

    def step(self, batch: Batch) -> torch.Tensor:
        losses = torch.full((len(self.models),), float("nan"), device=self.device)
        lrs = self.lrs_at(batch.step)
        for j, (mod, opt) in enumerate(zip(self.models, self.opts)):
            if not bool(batch.active[j]):
                continue
            one = batch.select(j)
            xj = one.x
            if self.recipe.channels_last and self.device.type == "cuda":
                xj = xj.contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = float(lrs[j])
            with autocast(self.recipe, self.device):
                logits = mod(xj)
            opt.zero_grad()
            sp = self.shared[j]
            sp.lrs = lrs[j : j + 1].to(self.device, torch.float32)
            sp.forward = partial(
                self._replaced_forward, mod, xj, self.recipe, self.device, sp.names
            )
            loss = self.objective.backward(logits.float()[None], one, self.state, sp)
            sp.forward = None  # the step's batch is not kept alive
            opt.step()
            losses[j] = loss[0]
        return losses

    def current(self) -> Stacked:
        params, buffers = stack_module_state(self.models)
        return {k: v.detach() for k, v in params.items()}, buffers

    def state_dict(self) -> dict[str, Any]:
        return {
            "models": [m.state_dict() for m in self.models],
            "opts": [o.state_dict() for o in self.opts],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for mod, st in zip(self.models, state["models"]):
            mod.load_state_dict(st)
        for opt, st in zip(self.opts, state["opts"]):
            opt.load_state_dict(st)
