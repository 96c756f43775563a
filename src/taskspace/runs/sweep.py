"""Sweeps: one run per point of a grid of options, fanned out, resumable, one table.

``taskspace <command> -m recipe.lr=1e-4,1e-3 seed=0,1,2`` expands to 6 points
(:func:`taskspace.config.sweep_points`). Each point is an ordinary run of the command in
``<sweep dir>/<NNN>`` (its own ``config.yaml``, parts and resume); a point whose run has
written its finished marker is skipped on a rerun. Points fan out through
:func:`taskspace.runs.launch.run_jobs` (in-process, local processes or a SLURM array), and
``sweep.csv`` gets one row per point: the swept options, the run directory, whether it
finished, and the run's headline metrics.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from taskspace.errors import TaskspaceError
from taskspace.io import read_csv, write_csv, write_json
from taskspace.runs.launch import LaunchOptions, run_jobs
from taskspace.runs.rundir import RunDir

__all__ = ["SWEEP_TABLE", "best_point", "run_sweep", "sweep_dir"]

SWEEP_TABLE = "sweep.csv"


def sweep_dir(command: str, fixed: Sequence[str], points: Sequence[Sequence[str]]) -> Path:
    """``runs/sweep-<command>-<digest of the command line>``."""
    key = json.dumps([command, sorted(fixed), [list(p) for p in points]])
    return Path("runs") / f"sweep-{command}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def run_sweep(
    command: str,
    fixed: Sequence[str],
    points: Sequence[Sequence[str]],
    job: Callable[[str, list[str]], Any],
    check: Callable[[list[str]], None],
    launch: LaunchOptions,
    out: str | Path | None = None,
) -> Path:
    """Run every point of a sweep; returns the sweep directory.

    Args:
        command: the command's name.
        fixed: tokens shared by every point (``out=`` among them names the sweep folder).
        points: the swept ``key=value`` tokens of each point.
        job: module-level ``job(command, tokens)`` that runs one point (picklable for
            local processes and SLURM).
        check: validates one point's tokens (builds its config) before anything runs, so
            a bad value in any point fails at once with one line.
        launch: how points fan out (each point then runs its own parts in-process).
    """
    fixed = [t for t in fixed if not t.startswith("out=")]
    folder = Path(out) if out else sweep_dir(command, fixed, points)
    runs = [folder / f"{i:03d}" for i in range(len(points))]
    tokens = [[*fixed, *p, f"out={r}"] for p, r in zip(points, runs)]
    for t in tokens:
        check(t)
    pending = [(command, t) for t, r in zip(tokens, runs) if not RunDir(r).finished()]
    if len(pending) < len(points):
        print(f"sweep {folder}: {len(points) - len(pending)}/{len(points)} points finished")
    try:
        run_jobs(job, pending, launch, folder / "jobs", progress=False)
    finally:
        write_table(folder, points, runs)
    return folder


def write_table(folder: Path, points: Sequence[Sequence[str]], runs: Sequence[Path]) -> Path:
    """``sweep.csv``: one row per point with its options, run directory and metrics."""
    rows: list[dict[str, Any]] = []
    keys: list[str] = []
    metric_keys: list[str] = []
    for i, (point, run) in enumerate(zip(points, runs)):
        row: dict[str, Any] = {"point": i}
        for tok in point:
            k, v = tok.split("=", 1)
            row[k] = v
            if k not in keys:
                keys.append(k)
        rd = RunDir(run)
        row["finished"] = rd.finished()
        row["run_dir"] = str(run)
        for k, v in rd.metrics().items():
            row[k] = v
            if k not in metric_keys:
                metric_keys.append(k)
        rows.append(row)
    if not rows:
        raise TaskspaceError("a sweep needs at least one point")
    return write_csv(
        folder / SWEEP_TABLE, rows, ["point", *keys, "finished", "run_dir", *metric_keys]
    )


def best_point(folder: str | Path, metric: str) -> dict[str, str] | None:
    """The finished point of ``sweep.csv`` with the highest ``metric`` (``None`` when no
    finished point has it); written to ``best.json`` beside the table."""
    rows = [
        r
        for r in read_csv(Path(folder) / SWEEP_TABLE)
        if r.get("finished") == "True" and r.get(metric) not in (None, "")
    ]
    if not rows:
        return None
    best = max(rows, key=lambda r: float(r[metric]))
    write_json(Path(folder) / "best.json", {"metric": metric, **best})
    return best
