"""Fan-out of independent jobs: in-process, local processes, or SLURM (through submitit)."""

from taskspace.launch.executor import LaunchOptions, run_jobs

__all__ = ["LaunchOptions", "run_jobs"]
