"""``taskspace pretrain``: a SimCLR backbone for regulated discovery.

Trains ``model``'s backbone with SimCLR (:mod:`taskspace.discovery.ssl_pretrain`) and writes
``backbone.safetensors`` (the backbone's state dict, loadable by ``taskspace discover
backbone=...``), ``log.csv`` and ``config.yaml``. A checkpoint every ``checkpoint_every``
steps (``checkpoint.pt``: backbone, head, optimiser, schedule, generator) lets a killed run
resume where it stopped and end with the same backbone as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from taskspace.commands.agreement import COMMON_RENAMED
from taskspace.commands.report import write_run_report
from taskspace.config import option
from taskspace.data.config import DataConfig, load_data
from taskspace.discovery.ssl_pretrain import SimCLRSettings, SimCLRTrainer
from taskspace.errors import TaskspaceError
from taskspace.io import atomic_write, save_safetensors, write_csv
from taskspace.models.config import ModelConfig
from taskspace.progress import progress_bar
from taskspace.runs import RunDir

__all__ = ["PretrainConfig", "main", "run_pretrain"]


@dataclass
class PretrainConfig:
    """Options of ``taskspace pretrain``."""

    RENAMED: ClassVar[dict[str, str]] = {
        **COMMON_RENAMED,
        "arch": "model",
        "steps": "simclr.steps",
        "batch_size": "simclr.batch_size",
        "lr": "simclr.lr",
        "weight_decay": "simclr.weight_decay",
        "temperature": "simclr.temperature",
        "proj_dim": "simclr.proj_dim",
        "normalize_input": "simclr.normalize_input",
        "seed": "simclr.seed",
    }

    data: DataConfig = option(factory=DataConfig, selector="name", help="the images")
    model: ModelConfig = option(
        factory=ModelConfig, selector="name", help="the backbone's architecture"
    )
    simclr: SimCLRSettings = option(factory=SimCLRSettings, help="the SimCLR training")
    checkpoint_every: int = option(50, "steps between checkpoints")
    stop_after: int | None = option(None, "stop after this many steps (then rerun to resume)")
    device: str = option("cpu", "cpu or cuda")
    out: str | None = option(None, "run directory (default runs/pretrain-<data>-<model>-<hash>)")
    progress: bool = option(True, "progress bars")
    report: bool = option(True, "write report.html into the run directory at the end")


NON_RESULT_KEYS = {"out", "progress", "device", "checkpoint_every", "stop_after", "report"}


def run_pretrain(cfg: PretrainConfig) -> Path:
    """Run (or resume) ``taskspace pretrain``; returns the run directory."""
    rd = RunDir.for_config(
        cfg, "pretrain", NON_RESULT_KEYS, cfg.out, [cfg.data.name, cfg.model.name]
    )
    rd.check(cfg)
    if rd.finished():
        print(f"already finished: {rd.path}")
        return rd.path
    if cfg.checkpoint_every < 1:
        raise TaskspaceError(f"checkpoint_every must be >= 1, got {cfg.checkpoint_every}")
    ds = load_data(cfg.data, progress=cfg.progress)
    trainer = SimCLRTrainer(ds, cfg.model.name, cfg.model.kwargs, cfg.simclr, cfg.device)
    rd.start(cfg)
    ckpt = rd / "checkpoint.pt"
    if ckpt.exists():
        trainer.load_state_dict(torch.load(ckpt, map_location=cfg.device, weights_only=True))
        print(f"resuming {rd.path} at step {trainer.step}/{cfg.simclr.steps}")
    bar = progress_bar(cfg.simclr.steps, "simclr", cfg.progress, initial=trainer.step)
    done_here = 0
    while trainer.step < cfg.simclr.steps:
        if cfg.stop_after is not None and done_here >= cfg.stop_after:
            break
        loss = trainer.train_step()
        done_here += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
        if trainer.step % cfg.checkpoint_every == 0:
            save_checkpoint(trainer, ckpt)
    if bar is not None:
        bar.close()
    if trainer.step < cfg.simclr.steps:
        save_checkpoint(trainer, ckpt)
        print(f"stopped at step {trainer.step}/{cfg.simclr.steps}; rerun to resume")
        return rd.path
    write_csv(rd / "log.csv", trainer.logs, ["step", "loss"])
    save_safetensors(rd / "backbone.safetensors", trainer.backbone.state_dict())
    rd.mark_finished({"final_loss": trainer.logs[-1]["loss"]})
    ckpt.unlink(missing_ok=True)
    return rd.path


def save_checkpoint(trainer: SimCLRTrainer, path: Path) -> None:
    """Everything to continue exactly, atomically (weights-only loadable)."""
    state = trainer.state_dict()
    atomic_write(path, lambda p: torch.save(state, p))


def main(cfg: PretrainConfig) -> int:
    out = run_pretrain(cfg)
    if RunDir(out).finished():
        print(f"backbone: {out / 'backbone.safetensors'}")
        print(
            f"use it:   taskspace discover backbone={out / 'backbone.safetensors'} "
            f"encoder={cfg.model.name} "
            f"normalize_input={str(cfg.simclr.normalize_input).lower()}"
        )
    print(f"run directory: {out}")
    write_run_report(out, cfg.report)
    return 0
