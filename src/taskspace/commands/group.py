"""``taskspace group``: exact network selection, at most B task groups from an affinity matrix.

Input: ``run=RUN_DIR`` (an affinity run: its ``affinity.csv`` and the ``kind`` in its
``config.yaml``) or ``matrix=PATH`` (a CSV with task names as header and index). The file's
orientation is ``orientation=source_target`` (default: rows are sources, columns targets,
``Z[source, target]`` as ``taskspace affinity`` writes it) or ``target_source`` (rows are
targets, ``A[target][source]`` as the TAG notebooks read it). Source rows that are not
tasks (a run's sum-of-all-tasks source) are ignored. ``kind``: ``tag`` or ``cs``
(affinities: the highest served score wins, singletons forbidden) or ``hoa`` (errors or
losses of single and pair trainings: the lowest wins, the diagonal is the single-task
result); default the run's kind, else ``tag``.

For each budget (``budgets=2,3,4`` or ``1-4``; default every B from 1 to the number of
tasks) the exact solver of :mod:`taskspace.mtl.selection` picks the networks; each task is
served by its best chosen network, networks serving none are dropped (``tie_break=prune``,
default) or kept as the original's first optimum (``tie_break=dfs_first``, small n only).
``grouping="a,b;c,d"`` also evaluates a grouping of your own. Writes ``matrix.csv`` (the
matrix used, rows = targets), ``selections.json``, ``groups.csv`` (one row per budget and
network: members, served tasks, objective), ``groups.png`` and ``report.html``.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from taskspace.commands.report import write_run_report
from taskspace.config import option
from taskspace.errors import TaskspaceError
from taskspace.io import write_csv, write_json
from taskspace.mtl.selection import (
    KINDS,
    Selection,
    evaluate_grouping,
    parse_grouping,
    select_groups_all,
)
from taskspace.report.sections.group import plot_groups
from taskspace.runs import RunDir

__all__ = ["GroupConfig", "load_matrix", "main", "parse_budgets", "run_group"]

ORIENTATIONS = ("source_target", "target_source")
#: The file an affinity run writes its matrix to.
AFFINITY_FILE = "affinity.csv"


@dataclass
class GroupConfig:
    """Options of ``taskspace group``."""

    run: str | None = option(None, "an affinity run directory (reads affinity.csv and its kind)")
    matrix: str | None = option(None, "a CSV matrix with task names as header and index")
    orientation: str = option(
        "source_target",
        "rows of the file: source_target (rows are sources, Z[source, target], as "
        "taskspace affinity writes) or target_source (rows are targets, A[target][source])",
    )
    kind: str | None = option(None, "tag, cs or hoa (default: the run's kind, else tag)")
    budgets: str | None = option(None, "budgets B, e.g. 2,3,4 or 1-4 (default 1..n)")
    tie_break: str = option(
        "prune",
        "prune (exact solver, networks serving no task dropped) or dfs_first (the "
        "original's depth-first first optimum, redundant networks kept; small n only)",
    )
    solver: str = option("auto", "auto (= dp, the exact served-set DP) or milp (SciPy HiGHS)")
    grouping: str | None = option(None, "also evaluate a grouping of your own, e.g. a,b;c,d")
    out: str | None = option(None, "run directory (default runs/group-<input>-<hash>)")
    progress: bool = option(True, "progress bars (unused: selection takes milliseconds)")
    report: bool = option(True, "write report.html into the run directory at the end")


#: Options that do not change the results.
NON_RESULT_KEYS = {"out", "progress", "report"}


# --------------------------------------------------------------------------- input
def parse_budgets(text: str | int | None, n: int) -> list[int]:
    """``"2,3,4"``, ``"1-4"`` or ``3`` -> sorted unique budgets (default ``1..n``)."""
    if text is None or str(text).strip() == "":
        return list(range(1, n + 1))
    out: set[int] = set()
    for part in str(text).replace(" ", "").split(","):
        lo, sep, hi = part.partition("-") if not part.startswith("-") else (part, "", "")
        try:
            values = range(int(lo), int(hi) + 1) if sep else [int(part)]
        except ValueError:
            raise TaskspaceError(f"budgets: {part!r} is not an integer or a range a-b") from None
        for b in values:
            if b < 1:
                raise TaskspaceError(f"budgets: the budget B must be >= 1, got {b}")
            out.add(b)
    if not out:
        raise TaskspaceError(f"budgets: no budget in {text!r}")
    return sorted(out)


def _read_table(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(row names, column names, values) of a CSV with a header row and an index column."""
    if not path.is_file():
        raise TaskspaceError(f"no such matrix file: {path}")
    try:
        with path.open(newline="") as fh:
            lines = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as err:
        raise TaskspaceError(f"cannot read the matrix {path}: {err}") from None
    if len(lines) < 2 or len(lines[0]) < 2:
        raise TaskspaceError(f"{path}: expected a header row of task names and one row per task")
    cols = [c.strip() for c in lines[0][1:]]
    rows = [r[0].strip() for r in lines[1:]]
    bad = [i + 2 for i, r in enumerate(lines[1:]) if len(r) != len(cols) + 1]
    if bad:
        raise TaskspaceError(
            f"{path}: row {bad[0]} has {len(lines[bad[0] - 1]) - 1} values, the header "
            f"{len(cols)} task names"
        )
    try:
        values = np.array([[float(x) for x in r[1:]] for r in lines[1:]], dtype=np.float64)
    except ValueError as err:
        raise TaskspaceError(f"{path}: not a number ({err})") from None
    return rows, cols, values


