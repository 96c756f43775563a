"""Batched engine vs a plain per-model PyTorch loop, side by side in one process.

For M in {2, 16, 64} digits MLPs (and a CNN on real CIFAR-10 images when ../shared is
present) both paths train the same models (same seeds, same batches, same recipe); the
table reports wall times (best of ``--repeat``), the speed-up ratio and, per model, the
largest relative parameter difference (median and worst model), and
``benchmarks/results/engine.json`` keeps the figures.

    python benchmarks/bench_engine.py [--quick] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from taskspace.data import ImageDataset, load_dataset
from taskspace.engine import Recipe, fit_many
from taskspace.engine.streams import IndexStream
from taskspace.models import create_model

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "external" / "cifar10-yoongikim"


def plain_loop(
    model: str,
    ds: ImageDataset,
    labels: torch.Tensor,
    recipe: Recipe,
    seeds: list[int],
    kwargs: dict,
    device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """The baseline a researcher would write: one model after the other, torch.optim,
    batches gathered from the in-memory tensor (same batch stream as the engine); on CUDA
    with the recipe's bf16 autocast and channels_last."""
    train = ds.split("train")
    steps = recipe.num_steps(len(train))
    images, labels = ds.images.to(device), labels.to(device)
    cuda = device.startswith("cuda")
    states = []
    for m, seed in enumerate(seeds):
        torch.manual_seed(seed)
        net = (
            create_model(model, 2, in_channels=ds.channels, image_size=ds.image_size, **kwargs)
            .to(device)
            .train()
        )
        if cuda and recipe.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if recipe.optimizer == "adam":
            opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
        else:
            opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum)
        stream = IndexStream(train, seed)
        for _ in range(steps):
            idx = stream.next(recipe.batch_size).to(device)
            x = ds.normalize(images[idx])
            if cuda and recipe.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", torch.bfloat16, enabled=cuda and recipe.bf16):
                out = net(x)
            loss = F.cross_entropy(out.float(), labels[m, idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        states.append({k: v.detach().cpu() for k, v in net.named_parameters()})
    return {k: torch.stack([s[k] for s in states]) for k in states[0]}


def task_labels(ds: ImageDataset, m: int) -> torch.Tensor:
    """M learnable binary tasks (class-parity style partitions of the 10 classes)."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(m):
        pos = torch.randperm(10, generator=gen)[:5]
        rows.append(torch.isin(ds.classes, pos).long())
    return torch.stack(rows)


def per_model_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
    """For every model, the largest relative parameter difference over its tensors."""
    worst = None
    for k in b:
        dims = tuple(range(1, b[k].dim()))
        rel = (a[k] - b[k]).abs().amax(dim=dims) / b[k].abs().amax(dim=dims).clamp_min(1e-12)
        worst = rel if worst is None else torch.maximum(worst, rel)
    return worst


def _timed(fn, device: str):  # noqa: ANN001, ANN202
    """``fn()`` and its wall time, with the GPU's queue drained before and after."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def bench(
    model: str,
    ds: ImageDataset,
    m: int,
    recipe: Recipe,
    kwargs: dict,
    label: str,
    repeat: int,
    device: str = "cpu",
) -> dict:
    """Time both paths (best of ``repeat``) and compare their parameters model by model."""
    labels = task_labels(ds, m)
    seeds = list(range(100, 100 + m))
    warm = recipe.replace(steps=2)  # first-call costs (allocator, kernels) out of both timings
    fit_many(
        model, ds, labels[:2], warm, seeds[:2], model_kwargs=kwargs, device=device, batched=True
    )
    plain_loop(model, ds, labels[:2], warm, seeds[:2], kwargs, device)
    t_batched = t_loop = float("inf")
    for _ in range(repeat):
        ens, t = _timed(
            lambda: fit_many(
                model,
                ds,
                labels,
                recipe,
                seeds,
                order_seeds=seeds,
                model_kwargs=kwargs,
                device=device,
                batched=True,
            ),
            device,
        )
        t_batched = min(t_batched, t)
        ref, t = _timed(
            lambda: plain_loop(model, ds, labels, recipe, seeds, kwargs, device), device
        )
        t_loop = min(t_loop, t)
    rel = per_model_rel_diff(ens.params, ref)
    t_vmap = None
    if model == "mlp" and device == "cpu":  # the same, with the vmap + autograd step
        t_vmap = min(
            _timed(
                lambda: fit_many(
                    model,
                    ds,
                    labels,
                    recipe,
                    seeds,
                    order_seeds=seeds,
                    model_kwargs=kwargs,
                    batched=True,
                    mlp_step=False,
                ),
                device,
            )[1]
            for _ in range(repeat)
        )
    return {
        "case": label,
        "model": model,
        "M": m,
        "device": device,
        "optimizer": recipe.optimizer,
        "batch_size": recipe.batch_size,
        "batched_s": round(t_batched, 3),
        "loop_s": round(t_loop, 3),
        "speedup": round(t_loop / t_batched, 2),
        "vmap_step_s": None if t_vmap is None else round(t_vmap, 3),
        "median_rel_param_diff": float(rel.median()),
        "max_rel_param_diff": float(rel.max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    ap.add_argument("--repeat", type=int, default=3, help="timings per case (best is kept)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engine.json"))
    args = ap.parse_args()
    digits = load_dataset("digits")
    epochs = 0.5 if args.quick else 2
    # SGD with momentum: with Adam the two paths agree in predictions but not to float
    # tolerance in parameters (Adam turns ~1e-9 noise on near-zero gradients into lr steps)
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=128, epochs=epochs)
    rows = []
    cases = [
        ((128, 64), "digits MLP 64-128-64-2", recipe, (2, 16, 64)),
        ((128, 64), "digits MLP 64-128-64-2", recipe.replace(batch_size=32), (64,)),
        ((128, 64), "digits MLP 64-128-64-2", recipe.replace(optimizer="adam", lr=1e-3), (64,)),
        ((1024, 512, 256, 64), "reference MLP widths", recipe, (2, 16, 64)),
    ]
    for widths, name, rec, ms in cases:
        for m in ms:
            if m == 64 and widths[0] == 1024 and args.quick:
                continue
            reps = 1 if widths[0] == 1024 else args.repeat
            rows.append(bench("mlp", digits, m, rec, {"widths": widths}, name, reps))
            print(rows[-1], flush=True)
    if CIFAR.is_dir():
        cifar = load_dataset("cifar10", CIFAR, train_size=2000, test_size=500, progress=False)
        crec = Recipe(
            optimizer="sgd", lr=0.05, momentum=0.9, batch_size=128, steps=5 if args.quick else 20
        )
        for m in (2, 8):
            rows.append(
                bench(
                    "convnet",
                    cifar,
                    m,
                    crec,
                    {"widths": (16, 32, 64)},
                    "CIFAR-10 convnet 16-32-64",
                    1,
                )
            )
            print(rows[-1], flush=True)
    print(
        f"\n{'case':<28} {'opt':>4} {'batch':>5} {'M':>3} {'batched s':>10} {'loop s':>8} "
        f"{'speed-up':>9} {'vmap step s':>12} {'rel diff: median':>17} {'max':>8}"
    )
    for r in rows:
        vmap = "" if r["vmap_step_s"] is None else f"{r['vmap_step_s']:.2f}"
        print(
            f"{r['case']:<28} {r['optimizer']:>4} {r['batch_size']:>5} {r['M']:>3} "
            f"{r['batched_s']:>10.2f} {r['loop_s']:>8.2f} {r['speedup']:>8.1f}x {vmap:>12} "
            f"{r['median_rel_param_diff']:>17.1e} {r['max_rel_param_diff']:>8.1e}"
        )
    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "recipe": {
            "optimizer": "sgd (adam rows: lr 1e-3)",
            "lr": 0.05,
            "momentum": 0.9,
            "batch_size": "128 unless the row says otherwise",
            "epochs": epochs,
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
