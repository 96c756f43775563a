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

from taskspace.mtl.selection import (
    original_enumeration_count,
    select_groups,
    time_enumeration,
)

ROOT = Path(__file__).resolve().parents[1]

TASKS = ["5oCS", "BlackH", "BlondH", "BrownH", "Goatee", "Mustache", "NoBeard", "Rosy", "Hat"]
#: Section 6.3's rounded CelebA tables (rows = targets).
TAG = [
    [239.7, -83.3, -86.1, -82.4, -82.0, -86.0, -49.0, -87.4, -86.8],
    [-188.2, 378.9, -184.5, -147.5, -189.5, -191.0, -185.3, -190.7, -189.4],
    [-121.1, -109.6, 310.7, -106.0, -122.6, -124.4, -117.2, -120.6, -123.3],
    [-143.7, -112.2, -139.8, 321.5, -145.4, -146.8, -142.4, -146.3, -146.2],
    [-85.5, -92.2, -95.8, -91.7, 238.4, -65.4, -46.0, -98.6, -95.7],
    [-30.2, -32.7, -34.8, -33.5, -0.8, 178.7, -15.3, -35.2, -34.4],
    [-109.5, -147.5, -152.4, -148.5, -127.3, -147.1, 291.8, -157.5, -156.2],
    [-75.0, -74.2, -72.0, -73.8, -76.5, -76.5, -75.2, 240.4, -77.0],
    [-109.4, -100.8, -113.5, -110.6, -110.3, -116.1, -106.5, -119.4, 374.6],
]
CS_UPPER = [
    [0.251, 0.206, 0.288, 0.626, 0.382, 2.112, 0.149, 0.298],
    [0.421, 1.369, 0.240, 0.154, 0.369, 0.131, 0.256],
    [0.541, 0.178, 0.103, 0.357, 0.299, 0.199],
    [0.226, 0.103, 0.362, 0.131, 0.162],
    [2.885, 1.958, 0.084, 0.362],
    [0.928, 0.117, 0.240],
    [0.151, 0.276],
    [0.073],
]
HOA_ACC = [
    [92.28, 91.73, 92.09, 92.16, 92.34, 92.30, 92.18, 92.12, 92.20],
    [90.41, 90.19, 90.29, 90.48, 90.24, 90.46, 90.30, 90.22, 90.34],
    [94.87, 95.00, 94.96, 94.87, 94.95, 94.94, 94.94, 94.75, 94.98],
    [84.44, 84.42, 84.39, 84.39, 84.09, 84.31, 84.30, 84.39, 84.39],
    [95.84, 95.76, 95.81, 95.77, 95.90, 95.87, 96.07, 95.83, 95.83],
    [95.69, 95.68, 95.80, 95.77, 95.75, 95.84, 95.75, 95.82, 95.74],
    [94.14, 94.01, 93.99, 94.17, 94.47, 94.30, 94.44, 93.96, 94.14],
    [94.66, 94.69, 94.64, 94.72, 94.68, 94.62, 94.62, 94.64, 94.59],
    [98.61, 98.63, 98.64, 98.56, 98.69, 98.66, 98.67, 98.59, 98.69],
]


def celeba() -> dict[str, tuple[np.ndarray, str]]:
    cs = np.full((9, 9), 22.0)
    for i, row in enumerate(CS_UPPER):
        for k, v in enumerate(row):
            cs[i, i + 1 + k] = cs[i + 1 + k, i] = v
    return {
        "tag": (np.array(TAG), "tag"),
        "cs": (cs, "cs"),
        "hoa": (100.0 - np.array(HOA_ACC), "hoa"),
    }


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
