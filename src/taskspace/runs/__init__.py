"""The run layer: run directories (naming, config check, parts, resume), fan-out of
independent parts (in-process, local processes, SLURM through submitit), and sweeps."""

from taskspace.runs.launch import LAUNCHERS, LaunchOptions, run_jobs
from taskspace.runs.rundir import RunDir, config_digest
from taskspace.runs.sweep import SWEEP_TABLE, best_point, run_sweep

__all__ = [
    "LAUNCHERS",
    "SWEEP_TABLE",
    "LaunchOptions",
    "RunDir",
    "config_digest",
    "run_jobs",
    "best_point",
    "run_sweep",
]
