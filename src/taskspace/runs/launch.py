"""Run a list of independent jobs in-process, as local processes, or on SLURM.

Jobs are plain module-level functions with picklable arguments that write their own results
into the run directory (atomically), so any launcher can run them, a failed or killed job
can simply be rerun, and the caller merges whatever finished. ``local`` and ``slurm`` go
through submitit (LocalExecutor / SlurmExecutor); ``inprocess`` calls the functions directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskspace.config import option
from taskspace.errors import TaskspaceError

LAUNCHERS = ("inprocess", "local", "slurm")


@dataclass
class LaunchOptions:
    """Where and how a run's independent parts (or a sweep's points) run. ``parallel``
    bounds concurrent local jobs (submitit's LocalExecutor would otherwise start all at
    once); the SLURM fields map to sbatch."""

    kind: str = option("inprocess", "inprocess, local (processes) or slurm (an array)")
    parallel: int = option(2, "jobs at once (local) or array parallelism (slurm)")
    timeout_min: int = option(240, "time limit per job, minutes")
    slurm_partition: str | None = option(None, "SLURM partition")
    slurm_gpus: int = option(0, "GPUs per SLURM job")
    slurm_cpus: int = option(4, "CPUs per SLURM job")
    slurm_mem_gb: int = option(32, "memory per SLURM job, GB")
    per_job: int | None = option(None, "parts per job (default: the command's own)")


def run_jobs(
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    options: LaunchOptions,
    folder: str | Path,
    progress: bool = True,
) -> list[Any]:
    """Run ``fn(*args)`` for every ``args`` in ``jobs``; return the results in order."""
    if options.kind not in LAUNCHERS:
        raise TaskspaceError(f"launch must be one of {', '.join(LAUNCHERS)}, got {options.kind!r}")
    if not jobs:
        return []
    if options.kind == "inprocess":
        from tqdm.auto import tqdm

        return [fn(*a) for a in tqdm(jobs, desc="jobs", disable=not progress or len(jobs) < 2)]
    import submitit

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if options.kind == "local":
        # share the cores between concurrent jobs: oversubscribed OpenMP threads made small
        # trainings two orders of magnitude slower on a busy 2-core machine
        threads = str(max(1, (os.cpu_count() or 1) // max(1, options.parallel)))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, threads)
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=options.timeout_min)
        results: list[Any] = []
        width = max(1, options.parallel)
        for start in range(0, len(jobs), width):
            wave = [ex.submit(fn, *a) for a in jobs[start : start + width]]
            results.extend(_wait(wave))
        return results
    slurm = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params: dict[str, Any] = {
        "timeout_min": options.timeout_min,
        "slurm_array_parallelism": options.parallel,
        "cpus_per_task": options.slurm_cpus,
        "mem_gb": options.slurm_mem_gb,
    }
    if options.slurm_partition:
        params["slurm_partition"] = options.slurm_partition
    if options.slurm_gpus:
        params["gpus_per_node"] = options.slurm_gpus
    slurm.update_parameters(**params)
    arg_lists = list(zip(*jobs))
    return _wait(slurm.map_array(fn, *arg_lists))


def _wait(jobs: list) -> list[Any]:
    out = []
    for job in jobs:
        try:
            out.append(job.result())
        except Exception as err:  # submitit wraps the job's exception
            text = str(err).strip().splitlines()
            last = text[-1] if text else repr(err)
            raise TaskspaceError(
                f"job {job.job_id} failed: {last} (logs in {job.paths.folder})"
            ) from None
    return out
