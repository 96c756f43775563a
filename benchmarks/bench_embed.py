"""Task2Vec: embedding 32 tasks on one probe, shared (``embed_tasks``) vs one at a time.

Both paths embed the same 32 tasks (16 human 5-vs-5 + 16 random tasks on the bundled digits)
with the same probe and options. The shared path computes the ``layers[skip]`` / head inputs
once, fits the 32 heads (the original's Adam fit as one stacked tensor; the default L-BFGS
fit one task at a time in both paths) and shares each Fisher batch's forward pass
(per-sample gradients vmapped over samples and tasks); the baseline calls ``embed_task``
once per task, a fresh full pass per task as the original does. Each task's draws are
seeded by its name, so both give the same embeddings (the table shows the largest relative
difference). ``benchmarks/results/embed.json`` keeps the figures.

    python benchmarks/bench_embed.py [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskspace.data import load_dataset
from taskspace.embed.api import embed_task, embed_tasks
from taskspace.embed.probe import load_probe
from taskspace.tasks.builders import human_tasks, random_tasks
from taskspace.tasks.taskset import TaskSet

ROOT = Path(__file__).resolve().parents[1]

#: (label, probe name, architecture options, embed_tasks options)
CONFIGS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "convnet 16-32-64, skip 0, per_sample",
        "convnet",
        {"widths": (16, 32, 64)},
        {"skip_layers": 0, "estimator": "per_sample"},
    ),
    (
        "resnet18 width 8, skip 6, per_sample",
        "resnet18",
        {"width": 8},
        {"skip_layers": 6, "estimator": "per_sample"},
    ),
    (
        "convnet 16-32-64, skip 0, batch_mean_sq",
        "convnet",
        {"widths": (16, 32, 64)},
        {"skip_layers": 0, "estimator": "batch_mean_sq"},
    ),
    (
        "convnet 16-32-64, skip 0, per_sample, head_fit=adam",
        "convnet",
        {"widths": (16, 32, 64)},
        {"skip_layers": 0, "estimator": "per_sample", "head_fit": "adam"},
    ),
]


def tasks_for(ds: Any, count: int) -> TaskSet:
    half = count // 2
    human = human_tasks(ds.classes, ds.num_classes, max_tasks=half, include_original=False)
    return TaskSet.concat(human, random_tasks(len(ds), count - half, seed=1))


def run(config: tuple, ds: Any, tasks: TaskSet, max_samples: int) -> dict[str, Any]:
    label, name, arch, options = config
    probe = load_probe(
        name, 2, in_channels=ds.channels, image_size=ds.image_size, seed=0, **arch
    ).eval()
    kw = {"max_samples": max_samples, "seed": 0, **options}
    start = time.perf_counter()
    shared = embed_tasks(ds, tasks, probe, **kw)
    t_shared = time.perf_counter() - start
    start = time.perf_counter()
    alone = [embed_task(ds, tasks, n, probe, **kw) for n in tasks.names]
    t_alone = time.perf_counter() - start
    diff = max(
        float(np.abs(a.hessian - b.hessian).max() / max(np.abs(b.hessian).max(), 1e-30))
        for a, b in zip(shared, alone)
    )
    return {
        "config": label,
        "probe": name,
        "probe_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()},
        "options": options,
        "tasks": len(tasks),
        "max_samples": max_samples,
        "dim": shared[0].dim,
        "one_at_a_time_s": round(t_alone, 3),
        "shared_s": round(t_shared, 3),
        "ratio": round(t_alone / t_shared, 2),
        "max_rel_diff": diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 tasks, 256 images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--max-samples", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)  # random tasks on a random probe: misfit warnings
    count, max_samples = (8, 256) if args.quick else (args.tasks, args.max_samples)
    ds = load_dataset("digits")
    tasks = tasks_for(ds, count)
    for config in CONFIGS:  # warm-up: one-time imports and allocations are not timed
        run(config, ds, tasks.select([0, count - 1]), 128)
    rows = [run(c, ds, tasks, max_samples) for c in CONFIGS]
    header = f"{'config':42s} {'dim':>6s} {'one-at-a-time':>14s} {'shared':>8s} {'ratio':>6s}"
    print(f"{count} tasks on digits, {max_samples} images, {args.threads} thread(s)")
    print(header + f" {'max rel diff':>13s}")
    for r in rows:
        print(
            f"{r['config']:42s} {r['dim']:6d} {r['one_at_a_time_s']:13.2f}s "
            f"{r['shared_s']:7.2f}s {r['ratio']:5.2f}x {r['max_rel_diff']:13.1e}"
        )
    out = {
        "benchmark": "embed",
        "dataset": "digits",
        "threads": args.threads,
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        },
        "rows": rows,
    }
    if not args.quick:
        path = ROOT / "benchmarks" / "results" / "embed.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