def load_matrix(
    path: str | Path, orientation: str = "source_target"
) -> tuple[list[str], np.ndarray]:
    """Task names and ``A[target][source]`` from a CSV (see the module docstring)."""
    if orientation not in ORIENTATIONS:
        raise TaskspaceError(
            f"orientation must be one of {', '.join(ORIENTATIONS)}, got {orientation!r}"
        )
    p = Path(path)
    rows, cols, values = _read_table(p)
    for what, names in (("header", cols), ("index", rows)):
        dup = sorted({x for x in names if names.count(x) > 1})
        if dup:
            raise TaskspaceError(f"{p}: duplicate task name(s) in the {what}: {', '.join(dup)}")
    if set(cols) <= set(rows) and len(rows) > len(cols):
        extra = [r for r in rows if r not in cols]
        print(f"ignoring source rows that are not tasks: {', '.join(extra)}")
        keep = [rows.index(c) for c in cols]
        rows, values = cols[:], values[keep]
    if len(rows) != len(cols):
        raise TaskspaceError(
            f"{p}: the matrix is not square ({len(rows)} rows, {len(cols)} columns)"
        )
    if set(rows) != set(cols):
        only = sorted(set(rows) ^ set(cols))
        raise TaskspaceError(f"{p}: rows and columns name different tasks ({', '.join(only)})")
    values = values[[rows.index(c) for c in cols]]  # rows in the header's order
    a = values.T if orientation == "source_target" else values
    return cols, np.ascontiguousarray(a)


def _run_kind(run: Path) -> str | None:
    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    kind = cfg.get("kind") if isinstance(cfg, dict) else None
    return str(kind) if kind is not None else None


def _source(cfg: GroupConfig) -> tuple[Path, str]:
    """The matrix file and the kind."""
    if bool(cfg.run) == bool(cfg.matrix):
        raise TaskspaceError("give one input: run=AFFINITY_RUN_DIR or matrix=FILE.csv")
    if cfg.run:
        run = Path(cfg.run)
        if not run.is_dir():
            raise TaskspaceError(f"no such run directory: {run}")
        path = run / AFFINITY_FILE
        if not path.is_file():
            raise TaskspaceError(f"{run} holds no {AFFINITY_FILE}: not a finished affinity run")
        kind = cfg.kind or _run_kind(run) or "tag"
    else:
        path, kind = Path(str(cfg.matrix)), cfg.kind or "tag"
    if kind not in KINDS:
        raise TaskspaceError(f"kind must be tag, cs or hoa, got {kind!r}")
    return path, kind


