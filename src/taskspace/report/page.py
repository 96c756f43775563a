"""``report.html``: one self-contained page for one or several run directories.

Each run directory gets the sections that apply to it (:mod:`taskspace.report.sections`);
a section that cannot be built (a damaged file) shows why instead of stopping the page. The
page embeds its styles, script, figures and images, so it opens from ``file://`` with no
server and no network.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from markupsafe import escape

from taskspace.errors import TaskspaceError
from taskspace.io import write_text
from taskspace.report import sections as _builtin_sections  # noqa: F401  (registers them)
from taskspace.report.context import PageContext
from taskspace.report.run_view import RunView, open_run
from taskspace.report.section import SectionType, sections_for

__all__ = ["build_report", "default_report_path"]

REPORT_FILE = "report.html"


@dataclass
class RenderedSection:
    kind: str
    title: str
    anchor: str
    path: str
    finished: bool
    body: str
    config: str
    note: str = ""


def default_report_path(run_dirs: Sequence[str | Path]) -> Path:
    """``<run>/report.html`` for one run; for several, ``report.html`` in their common
    parent folder."""
    paths = [Path(p).resolve() for p in run_dirs]
    if len(paths) == 1:
        return paths[0] / REPORT_FILE
    return Path(os.path.commonpath([str(p) for p in paths])) / REPORT_FILE


def build_report(
    run_dirs: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    title: str | None = None,
    progress: bool = False,
) -> Path:
    """Write the report of ``run_dirs`` to ``out`` (default :func:`default_report_path`).

    Raises :class:`TaskspaceError` (one line) when a path is not a run directory; every
    folder is checked before anything is written.
    """
    if not run_dirs:
        raise TaskspaceError("report: give at least one run directory")
    runs = [open_run(p) for p in run_dirs]
    ctx = PageContext(progress=progress)
    rendered: list[RenderedSection] = []
    for n, run in enumerate(runs):
        for st in sections_for(run) or [_UNKNOWN]:
            rendered.append(_render(st, run, ctx, f"s{n}-{st.kind}"))
    path = Path(out) if out else default_report_path(run_dirs)
    names = ", ".join(r.name for r in runs)
    html = ctx.render(
        "page.html.j2",
        title=title or f"taskspace report: {names}",
        generated=f"written {_dt.datetime.now():%Y-%m-%d %H:%M}",
        sections=rendered,
        image_pool=ctx.image_pool_json(),
        data_blocks=ctx.data_blocks,
    )
    return write_text(path, html)


def _render(st: SectionType, run: RunView, ctx: PageContext, anchor: str) -> RenderedSection:
    try:
        body = st.render(run, ctx)
    except Exception as err:  # noqa: BLE001  (a damaged file must not stop the whole page)
        body = (
            f'<p class="error">This section could not be built from the files in the run '
            f"directory: {type(err).__name__}: {escape(str(err))}</p>"
        )
    config = yaml.safe_dump(run.config, sort_keys=False) if run.config else ""
    parts = len(run.parts())
    note = f"{parts} part file(s) finished so far." if parts and not run.finished else ""
    return RenderedSection(
        st.kind, st.title, anchor, str(run.path), run.finished, body, config, note
    )


def _unknown_body(run: RunView, ctx: PageContext) -> str:
    files = sorted(p.name for p in run.path.iterdir())
    return ctx.render("unknown.html.j2", files=files)


_UNKNOWN = SectionType("unknown", "Run directory", lambda run: True, _unknown_body)
