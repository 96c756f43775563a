"""Functional API of task discovery: :func:`discover_tasks`, :func:`compare_with_baselines`.

``discover_tasks`` runs (or resumes) a discovery run and returns its task set; the demo
calls ``compare_with_baselines`` to put discovered, human and random tasks side by side
under one AS protocol (the paper's central plot).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from taskspace.agreement.score import ROW_COLUMNS, agreement_score, summarize
from taskspace.data import load_splits
from taskspace.discovery.runner import DiscoverConfig, load_run_config, recipe_of, run_discover
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv, write_csv
from taskspace.tasks import TaskSet, human_tasks, load_tasks, random_tasks

__all__ = ["compare_with_baselines", "discover_tasks", "discovery_demo_rows"]


def discover_tasks(out: str | Path | None = None, **options: Any) -> TaskSet:
    """Run ``taskspace discover`` with ``options`` (any :class:`DiscoverConfig` field) and
    return the discovered :class:`TaskSet` (labels over all images, kind ``discovered``).

    Example: ``discover_tasks("runs/d", data="digits", meta_steps=20, progress=False)``.
    """
    fields = {f.name for f in dataclasses.fields(DiscoverConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise TaskspaceError(f"unknown discovery option(s) {', '.join(unknown)}")
    cfg = DiscoverConfig(**options, out=None if out is None else str(out))
    run_dir = run_discover(cfg)
    path = run_dir / "tasks.npz"
    if not path.exists():
        raise TaskspaceError(f"discovery run {run_dir} has not finished (no tasks.npz)")
    return load_tasks(path)


def compare_with_baselines(run_dir: str | Path, num_tasks: int | None = None, *,
                           pairs: int | None = None, progress: bool = False) -> list[dict]:
    """AS of a run's discovered tasks vs ``num_tasks`` human and random tasks, one protocol.

    Uses the run's dataset, splits, learner (``as_arch``), recipe and seed. Writes
    ``as_by_kind.csv`` (rows as :func:`agreement_score`), ``as_by_kind_summary.csv`` and
    ``as_by_kind.png`` into the run directory and returns the summary rows (kind, split,
    mean, std, count). Reuses the run's ``agreement.csv`` when the run was made with
    ``baselines=true`` and ``num_baseline_tasks=num_tasks`` (then the untrained encoder's
    heads appear too, as kind ``untrained``), else ``as_by_kind.csv`` when it exists.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    rows_path = run_dir / "as_by_kind.csv"
    found = load_tasks(run_dir / "tasks.npz")
    n = num_tasks or len(found)
    rows = _reusable_rows(run_dir, n, pairs)
    if rows is None and rows_path.exists():
        rows = read_csv(rows_path)
    if rows is None:
        from taskspace.agreement.run import dataset_of

        ds = dataset_of(cfg)
        ds.use_splits(load_splits(run_dir / "splits.npz"))
        every = TaskSet.concat(
            found,
            human_tasks(ds.classes, ds.num_classes, max_tasks=n, seed=cfg.seed,
                        include_original=False),
            random_tasks(len(ds), n, seed=cfg.seed),
        )
        rows = agreement_score(ds, every, model=cfg.as_arch or cfg.arch,
                               recipe=recipe_of(cfg), pairs=pairs or cfg.pairs,
                               seed=cfg.seed, device=cfg.device, progress=progress,
                               model_kwargs=cfg.eval_kwargs)
    for r in rows:
        r["agreement"] = float(r["agreement"])
    write_csv(rows_path, rows, ROW_COLUMNS)
    summary = summarize(rows)
    write_csv(run_dir / "as_by_kind_summary.csv", summary, ["kind", "split", "mean", "std",
                                                            "count"])
    from taskspace.report.plots import plot_agreement_by_kind

    plot_agreement_by_kind(rows, run_dir / "as_by_kind.png")
    return summary


def _reusable_rows(run_dir: Path, n: int, pairs: int | None) -> list[dict] | None:
    """The run's own ``agreement.csv`` when it already holds ``n`` human and ``n`` random
    tasks (a run made with ``baselines=true``): same protocol, no retraining."""
    path = run_dir / "agreement.csv"
    if not path.exists():
        return None
    rows = read_csv(path)
    cfg = load_run_config(run_dir)
    if pairs not in (None, cfg.pairs):
        return None
    counts = {k: len({r["task"] for r in rows if r["kind"] == k}) for k in ("human", "random")}
    if counts["human"] != n or counts["random"] != n:
        return None
    return rows


def discovery_demo_rows(out: str | Path = "runs/demo/discover", num_tasks: int = 16,
                        progress: bool = True, **options: Any) -> list[dict]:
    """What ``taskspace demo`` runs: discovery on digits (preset ``digits``), then AS by
    kind (discovered vs human vs random). Returns the summary rows of
    :func:`compare_with_baselines`; the figure is ``<out>/as_by_kind.png``."""
    options.setdefault("data", "digits")
    options.setdefault("baselines", True)
    options.setdefault("num_baseline_tasks", num_tasks)
    options.setdefault("K", num_tasks)
    options.setdefault("d", max(num_tasks, 16))
    discover_tasks(out, progress=progress, **options)
    return compare_with_baselines(out, num_tasks=num_tasks, progress=progress)
