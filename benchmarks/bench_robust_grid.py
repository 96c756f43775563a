"""A hyper-parameter grid of one robust method as one batched fit vs one fit per point.

Coloured digits, the ``digits`` preset's MLP, a 3 x 3 grid of learning rate x weight decay
with 2 seeds per point (18 models): ``fit_grid`` trains every point and seed in ONE
``fit_many`` call (per-model learning rates and weight decays); the baseline is what a
sweep with one run per point does in its training loop, ``fit_robust`` once per point
(its 2 seeds batched), run side by side in the same process. Timings are the best of
``--repeat``; the selected models' test worst-group accuracies of both ways are compared.
``benchmarks/results/robust_grid.json`` keeps the figures.

    python benchmarks/bench_robust_grid.py [--method rwg] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from taskspace.data import load_dataset
from taskspace.robustness import fit_grid, fit_robust

ROOT = Path(__file__).resolve().parents[1]
LRS = (0.01, 0.03, 0.1)
WDS = (0.001, 0.01, 0.03)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="rwg")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "robust_grid.json"))
    args = ap.parse_args()
    ds = load_dataset("coloured_digits")
    points = [{"lr": lr, "weight_decay": wd} for lr in LRS for wd in WDS]
    kw = {"preset": "digits", "seeds": [0, 1]}
    fit_robust(ds, "large:blue", args.method, epochs=1, **kw)  # warm-up
    batched, per_point = float("inf"), float("inf")
    for _ in range(args.repeat):  # interleaved, so both see the same machine state
        t = time.perf_counter()
        grid = fit_grid(ds, "large:blue", args.method, points, **kw)
        batched = min(batched, time.perf_counter() - t)
        t = time.perf_counter()
        alone = [fit_robust(ds, "large:blue", args.method, **kw, **p) for p in points]
        per_point = min(per_point, time.perf_counter() - t)
    worst_grid = [float(r.metrics["test"].worst_group.mean()) for r in grid]
    worst_alone = [float(r.metrics["test"].worst_group.mean()) for r in alone]
    row = {
        "method": args.method,
        "points": len(points),
        "seeds": 2,
        "batched_s": round(batched, 2),
        "one_fit_per_point_s": round(per_point, 2),
        "speedup": round(per_point / batched, 2),
        "max_worst_group_difference": round(
            max(abs(a - b) for a, b in zip(worst_grid, worst_alone)), 4
        ),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    print(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
