"""SimCLR pre-training of a backbone, for regulated discovery.

Regulated discovery (``reference/task-discovery.md`` section 6) restricts the task encoder
to a frozen self-supervised backbone, so discovered tasks must be invariant to the
augmentations the backbone was trained to ignore (with colour jitter: less colour-based,
more semantic tasks). :class:`SimCLRTrainer` trains any registry backbone with SimCLR on any
dataset, checkpointably (every random draw comes from one generator whose state is saved).

Augmentations are batched tensor ops sized to the image: random resized crop (scale
0.2-1, aspect 3/4-4/3, bilinear resampling with ``affine_grid``), horizontal flip, and for
RGB images colour jitter (brightness, contrast, saturation 0.4, p=0.8) and random
grayscale (p=0.2). Loss: NT-Xent with temperature 0.5 on a 2-layer projection head. Inputs
are raw ``[0, 1]`` pixels unless ``normalize_input``, so pass the same ``normalize_input``
to discovery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from taskspace.config import option
from taskspace.data import ImageDataset
from taskspace.errors import TaskspaceError
from taskspace.models import create_model
from taskspace.progress import progress_bar

__all__ = ["SimCLRSettings", "SimCLRTrainer", "augment", "nt_xent", "pretrain_simclr"]


@dataclass
class SimCLRSettings:
    """How the backbone is pre-trained."""

    steps: int = option(300, "optimiser steps")
    batch_size: int = option(256, "images per step (two views each)")
    lr: float = option(1e-3, "AdamW learning rate (cosine schedule)")
    weight_decay: float = option(1e-6, "AdamW weight decay")
    temperature: float = option(0.5, "NT-Xent temperature")
    proj_dim: int = option(64, "projection head output size")
    normalize_input: bool = option(False, "mean/std-normalise inputs (else raw [0, 1] pixels)")
    seed: int = option(0, "seed of the initialisation, batches and augmentations")


def _rand(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """SimCLR views of float images ``[B, C, H, W]`` in ``[0, 1]`` (same shape)."""
    b, c = x.shape[:2]
    scale = _rand(g, b, 0.2, 1.0)
    logr = _rand(g, b, math.log(3 / 4), math.log(4 / 3))
    ratio = torch.exp(logr)
    sw = torch.sqrt(scale * ratio).clamp(max=1.0)
    sh = torch.sqrt(scale / ratio).clamp(max=1.0)
    tx = (1 - sw) * (2 * torch.rand(b, generator=g) - 1)
    ty = (1 - sh) * (2 * torch.rand(b, generator=g) - 1)
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = sw * flip
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if c == 3:
        apply = (torch.rand(b, generator=g) < 0.8).view(b, 1, 1, 1).to(x)
        bright = _rand(g, b, 0.6, 1.4).view(b, 1, 1, 1).to(x)
        contrast = _rand(g, b, 0.6, 1.4).view(b, 1, 1, 1).to(x)
        sat = _rand(g, b, 0.6, 1.4).view(b, 1, 1, 1).to(x)
        y = x * bright
        gray = (0.299 * y[:, 0] + 0.587 * y[:, 1] + 0.114 * y[:, 2]).unsqueeze(1)
        y = (y - gray.mean((2, 3), keepdim=True)) * contrast + gray.mean((2, 3), keepdim=True)
        gray = (0.299 * y[:, 0] + 0.587 * y[:, 1] + 0.114 * y[:, 2]).unsqueeze(1)
        y = gray + (y - gray) * sat
        x = apply * y.clamp(0, 1) + (1 - apply) * x
        to_gray = (torch.rand(b, generator=g) < 0.2).view(b, 1, 1, 1).to(x)
        gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        x = to_gray * gray.expand_as(x) + (1 - to_gray) * x
    else:  # grayscale: brightness/contrast jitter only
        bright = _rand(g, b, 0.7, 1.3).view(b, 1, 1, 1).to(x)
        x = (x * bright).clamp(0, 1)
    return x


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent (SimCLR) loss of two views' projections ``[B, p]``."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    b = z1.shape[0]
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)


def _inputs(ds: ImageDataset, x: torch.Tensor, normalize: bool) -> torch.Tensor:
    if not normalize:
        return x
    mean = torch.tensor(ds.mean, device=x.device).view(-1, 1, 1)
    std = torch.tensor(ds.std, device=x.device).view(-1, 1, 1)
    return (x - mean) / std


class SimCLRTrainer:
    """SimCLR on the ``train`` split of ``ds``; steps can be taken in pieces and resumed.

    Args:
        ds: the images.
        arch, model_kwargs: the backbone (a registry architecture; its classifier unused).
        settings: :class:`SimCLRSettings`.
        device: torch device.
    """

    def __init__(
        self,
        ds: ImageDataset,
        arch: str,
        model_kwargs: dict | None,
        settings: SimCLRSettings,
        device: str = "cpu",
    ) -> None:
        s = settings
        if s.steps < 1 or s.batch_size < 2:
            raise TaskspaceError("steps must be >= 1 and batch_size >= 2")
        self.ds, self.s, self.device = ds, s, device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            model = create_model(
                arch, 2, in_channels=ds.channels, image_size=ds.image_size, **(model_kwargs or {})
            )
            feat = int(model.feature_dim)
            head = nn.Sequential(nn.Linear(feat, feat), nn.ReLU(), nn.Linear(feat, s.proj_dim))
        self.backbone = model.backbone.to(device).train()
        self.head = head.to(device)
        params = list(self.backbone.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, s.steps)
        self.gen = torch.Generator().manual_seed(s.seed)
        self.step = 0
        self.logs: list[dict] = []

    def train_step(self) -> float:
        """One SimCLR step; returns its loss."""
        train = self.ds.split("train")
        bs = min(self.s.batch_size, len(train))
        g = self.gen
        idx = train[torch.randperm(len(train), generator=g)[:bs]]
        x = self.ds.images[idx].float().div(255.0)
        v1 = _inputs(self.ds, augment(x, g), self.s.normalize_input).to(self.device)
        v2 = _inputs(self.ds, augment(x, g), self.s.normalize_input).to(self.device)
        loss = nt_xent(
            self.head(self.backbone(v1)), self.head(self.backbone(v2)), self.s.temperature
        )
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.sched.step()
        value = float(loss.detach())
        self.logs.append({"step": self.step, "loss": value})
        self.step += 1
        return value

    def state_dict(self) -> dict:
        """Everything needed to continue exactly (plain tensors: weights-only loadable)."""
        return {
            "backbone": self.backbone.state_dict(),
            "head": self.head.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "generator": self.gen.get_state(),
            "step": self.step,
            "logs": [dict(r) for r in self.logs],
        }

    def load_state_dict(self, state: dict) -> None:
        self.backbone.load_state_dict(state["backbone"])
        self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        self.step = int(state["step"])
        self.logs = list(state["logs"])


def pretrain_simclr(
    ds: ImageDataset,
    arch: str = "mlp",
    model_kwargs: dict | None = None,
    settings: SimCLRSettings | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[nn.Module, list[dict]]:
    """Train ``arch``'s backbone with SimCLR (no run directory); returns it and the logs."""
    trainer = SimCLRTrainer(ds, arch, model_kwargs, settings or SimCLRSettings(), device)
    bar = progress_bar(trainer.s.steps, "simclr", progress)
    while trainer.step < trainer.s.steps:
        loss = trainer.train_step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
    if bar is not None:
        bar.close()
    return trainer.backbone.eval(), trainer.logs
