"""Fan-out of independent jobs (moved to :mod:`taskspace.runs.launch`)."""

from taskspace.runs.launch import LaunchOptions, run_jobs

__all__ = ["LaunchOptions", "run_jobs"]