# --------------------------------------------------------------------------- outputs
def _group_rows(label: str, budget: int | str, sel: Selection) -> list[dict[str, Any]]:
    return [
        {
            "budget": budget,
            "selection": label,
            "network": i + 1,
            "tasks": ",".join(g),
            "serves": ",".join(sel.serves(i)),
            "objective": sel.objective,
        }
        for i, g in enumerate(sel.groups)
    ]


def describe(sel: Selection) -> str:
    """``{a,b}; {b,c}->c``: the networks, with the tasks served where not all members."""
    parts = []
    for i, g in enumerate(sel.groups):
        serves = sel.serves(i)
        text = "{" + ",".join(g) + "}"
        if serves != list(g):
            text += "->" + (",".join(serves) or "(none)")
        parts.append(text)
    return "; ".join(parts)


def run_group(cfg: GroupConfig) -> tuple[Path, dict[int, Selection], Selection | None]:
    """Select (and evaluate the given grouping), then write the run directory."""
    path, kind = _source(cfg)
    names, a = load_matrix(path, cfg.orientation)
    budgets = parse_budgets(cfg.budgets, len(names))
    given_groups = parse_grouping(cfg.grouping, names) if cfg.grouping else None
    sels = select_groups_all(
        a, budgets, kind=kind, names=names, tie_break=cfg.tie_break, solver=cfg.solver
    )
    given = evaluate_grouping(a, given_groups, kind, names=names) if given_groups else None
    digest = hashlib.sha1(path.read_bytes()).hexdigest()[:6]
    stem = Path(cfg.run).name if cfg.run else path.stem
    rd = RunDir.for_config(cfg, "group", NON_RESULT_KEYS, cfg.out, [stem, digest])
    rd.start(cfg)
    write_csv(
        rd / "matrix.csv",
        [
            {"target": t, **{o: float(a[i, j]) for j, o in enumerate(names)}}
            for i, t in enumerate(names)
        ],
        ["target", *names],
    )
    doc = {
        "source": str(path),
        "orientation": cfg.orientation,
        "kind": kind,
        "tasks": names,
        "tie_break": cfg.tie_break,
        "selections": [sels[b].to_json() for b in budgets],
        "given": given.to_json() if given else None,
    }
    rows = [r for b in budgets for r in _group_rows("exact", b, sels[b])]
    if given:
        rows += _group_rows("given", len(given.groups), given)
    write_csv(
        rd / "groups.csv", rows, ["budget", "selection", "network", "tasks", "serves", "objective"]
    )
    panels = [sels[b].to_json() for b in budgets]
    if given:
        panels.append({**given.to_json(), "label": "given"})
    plot_groups(panels, rd / "groups.png")
    write_json(rd / "selections.json", doc)
    headline: dict[str, Any] = {"tasks": len(names), "kind": kind}
    headline.update({f"objective_b{b}": sels[b].objective for b in budgets})
    if given:
        headline["objective_given"] = given.objective
    rd.mark_finished(headline)
    return rd.path, sels, given


def main(cfg: GroupConfig) -> int:
    out, sels, given = run_group(cfg)
    first = next(iter(sels.values()))
    goal = "min" if first.kind == "hoa" else "max"
    print(f"network selection over {len(first.tasks)} tasks ({first.kind}, {goal} served score)")
    for b, sel in sels.items():
        print(f"  B = {b:<2} objective {sel.objective:>12.6g}  {describe(sel)}")
    if given:
        print(f"  given  objective {given.objective:>12.6g}  {describe(given)}")
    print(f"run directory: {out}")
    write_run_report(out, cfg.report)
    return 0
