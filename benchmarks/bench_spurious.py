"""Spurious identification's per-attribute models: all at once vs one at a time.

Trains one ERM model per attribute (``fit_attribute_models``: one batched ``fit_many``
call over every attribute, with per-epoch selection on validation) and, side by side in
the same process, the same models one call per attribute (what a loop over attributes, the
original's 40 jobs, does). Same recipe (a model's seed depends on its position, so the two
ways train different initialisations); the table reports wall times and the mean selected
validation accuracy of both ways.
``benchmarks/results/spurious.json`` keeps the figures.

    python benchmarks/bench_spurious.py                       # CelebA-lite, 8 attributes
    python benchmarks/bench_spurious.py --celeba ../shared/external   # the 40 real ones
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from taskspace.data import load_dataset
from taskspace.robustness import SPURIOUS_RECIPE, fit_attribute_models

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--celeba",
        default=None,
        help="the folder holding celeba-cs389hw4 and celeba-attr-zgjsxx (../shared/external)",
    )
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "spurious.json"))
    args = ap.parse_args()
    if args.celeba:
        ext = Path(args.celeba)
        ds = load_dataset(
            "celeba",
            ext / "celeba-cs389hw4" / "celebA",
            attributes=ext / "celeba-attr-zgjsxx" / "list_attr_celeba.txt",
            partition="seeded",
            image_size=32,
            progress=False,
        )
        kwargs = {"widths": (128,)}
    else:
        ds = load_dataset("celeba_lite")
        kwargs = {"widths": (32,)}
    recipe = SPURIOUS_RECIPE.replace(epochs=args.epochs)
    tasks = list(ds.attribute_names or [])
    fit_attribute_models(ds, tasks[:1], model_kwargs=kwargs, recipe=recipe.replace(epochs=0.2))
    t = time.perf_counter()
    together = fit_attribute_models(ds, tasks, model_kwargs=kwargs, recipe=recipe)
    at_once = time.perf_counter() - t
    t = time.perf_counter()
    alone = [fit_attribute_models(ds, [a], model_kwargs=kwargs, recipe=recipe) for a in tasks]
    one_by_one = time.perf_counter() - t
    mean_together = sum(together.best[a][0] for a in tasks) / len(tasks)
    mean_alone = sum(m.best[a][0] for a, m in zip(tasks, alone)) / len(tasks)
    row = {
        "dataset": ds.name,
        "attributes": len(tasks),
        "images": len(ds),
        "epochs": args.epochs,
        "at_once_s": round(at_once, 2),
        "one_at_a_time_s": round(one_by_one, 2),
        "speedup": round(one_by_one / at_once, 2),
        "mean_val_accuracy_at_once": round(float(mean_together), 4),
        "mean_val_accuracy_one_at_a_time": round(float(mean_alone), 4),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    print(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
