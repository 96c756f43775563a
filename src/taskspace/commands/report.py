"""``taskspace report RUN_DIR [RUN_DIR ...]``: one self-contained ``report.html``.

Every run kind has its section (agreement, discovery, pre-training, adversarial splits and
their evaluation, sweeps); several run directories give one page with a section each. The
page needs no server and no network: open it from the file system. Default output:
``<run>/report.html`` for one run, ``report.html`` in the runs' common folder for several
(``out=`` to choose). A run that has not finished is reported with what it holds, marked
incomplete. Every other command writes its own report at the end (``report=false`` turns
that off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from taskspace.config import option
from taskspace.errors import TaskspaceError
from taskspace.report.page import build_report

__all__ = ["ReportConfig", "main", "write_run_report"]


@dataclass
class ReportConfig:
    """Options of ``taskspace report``; run directories are given as plain arguments."""

    #: Plain (non key=value) arguments fill this option.
    POSITIONAL: ClassVar[str] = "runs"

    runs: list[str] = field(default_factory=list)
    out: str | None = option(None, "the page's path (default: beside the run directories)")
    title: str | None = option(None, "the page's title")
    progress: bool = option(True, "progress bars")


def write_run_report(run_dir: object, enabled: bool = True) -> None:
    """A command's closing step: write ``<run_dir>/report.html`` and say where it is."""
    if enabled:
        print(f"report: {build_report([str(run_dir)])}")


def main(cfg: ReportConfig) -> int:
    if not cfg.runs:
        raise TaskspaceError(
            "report: give one or more run directories, e.g. taskspace report runs/demo/agreement"
        )
    path = build_report(cfg.runs, cfg.out, title=cfg.title, progress=cfg.progress)
    print(f"report: {path}")
    return 0
