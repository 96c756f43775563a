"""``FitContext``: a running ``fit_many`` as hooks see it, and as a checkpoint stores it.

Models are trained chunk after chunk; within a chunk, step after step. The context names
the current chunk (``members``), the step just taken, its batch and losses, and the
finished chunks' parameters (``parts``). Its :meth:`~FitContext.state_dict` is everything
needed to continue the fit exactly where it stopped: finished chunks, the current chunk's
trainer (parameters, buffers, optimiser state), every model's index stream and
augmentation generator, the objective's state, the hooks' state, the global RNG and the
step counter.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from taskspace.data.dataset import ImageDataset
from taskspace.engine.batches import Batch, Batcher, FitData
from taskspace.engine.objectives import Objective, ObjectiveState
from taskspace.engine.predict import stacked_logits
from taskspace.engine.recipe import Recipe
from taskspace.engine.state import digest
from taskspace.engine.trainers import ChunkTrainer, Stacked
from taskspace.errors import TaskspaceError

if TYPE_CHECKING:
    from taskspace.engine.hooks import Hook

__all__ = ["FitContext", "Resume"]


@dataclass
class Resume:
    """Where a restored fit continues: chunk ``chunk`` at step ``step`` (``trainer`` is
    that chunk's saved trainer state; None when the chunk had not started)."""

    chunk: int
    step: int
    trainer: dict[str, Any] | None
    rng: torch.Tensor


class FitContext:
    """The state of one ``fit_many`` call (see the module docstring)."""

    def __init__(
        self,
        *,
        model_name: str,
        dataset: ImageDataset,
        recipe: Recipe,
        device: torch.device,
        data: FitData,
        objective: Objective,
        objective_state: ObjectiveState,
        batcher: Batcher,
        totals: torch.Tensor,
        chunks: list[list[int]],
        hooks: list[Hook],
        config: dict[str, Any],
        probe: nn.Module,
    ) -> None:
        self.model_name, self.dataset = model_name, dataset
        self.recipe, self.device = recipe, device
        self.data, self.objective, self.objective_state = data, objective, objective_state
        self.batcher, self.totals, self.chunks, self.hooks = batcher, totals, chunks, hooks
        self.config = config
        self.chunk = 0
        self.members: list[int] = []
        self.trainer: ChunkTrainer | None = None
        self.probe = probe  # one model of the architecture (for eval_base)
        self.step = -1  # the step just taken in the current chunk
        self.batch: Batch | None = None
        self.losses: torch.Tensor | None = None
        self.parts: dict[int, Stacked] = {}
        self.resume: Resume | None = None

    @cached_property
    def fingerprint(self) -> str:
        """A digest of every argument that changes the result (tensors by content)."""
        return digest(self.config)

    @cached_property
    def eval_base(self) -> nn.Module:
        """The architecture in eval mode on the meta device, for stacked evaluation."""
        return copy.deepcopy(self.probe).to("meta").eval()

    @property
    def chunk_totals(self) -> torch.Tensor:
        """Steps of each member of the current chunk."""
        return self.totals[self.members]

    def current(self) -> Stacked:
        """The current chunk's parameters and buffers, stacked ``[M, ...]``."""
        if self.trainer is None:
            raise RuntimeError("no chunk is training")
        return self.trainer.current()

    def predict(self, idx: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Eval-mode logits ``[M, n, outputs]`` of the current chunk's models on ``idx``."""
        params, buffers = self.current()
        return stacked_logits(
            self.eval_base,
            params,
            buffers,
            self.dataset,
            idx,
            batch_size=batch_size,
            device=self.device,
        )

    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        return {
            "fingerprint": self.fingerprint,
            "chunk": self.chunk if trainer is not None else self.chunk + 1,
            "step": self.step + 1 if trainer is not None else 0,
            "trainer": trainer.state_dict() if trainer is not None else None,
            "parts": {str(c): {"params": p, "buffers": b} for c, (p, b) in self.parts.items()},
            "batcher": self.batcher.state_dict(),
            "objective": self.objective_state,
            "hooks": [{"type": type(h).__name__, "state": h.state_dict()} for h in self.hooks],
            "rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore a saved fit; ``fit_many`` then continues at ``self.resume``."""
        if state["fingerprint"] != self.fingerprint:
            raise TaskspaceError(
                f"{source} was written by a fit with other arguments (data, labels, recipe, "
                "seeds, sampler, objective or model); delete it or checkpoint elsewhere"
            )
        self.parts = {int(c): (p["params"], p["buffers"]) for c, p in state["parts"].items()}
        self.batcher.load_state_dict(state["batcher"])
        for k, v in self.objective_state.items():
            v.copy_(state["objective"][k])
        saved: dict[str, list[dict[str, Any]]] = {}
        for h in state["hooks"]:
            saved.setdefault(h["type"], []).append(h["state"])
        for h in self.hooks:  # the k-th hook of a type continues the k-th saved one
            queue = saved.get(type(h).__name__)
            if queue:
                h.load_state_dict(queue.pop(0))
        self.resume = Resume(state["chunk"], state["step"], state["trainer"], state["rng"])
