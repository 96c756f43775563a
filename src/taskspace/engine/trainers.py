"""The two ways to train one chunk of models, step by step, with the same result.

- :class:`BatchedTrainer`: the chunk's parameters stacked (``stack_module_state``), the
  forward pass ``vmap(functional_call)``, the objective's per-model losses summed and one
  ``backward()`` (or, for plain MLPs on a CPU with plain cross-entropy, the hand-written
  step of :mod:`taskspace.engine.mlp_step`), then one :class:`StackedOptimizer` step.
- :class:`LoopTrainer`: each model its own module and stock ``torch.optim`` optimiser: the
  reference path, and the fallback for modules that cannot be vmapped.

Both take a :class:`~taskspace.engine.batches.Batch` per step and expose their complete
state (parameters, buffers, optimiser state) for checkpoints.
"""

from __future__ import annotations

import copy
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
        losses = self.objective.backward(logits.float(), batch, self.state, self.shared)
        if old_buffers is not None:
            act = active.to(self.device)
            for k, v in self.buffers.items():
                v.copy_(torch.where(act.view(-1, *[1] * (v.dim() - 1)), v, old_buffers[k]))
        return losses

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
        self.shared = [self._shared(mod) for mod in models]

    @staticmethod
    def _shared(mod: nn.Module) -> SharedParams:
        named = [(k, p) for k, p in mod.named_parameters() if is_shared(k)]
        return SharedParams([p for _, p in named], False, [k for k, _ in named])

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
            loss = self.objective.backward(logits.float()[None], one, self.state, self.shared[j])
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
