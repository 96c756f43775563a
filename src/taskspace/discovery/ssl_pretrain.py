"""``taskspace pretrain``: a SimCLR backbone for regulated discovery.

Regulated discovery (``reference/task-discovery.md`` section 6) restricts the task encoder
to a frozen self-supervised backbone, so discovered tasks must be invariant to the
augmentations the backbone was trained to ignore (with colour jitter: less colour-based,
more semantic tasks). This command trains any registry backbone with SimCLR on any
dataset and writes ``backbone.safetensors`` (the backbone's state dict, loadable by
``taskspace discover backbone=...``) and ``config.yaml``.

Augmentations are batched tensor ops sized to the image: random resized crop (scale
0.2-1, aspect 3/4-4/3, bilinear resampling with ``affine_grid``), horizontal flip (off for
digits-like grayscale data? no: kept, as in SimCLR), and for RGB images colour jitter
(brightness, contrast, saturation 0.4, p=0.8) and random grayscale (p=0.2). Loss: NT-Xent
with temperature 0.5 on a 2-layer projection head. Inputs are raw ``[0, 1]`` pixels unless
``normalize_input=true``, so pass the same ``normalize_input`` to ``taskspace discover``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from taskspace.agreement.run import DataConfig, dataset_of
from taskspace.config import to_dict
from taskspace.data import ImageDataset
from taskspace.errors import TaskspaceError
from taskspace.io import atomic_write, write_csv, write_yaml
from taskspace.models import create_model

__all__ = ["PretrainConfig", "augment", "nt_xent", "pretrain_simclr"]


@dataclass
class PretrainConfig(DataConfig):
    """Options of ``taskspace pretrain`` (``key=value``)."""

    arch: str = "mlp"
    model_kwargs: dict | None = None
    steps: int = 300
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-6
    temperature: float = 0.5
    proj_dim: int = 64
    normalize_input: bool = False
    seed: int = 0
    device: str = "cpu"
    out: str | None = None
    progress: bool = True


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


def pretrain_simclr(ds: ImageDataset, cfg: PretrainConfig) -> tuple[nn.Module, list[dict]]:
    """Train ``cfg.arch``'s backbone with SimCLR on the ``train`` split; returns it + logs."""
    if cfg.steps < 1 or cfg.batch_size < 2:
        raise TaskspaceError("steps must be >= 1 and batch_size >= 2")
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, 2, in_channels=ds.channels, image_size=ds.image_size,
                         **(cfg.model_kwargs or {}))
    backbone = model.backbone.to(cfg.device).train()
    feat = int(model.feature_dim)
    head = nn.Sequential(nn.Linear(feat, feat), nn.ReLU(), nn.Linear(feat, cfg.proj_dim))
    head = head.to(cfg.device)
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    g = torch.Generator().manual_seed(cfg.seed)
    train = ds.split("train")
    bs = min(cfg.batch_size, len(train))
    logs = []
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc="simclr", leave=False)
    for step in range(cfg.steps):
        idx = train[torch.randperm(len(train), generator=g)[:bs]]
        x = ds.images[idx].float().div(255.0)
        v1 = _inputs(ds, augment(x, g), cfg.normalize_input).to(cfg.device)
        v2 = _inputs(ds, augment(x, g), cfg.normalize_input).to(cfg.device)
        loss = nt_xent(head(backbone(v1)), head(backbone(v2)), cfg.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        logs.append({"step": step, "loss": float(loss.detach())})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    if bar is not None:
        bar.close()
    return backbone.eval(), logs


def default_out(cfg: PretrainConfig) -> Path:
    key = {k: v for k, v in to_dict(cfg).items() if k not in ("out", "progress", "device")}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return Path("runs") / f"pretrain-{cfg.data}-{cfg.arch}-{digest}"


def run_pretrain(cfg: PretrainConfig) -> Path:
    """Run ``taskspace pretrain``; returns the run directory (skips if already finished)."""
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    if (out / "backbone.safetensors").exists():
        print(f"already finished: {out}")
        return out
    ds = dataset_of(cfg)
    backbone, logs = pretrain_simclr(ds, cfg)
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    write_yaml(out / "config.yaml", to_dict(cfg))
    write_csv(out / "log.csv", logs, ["step", "loss"])
    atomic_write(out / "backbone.safetensors", lambda p: save_file(state, str(p)))
    return out


def main(cfg: PretrainConfig) -> int:
    out = run_pretrain(cfg)
    print(f"backbone: {out / 'backbone.safetensors'}")
    print(f"use it:   taskspace discover backbone={out / 'backbone.safetensors'} "
          f"arch={cfg.arch} normalize_input={str(cfg.normalize_input).lower()}")
    print(f"run directory: {out}")
    return 0
