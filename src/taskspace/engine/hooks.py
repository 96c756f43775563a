"""Hooks: what happens around the training steps, kept apart from them.

A hook is called at the start and end of the fit, of each chunk of models, and after every
step (see :class:`Hook`); it reads the running fit through a
:class:`~taskspace.engine.context.FitContext`. Hooks run in list order, except that
hooks with a larger ``order`` run later (checkpoints last, so they save what the other
hooks did at that step). A hook with state returns it from :meth:`Hook.state_dict`, so a
resumed fit continues it too.

- :class:`Evaluate`: metrics on named index sets every epoch (or every k steps), a
  history table, and the best parameters by any metric (e.g. worst-group accuracy);
- :class:`Checkpoint`: save the whole fit every k steps and resume from it;
- :class:`Log`: progress and losses through :mod:`logging`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from taskspace.engine.batches import Batch
from taskspace.engine.metrics import Metric
from taskspace.engine.state import load_state, save_state
from taskspace.engine.trainers import Stacked
from taskspace.errors import TaskspaceError

if TYPE_CHECKING:
    from taskspace.engine.context import FitContext

__all__ = ["Checkpoint", "Evaluate", "Hook", "Log"]

LOGGER = logging.getLogger("taskspace.engine")


class Hook:
    """Base class; every method is optional."""

    order: int = 0

    def on_fit_start(self, ctx: FitContext) -> None:
        """Before the first chunk (a checkpoint restores the fit here)."""

    def on_chunk_start(self, ctx: FitContext) -> None:
        """A chunk's models exist (``ctx.members``, ``ctx.current()``), before its steps."""

    def on_step_end(self, ctx: FitContext) -> None:
        """After step ``ctx.step`` of the chunk (``ctx.batch``, ``ctx.losses``)."""

    def on_chunk_end(self, ctx: FitContext) -> None:
        """The chunk is trained; ``ctx.parts[ctx.chunk]`` holds its result and may be
        replaced (e.g. by the best parameters)."""

    def on_fit_end(self, ctx: FitContext) -> None:
        """Every chunk is trained."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""


def epoch_ends(step: int, batch_size: int, epoch_lengths: torch.Tensor) -> torch.Tensor:
    """Which models complete an epoch with step ``step`` (0-based), ``[M]`` bool."""
    return (step + 1) * batch_size // epoch_lengths > step * batch_size // epoch_lengths


def _batch(ctx: FitContext) -> Batch:
    """The batch of the step just taken (hooks' ``on_step_end`` only)."""
    if ctx.batch is None:
        raise RuntimeError("no step has been taken yet")
    return ctx.batch


class Evaluate(Hook):
    """Metrics of every model on named index sets, during training.

    Args:
        sets: ``{name: indices}`` to evaluate on (e.g. ``{"val": val_idx}``).
        metrics: ``{name: metric}``, each ``metric(logits, idx, members) -> [M]``
            (:mod:`taskspace.engine.metrics`).
        every: ``"epoch"`` (each model at the end of each of its epochs) or a number of
            steps; every model is also evaluated after its last step.
        select: ``(set, metric)`` to select on; each model's best parameters (first best,
            ``mode`` "max" or "min") are kept, and returned by ``fit_many`` when
            ``restore_best``.

    ``history`` holds one row per model, evaluation, set and metric (``model``, ``step``
    (steps taken), ``epoch``, ``set``, ``metric``, ``value``); ``best`` maps each model to
    its best ``(value, step)``.
    """

    def __init__(
        self,
        sets: Mapping[str, torch.Tensor],
        metrics: Mapping[str, Metric],
        *,
        every: int | Literal["epoch"] = "epoch",
        select: tuple[str, str] | None = None,
        mode: Literal["max", "min"] = "max",
        restore_best: bool = True,
        batch_size: int = 1024,
    ) -> None:
        if select is not None and (select[0] not in sets or select[1] not in metrics):
            raise TaskspaceError(f"select={select} names an unknown set or metric")
        if every != "epoch" and (not isinstance(every, int) or every < 1):
            raise TaskspaceError(f"every must be 'epoch' or a positive int, got {every!r}")
        self.sets = {k: torch.as_tensor(v).long() for k, v in sets.items()}
        self.metrics, self.every, self.select, self.mode = dict(metrics), every, select, mode
        self.restore_best, self.batch_size = restore_best, batch_size
        self.history: list[dict[str, Any]] = []
        self.best: dict[int, tuple[float, int]] = {}
        self._best_state: dict[int, dict[str, dict[str, torch.Tensor]]] = {}

    def _due(self, ctx: FitContext) -> torch.Tensor:
        totals, s = ctx.chunk_totals, ctx.step
        last = totals == s + 1
        if self.every == "epoch":
            lengths = ctx.batcher.epoch_lengths[ctx.members]
            due = epoch_ends(s, ctx.recipe.batch_size, lengths)
        else:
            due = torch.full_like(last, (s + 1) % self.every == 0)
        return (due | last) & _batch(ctx).active

    def on_step_end(self, ctx: FitContext) -> None:
        due = self._due(ctx)
        if not bool(due.any()):
            return
        lengths = ctx.batcher.epoch_lengths[ctx.members]
        values = {}
        for set_name, idx in self.sets.items():
            logits = ctx.predict(idx, self.batch_size)
            for metric_name, metric in self.metrics.items():
                values[set_name, metric_name] = metric(logits, idx, ctx.members).cpu()
        steps = ctx.step + 1
        current = ctx.current() if self.select is not None else None
        for j in due.nonzero().flatten().tolist():
            m = ctx.members[j]
            epoch = steps * ctx.recipe.batch_size / int(lengths[j])
            for (set_name, metric_name), v in values.items():
                self.history.append(
                    {
                        "model": m,
                        "step": steps,
                        "epoch": round(epoch, 6),
                        "set": set_name,
                        "metric": metric_name,
                        "value": float(v[j]),
                    }
                )
            if self.select is not None and current is not None:
                self._keep_if_best(current, j, m, float(values[self.select][j]), steps)
        LOGGER.debug("evaluated models %s after step %d", due.nonzero().flatten().tolist(), steps)

    def _keep_if_best(self, current: Stacked, j: int, m: int, value: float, step: int) -> None:
        old = self.best.get(m)
        better = old is None or (value > old[0] if self.mode == "max" else value < old[0])
        if better:
            self.best[m] = (value, step)
            params, buffers = current
            self._best_state[m] = {
                "params": {k: v[j].detach().cpu().clone() for k, v in params.items()},
                "buffers": {k: v[j].detach().cpu().clone() for k, v in buffers.items()},
            }

    def on_chunk_end(self, ctx: FitContext) -> None:
        if not (self.restore_best and self.select):
            return
        params, buffers = ctx.parts[ctx.chunk]
        params = {k: v.clone() for k, v in params.items()}
        buffers = {k: v.clone() for k, v in buffers.items()}
        for j, m in enumerate(ctx.members):
            if m in self._best_state:
                for k, v in self._best_state[m]["params"].items():
                    params[k][j] = v
                for k, v in self._best_state[m]["buffers"].items():
                    buffers[k][j] = v
        ctx.parts[ctx.chunk] = (params, buffers)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "best": {str(m): list(v) for m, v in self.best.items()},
            "best_state": {str(m): v for m, v in self._best_state.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.best = {int(m): (float(v[0]), int(v[1])) for m, v in state["best"].items()}
        self._best_state = {int(m): v for m, v in state["best_state"].items()}


class Checkpoint(Hook):
    """Save the whole fit to ``path`` (one safetensors file) every ``every`` steps and at
    the end of each chunk; when ``path`` exists at the start, continue from it.

    Continuing gives the same parameters as an uninterrupted fit (exactly, on a CPU). A
    file written by a fit with other arguments is refused. After the fit the file holds
    the finished fit, so running the same fit again returns at once.
    """

    order = 100  # after every other hook of a step

    def __init__(self, path: str | Path, every: int = 100) -> None:
        if every < 1:
            raise TaskspaceError(f"checkpoint every must be >= 1, got {every}")
        self.path, self.every = Path(path), int(every)

    def on_fit_start(self, ctx: FitContext) -> None:
        if self.path.is_file():
            ctx.load_state_dict(load_state(self.path), source=str(self.path))
            LOGGER.info("resuming from %s", self.path)

    def on_step_end(self, ctx: FitContext) -> None:
        if (ctx.step + 1) % self.every == 0:
            save_state(self.path, ctx.state_dict())

    def on_chunk_end(self, ctx: FitContext) -> None:
        save_state(self.path, ctx.state_dict())


class Log(Hook):
    """Log the step and the mean loss of the active models every ``every`` steps, and each
    chunk's end, to the ``taskspace.engine`` logger (losses are not computed by the
    hand-written MLP step; then only the step is logged)."""

    def __init__(self, every: int = 100, logger: logging.Logger | None = None) -> None:
        self.every, self.logger = int(every), logger or LOGGER

    def on_step_end(self, ctx: FitContext) -> None:
        if (ctx.step + 1) % self.every:
            return
        total = int(ctx.chunk_totals.max())
        if ctx.losses is None:
            self.logger.info("chunk %d step %d/%d", ctx.chunk, ctx.step + 1, total)
            return
        act = _batch(ctx).active.to(ctx.losses.device)
        mean = float(ctx.losses[act].mean())
        self.logger.info("chunk %d step %d/%d loss %.4f", ctx.chunk, ctx.step + 1, total, mean)

    def on_chunk_end(self, ctx: FitContext) -> None:
        self.logger.info(
            "chunk %d of %d done (models %d-%d)",
            ctx.chunk + 1,
            len(ctx.chunks),
            ctx.members[0],
            ctx.members[-1],
        )
