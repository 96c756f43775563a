"""What task affinities cost: TAG's and CS's overhead over plain multi-task training, and
HOA's total cost against TAG's.

Side by side in one process, on the planted set (:mod:`taskspace.mtl.planted`, 2 families,
6 tasks, 300 training images; its learner, an MLP of widths 16, 16) or any number of
planted families (``--families``):

- ``plain``: one all-task network trained with ``fit_many`` + ``MultiTask`` (equal
  weights), the training TAG piggybacks on;
- ``tag every=1`` / ``tag every=10``: the same network, same recipe and steps, with TAG's
  lookahead affinity (``task_affinity(kind="tag")``: n extra gradients from one graph and
  n no-grad lookahead forwards on the steps it scores);
- ``cs every=1``: gradient cosine (n extra gradients, no forwards);
- ``hoa``: every single and pair network (n + n(n-1)/2) for the same number of epochs,
  trained as ``fit_groups`` does it (pairs batched in one ``fit_many``, singles in
  another).

Each timing is the best of ``--repeat`` runs (one thread by default, so the figures do not
depend on the other work on the machine). The paper reports TAG 11.6x faster than HOA on
Taskonomy (5 tasks, every=10). ``benchmarks/results/affinity.json`` keeps the figures.

    python benchmarks/bench_affinity.py
    python benchmarks/bench_affinity.py --families 3 --epochs 10
    python benchmarks/bench_affinity.py --model convnet --model-kwargs '{"widths": [16, 32]}' \
        --epochs 5 --out benchmarks/results/affinity_convnet.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from taskspace.engine import MultiTask, Recipe, fit_many
from taskspace.mtl.affinity import task_affinity
from taskspace.mtl.hoa import hoa_affinity
from taskspace.mtl.planted import PLANTED_MODEL, load_planted

ROOT = Path(__file__).resolve().parents[1]


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default=None, help="registry name (default: the planted MLP)")
    ap.add_argument("--model-kwargs", default=None, help="JSON, e.g. '{\"widths\": [16, 32]}'")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "affinity.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_planted(families=args.families)
    y = ds.attributes.long()
    n_tasks = y.shape[1]
    model, kw = PLANTED_MODEL
    if args.model:
        model, kw = args.model, json.loads(args.model_kwargs or "{}")
    recipe = Recipe(optimizer="adam", lr=3e-3, batch_size=64, epochs=args.epochs)
    steps = recipe.num_steps(len(ds.split("train")))
    common: dict[str, Any] = dict(model=model, model_kwargs=kw, recipe=recipe, seeds=(0,))

    def plain() -> None:
        fit_many(model, ds, y[None], recipe, [0], objective=MultiTask(), model_kwargs=kw)

    def affinity(kind: str, every: int) -> Callable[[], None]:
        return lambda: task_affinity(ds, y, kind=kind, every=every, **common)  # type: ignore[arg-type]

    def hoa() -> None:
        hoa_affinity(ds, y, **common)

    rows: list[dict[str, Any]] = []
    base = best_of(args.repeat, plain)
    rows.append({"method": "plain MTL", "networks": 1, "seconds": base})
    for kind, every in (("tag", 1), ("tag", 10), ("cs", 1)):
        s = best_of(args.repeat, affinity(kind, every))
        rows.append({"method": f"{kind} every={every}", "networks": 1, "seconds": s})
    s = best_of(args.repeat, hoa)
    rows.append({"method": "hoa", "networks": n_tasks + n_tasks * (n_tasks - 1) // 2, "seconds": s})
    tag1 = rows[1]["seconds"]
    for r in rows:
        r["x_plain"] = r["seconds"] / base
        r["x_tag_every1"] = r["seconds"] / tag1
    print(
        f"planted set: {n_tasks} tasks, {len(ds.split('train'))} training images, "
        f"{model} {kw}, {steps} steps per network, {args.threads} thread(s), best of "
        f"{args.repeat}"
    )
    print(f"{'method':<14} {'networks':>8} {'seconds':>9} {'x plain':>8} {'x TAG(1)':>9}")
    for r in rows:
        print(
            f"{r['method']:<14} {r['networks']:>8} {r['seconds']:>9.3f} "
            f"{r['x_plain']:>8.2f} {r['x_tag_every1']:>9.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "affinity",
                "tasks": n_tasks,
                "train_images": len(ds.split("train")),
                "model": model,
                "model_kwargs": kw,
                "epochs": args.epochs,
                "steps_per_network": steps,
                "threads": args.threads,
                "repeat": args.repeat,
                "torch": torch.__version__,
                "machine": platform.machine(),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"saved {out}")


if __name__ == "__main__":
    main()
