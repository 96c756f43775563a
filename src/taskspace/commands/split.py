"""``taskspace split``: adversarial train/test splits from discovered (or given) tasks.

Writes a run directory with ``config.yaml``, ``targets.npz`` / ``discovered.npz`` (the tasks
used), ``splits/*.npz`` (one file per split, random baselines included), ``splits.csv``
(sizes, target positive rate and class counts of both sides) and, with
``export_partitions=true``, ``partitions/*.csv`` in the CelebA ``list_eval_partition.csv``
layout. Split files are written one by one and ``splits.csv`` last, so a killed run is
rerun from its beginning and ends with the same files.

- ``discovered=<discovery run dir | tasks file>[:<format>]``: the tasks ``tau_d`` (first
  ``num_discovered``); ``discovered=human`` uses human tasks other than the targets and
  ``discovered=standin`` the signs of random projections of the learner's (``model``)
  features (kind ``standin``).
- ``targets=human`` (the reference targets 0, 11, 18, 27, 31, 38, 40 that exist for the
  dataset), a list of human-task indices (``targets=0,11``) or a tasks file.
- ``kind=binary|multiclass|random_network`` (``seeds=0,1,2,3``; the random network is a
  randomly initialised ``model``), or ``import_file=<file>`` (a reference ``.torch`` file, a
  CelebA-layout partition ``.csv`` or a split ``.npz``): a file keyed by human-task index
  gets that task as its 2-way target, otherwise the one task ``targets=`` names.
- ``random_baseline=matched`` (default: size-matched random splits) or ``reference`` (the
  reference's one seeded half/half split).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from taskspace.commands.agreement import COMMON_RENAMED
from taskspace.commands.report import write_run_report
from taskspace.config import option
from taskspace.data.config import DataConfig, load_data
from taskspace.io import read_csv
from taskspace.models.config import ModelConfig
from taskspace.runs import RunDir
from taskspace.splits import SplitOptions, build_splits, write_splits
from taskspace.tasks import save_tasks

__all__ = ["SplitConfig", "main", "run_split"]

SPLIT_RENAMED = {
    **COMMON_RENAMED,
    "standin_model": "model",
    "net": "model",
    "widths": "model.kwargs",
}


@dataclass
class SplitConfig(SplitOptions):
    """Options of ``taskspace split``."""

    RENAMED: ClassVar[dict[str, str]] = SPLIT_RENAMED

    data: DataConfig = option(factory=DataConfig, selector="name", help="the images")
    model: ModelConfig = option(
        factory=ModelConfig, selector="name", help="learner of stand-in tasks; the random network"
    )
    export_partitions: bool = option(False, "also write CelebA-layout partition files")
    out: str | None = option(None, "run directory (default runs/split-<data>-<kind>-<hash>)")
    progress: bool = option(True, "progress bars")
    report: bool = option(True, "write report.html into the run directory at the end")


NON_RESULT_KEYS = {"out", "progress", "export_partitions", "report"}


def run_split(cfg: SplitConfig) -> Path:
    """Build (or reuse) the split run directory of ``cfg``; returns it."""
    rd = RunDir.for_config(cfg, "split", NON_RESULT_KEYS, cfg.out, [cfg.data.name, cfg.kind])
    rd.check(cfg)
    if rd.finished():
        return rd.path
    dataset = load_data(cfg.data, progress=cfg.progress)
    splits, targets, discovered = build_splits(cfg, dataset, cfg.model.name)  # checks first
    rd.start(cfg)
    if targets is not None and discovered is not None:
        save_tasks(rd / "targets.npz", targets)
        save_tasks(rd / "discovered.npz", discovered)
    write_splits(rd.path, splits, dataset, cfg.export_partitions)
    rd.mark_finished({"splits": len(splits)})
    return rd.path


def format_balance(rows: list[dict]) -> str:
    """A short text table of ``splits.csv``."""
    lines = [
        f"{'split':<40} {'kind':<15} {'n_train':>7} {'n_test':>7} {'pos(tr)':>8} {'pos(te)':>8}"
    ]
    for r in rows:
        lines.append(
            f"{str(r['split'])[:40]:<40} {r['kind']:<15} {int(r['n_train']):>7} "
            f"{int(r['n_test']):>7} {str(r['train_positive_rate']):>8} "
            f"{str(r['test_positive_rate']):>8}"
        )
    return "\n".join(lines)


def main(cfg: SplitConfig) -> int:
    out = run_split(cfg)
    rows = read_csv(out / "splits.csv")
    print(format_balance(rows[:20]) + ("\n..." if len(rows) > 20 else ""))
    print(f"{len(rows)} splits; run directory: {out}")
    write_run_report(out, cfg.report)
    return 0
