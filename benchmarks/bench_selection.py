"""Exact network selection at n = 9 (the CelebA tasks) vs the original enumeration.

For the CelebA TAG, CS and HOA fixtures of reference section 6.3 and B = 1..4, times the
exact solver (``solver=dp``, the default, and ``solver=milp``) and sets beside it the time
the original notebooks' depth-first enumeration would take: its per-set cost, measured by
running the faithful pure-Python enumerator (:func:`time_enumeration`) on the same matrix
for up to ``--sets`` sets (all of them where there are fewer), times the number of sets
it visits, ``sum_{k=1..B} C(511, k)``. The per-set cost at small n (5 and 6 tasks, whole
runs) is printed as a check of the projection. ``benchmarks/results/selection.json`` keeps
the figures.

    python benchmarks/bench_selection.py
    python benchmarks/bench_selection.py --sets 500000 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import scipy

from taskspace.mtl.fixtures import MATRICES, C
from taskspace.mtl.selection import (
    original_enumeration_count,
    select_groups,
    time_enumeration,
)

ROOT = Path(__file__).resolve().parents[1]

TASKS = C


def celeba() -> dict[str, tuple[np.ndarray, str]]:
    """The CelebA TAG, CS and HOA fixtures (kind name -> (A, kind))."""
    return {kind: (a, kind) for key, (a, _, kind) in MATRICES.items() if key.startswith("c_")}


def timed(fn, repeats: int) -> tuple[float, object]:  # noqa: ANN001
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def per_set_small() -> list[dict[str, object]]:
    """Whole enumerations at n = 5 and 6 (random matrices): the per-set cost's range."""
    rows = []
    for n, budget in ((5, 4), (6, 3)):
        a = np.random.default_rng(n).normal(size=(n, n))
        sets, seconds = time_enumeration(a, budget)
        rows.append({"n": n, "B": budget, "sets": sets, "s": round(seconds, 3),
                     "us_per_set": round(1e6 * seconds / sets, 2)})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", type=int, default=200_000, help="enumerated sets per cell")
    ap.add_argument("--repeats", type=int, default=5, help="timings of the exact solver")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "selection.json"))
    args = ap.parse_args()
    rows = []
    for name, (a, kind) in celeba().items():
        for budget in (1, 2, 3, 4):

            def solve(solver: str, a=a, budget=budget, kind=kind) -> object:  # noqa: ANN001
                return select_groups(a, budget, kind=kind, names=TASKS, solver=solver)

            dp_s, sel = timed(lambda: solve("dp"), args.repeats)
            milp_s, milp = timed(lambda: solve("milp"), 1)
            count = original_enumeration_count(9, budget)
            sets, seconds = time_enumeration(a, budget, kind=kind, max_sets=args.sets)
            per_set = seconds / sets
            rows.append(
                {
                    "matrix": f"celeba_{name}",
                    "B": budget,
                    "objective": round(sel.objective, 6),  # type: ignore[attr-defined]
                    "groups": [list(g) for g in sel.groups],  # type: ignore[attr-defined]
                    "milp_objective": round(milp.objective, 6),  # type: ignore[attr-defined]
                    "dp_s": round(dp_s, 5),
                    "milp_s": round(milp_s, 4),
                    "original_sets": count,
                    "measured_sets": sets,
                    "original_us_per_set": round(1e6 * per_set, 3),
                    "original_projected_s": round(per_set * count, 2),
                    "speedup_vs_original": round(per_set * count / dp_s, 2),
                }
            )
    small = per_set_small()
    print(
        f"{'matrix':<12} {'B':>2} {'objective':>11} {'dp s':>9} {'milp s':>8} "
        f"{'orig. sets':>14} {'us/set':>7} {'orig. projected':>16} {'speedup':>12}"
    )
    for r in rows:
        proj = float(r["original_projected_s"])  # type: ignore[arg-type]
        when = f"{proj:.2f} s" if proj < 3600 else f"{proj / 3600:.1f} h"
        print(
            f"{r['matrix']:<12} {r['B']:>2} {r['objective']:>11.4f} {r['dp_s']:>9.5f} "
            f"{r['milp_s']:>8.3f} {r['original_sets']:>14,} {r['original_us_per_set']:>7.2f} "
            f"{when:>16} {r['speedup_vs_original']:>12,.2f}"
        )
    for s in small:
        print(f"whole enumeration n = {s['n']}, B = {s['B']}: {s['sets']:,} sets in {s['s']} s, "
              f"{s['us_per_set']} us per set")  # fmt: skip
    out = {
        "rows": rows,
        "small_n_enumerations": small,
        "sets_measured_per_cell": args.sets,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
