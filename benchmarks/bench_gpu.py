"""The engine on a CUDA GPU, side by side with a plain per-model PyTorch loop.

Part 1 repeats ``bench_engine.py``'s digits MLP cases on the GPU. Part 2 times one AS pair
(M=2 CIFAR ResNet-18s, ViTs and MLPs, the reference recipe: Adam 1e-3, batch 512, 45,000 CIFAR-10
training images) for ``--steps`` optimiser steps, fp32 and with bf16 autocast +
channels_last, and projects the reference's 100 epochs from the time per step. Results go
to ``benchmarks/results/gpu.json``.

    python benchmarks/bench_gpu.py [--cifar PATH] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from bench_engine import CIFAR, ROOT, bench
from taskspace.data import load_dataset
from taskspace.engine import Recipe, get_recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cifar", default=str(CIFAR), help="CIFAR-10 folder (part 2 is skipped when absent)"
    )
    ap.add_argument("--steps", type=int, default=40, help="timed ResNet-18 steps per case")
    ap.add_argument("--repeat", type=int, default=3, help="timings per digits case (best kept)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu.json"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to benchmark")
        return
    dev = "cuda"
    rows = []
    digits = load_dataset("digits")
    sgd = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=128, epochs=2)
    for widths, name in (
        ((128, 64), "digits MLP 64-128-64-2"),
        ((1024, 512, 256, 64), "reference MLP widths"),
    ):
        for m in (2, 16, 64):
            rows.append(bench("mlp", digits, m, sgd, {"widths": widths}, name, args.repeat, dev))
            print(rows[-1], flush=True)
    cifar_root = Path(args.cifar)
    if cifar_root.is_dir():
        cifar = load_dataset("cifar10", cifar_root, progress=False)  # 45k train / 5k held-out
        n_train = len(cifar.split("train"))
        ref = get_recipe("reference", steps=args.steps)
        fast = ref.replace(bf16=True, channels_last=True)
        for arch, rec, name in (
            ("resnet18", ref, "ResNet-18 pair fp32"),
            ("resnet18", fast, "ResNet-18 pair bf16+CL"),
            ("vit4", fast, "ViT pair bf16"),
            ("mlp", fast, "reference MLP pair bf16"),
        ):
            row = bench(arch, cifar, 2, rec, {}, name, 1, dev)
            per_epoch = -(-n_train // rec.batch_size)
            for path in ("batched", "loop"):
                row[f"{path}_ms_per_step"] = round(1000 * row[f"{path}_s"] / args.steps, 1)
                row[f"{path}_100_epochs_min"] = round(
                    row[f"{path}_s"] / args.steps * per_epoch * 100 / 60, 1
                )
            rows.append(row)
            print(row, flush=True)
    print(
        f"\n{'case':<26} {'M':>3} {'batched s':>10} {'loop s':>8} {'speed-up':>9} "
        f"{'rel diff: median':>17} {'max':>8}"
    )
    for r in rows:
        print(
            f"{r['case']:<26} {r['M']:>3} {r['batched_s']:>10.2f} {r['loop_s']:>8.2f} "
            f"{r['speedup']:>8.1f}x {r['median_rel_param_diff']:>17.1e} "
            f"{r['max_rel_param_diff']:>8.1e}"
        )
    info = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(),
        "host": platform.machine(),
        "resnet_steps": args.steps,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
