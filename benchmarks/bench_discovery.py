"""Discovery benchmark: batched vs one head per meta-step; cost of each meta-gradient mode.

1. Throughput in *head-meta-steps per second* (one head's pair of learners unrolled,
   meta-evaluated and back-propagated), measured side by side in one process: all
   ``--heads`` heads of a meta-step as one vmapped stack of ``2 x heads`` learners vs the
   reference's one head per meta-step. Same encoder, learners, T and batch size.
2. Peak memory and time per meta-step of the three meta-gradient modes: the full unroll
   (the reference's), the full unroll with per-step activation checkpointing, and the
   first-order approximation (``first_order=True``), each in a fresh subprocess (peak RSS
   from ``resource.getrusage`` with the baseline RSS after set-up subtracted; wall-clock and
   process CPU seconds are means over ``--mem-repeats`` meta-steps after a warm-up step; CPU
   seconds are the steadier figure on a shared machine).

Prints a table and writes ``benchmarks/results/bench_discovery.json``. Defaults: part 1 the
digits preset (mlp encoder, mlp 256-64 learners, T=8, batch 128, 8 heads); part 2 T=20,
2 heads, batch 128 and reference-width mlp learners (1024-512-256-64).

    .venv/bin/python benchmarks/bench_discovery.py            # ~3-5 minutes on 2 cores
    .venv/bin/python benchmarks/bench_discovery.py --quick
    .venv/bin/python benchmarks/bench_discovery.py --threads 1  # steadier on a busy machine
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


#: Meta-gradient modes of the memory benchmark: MetaSettings overrides.
MODES: dict[str, dict[str, bool]] = {
    "full": {},
    "full+checkpoint": {"use_checkpoint": True},
    "first-order": {"first_order": True},
}


def build(
    heads: int,
    steps: int,
    batch: int,
    widths: list[int],
    mode: str = "full",
    enc_widths: list[int] | None = None,
):  # noqa: ANN201
    from taskspace.data import load_dataset
    from taskspace.discovery import InnerLearners, MetaSettings, MetaTrainer, TaskEncoder

    ds = load_dataset("digits")
    torch.manual_seed(0)
    kw = {"widths": enc_widths} if enc_widths else None
    enc = TaskEncoder("mlp", in_channels=1, image_size=8, dim=16, num_tasks=16, model_kwargs=kw)
    learners = InnerLearners("mlp", in_channels=1, image_size=8, model_kwargs={"widths": widths})
    s = MetaSettings(
        inner_steps=steps,
        inner_lr=0.2,
        batch_size=batch,
        eval_batch_size=256,
        heads_per_step=heads,
        uniformity=2.0,
        **MODES[mode],
    )
    return MetaTrainer(enc, learners, ds, s)


def throughput(args: argparse.Namespace) -> list[dict]:
    """Head-meta-steps per second, batched vs one head per step, interleaved rounds."""
    batched = build(args.heads, args.steps, args.batch, args.widths)
    single = build(1, args.steps, args.batch, args.widths)
    batched.meta_step()  # warm-up
    single.meta_step()
    times = {"batched": 0.0, "single": 0.0}
    heads = {"batched": 0, "single": 0}
    for _ in range(args.rounds):
        for name, mt in (("batched", batched), ("single", single)):
            n = 1 if name == "batched" else args.heads
            t0 = time.perf_counter()
            for _ in range(n):
                mt.meta_step()
            times[name] += time.perf_counter() - t0
            heads[name] += n * mt.s.heads_per_step
    rows = []
    for name in ("single", "batched"):
        rows.append(
            {
                "mode": name,
                "heads_per_step": 1 if name == "single" else args.heads,
                "head_steps": heads[name],
                "seconds": times[name],
                "head_steps_per_s": heads[name] / times[name],
            }
        )
    return rows


def _memory_child(
    mode: str, steps: int, widths: list[int], heads: int, batch: int, repeats: int
) -> None:
    import resource

    mt = build(heads, steps, batch, widths, mode=mode)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mt.meta_step()  # warm-up (its peak counts: every meta-step needs the same memory)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        mt.meta_step()
    sec = (time.perf_counter() - t0) / repeats
    cpu = (time.process_time() - c0) / repeats
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"baseline_kib": base, "peak_kib": peak, "seconds": sec, "cpu": cpu}))


def memory(args: argparse.Namespace) -> list[dict]:
    """Peak memory and seconds per meta-step of every mode, each in a fresh process."""
    rows = []
    for mode in MODES:
        cmd = [
            sys.executable,
            __file__,
            "--child-memory",
            mode,
            "--steps",
            str(args.mem_steps),
            "--heads",
            str(args.mem_heads),
            "--batch",
            str(args.batch),
            "--widths",
            *map(str, args.mem_widths),
            "--mem-repeats",
            str(args.mem_repeats),
            "--threads",
            str(torch.get_num_threads()),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        rows.append(
            {
                "mode": mode,
                "inner_steps": args.mem_steps,
                "learner_widths": args.mem_widths,
                "heads": args.mem_heads,
                "extra_peak_mib": (r["peak_kib"] - r["baseline_kib"]) / 1024,
                "seconds_per_meta_step": r["seconds"],
                "cpu_seconds_per_meta_step": r["cpu"],
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--widths", type=int, nargs="+", default=[256, 64])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--mem-steps", type=int, default=20)
    p.add_argument("--mem-heads", type=int, default=2)
    p.add_argument("--mem-widths", type=int, nargs="+", default=[1024, 512, 256, 64])
    p.add_argument("--mem-repeats", type=int, default=3)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's); 1 is steadier on a busy machine",
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--child-memory", choices=list(MODES), default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.child_memory is not None:
        _memory_child(
            args.child_memory, args.steps, args.widths, args.heads, args.batch, args.mem_repeats
        )
        return
    if args.quick:
        args.rounds, args.steps, args.mem_steps, args.mem_repeats = 1, 4, 8, 1
    thr = throughput(args)
    mem = memory(args)
    speedup = thr[1]["head_steps_per_s"] / thr[0]["head_steps_per_s"]
    print(
        f"\nthroughput (digits, mlp encoder, mlp {args.widths} learners, T={args.steps}, "
        f"batch {args.batch}, torch threads {torch.get_num_threads()})"
    )
    print(f"{'mode':<10} {'heads/step':>10} {'head-steps':>10} {'seconds':>8} {'head-steps/s':>13}")
    for r in thr:
        print(
            f"{r['mode']:<10} {r['heads_per_step']:>10} {r['head_steps']:>10} "
            f"{r['seconds']:>8.1f} {r['head_steps_per_s']:>13.3f}"
        )
    print(f"batched / one-head-per-step speed-up: {speedup:.2f}x")
    print(
        f"\nmeta-gradient modes (one meta-step, T={args.mem_steps}, {args.mem_heads} heads, "
        f"batch {args.batch}, mlp {args.mem_widths} learners)"
    )
    print(f"{'mode':<16} {'extra peak MiB':>15} {'s/meta-step':>12} {'CPU s/meta-step':>16}")
    for r in mem:
        print(
            f"{r['mode']:<16} {r['extra_peak_mib']:>15.1f} "
            f"{r['seconds_per_meta_step']:>12.2f} {r['cpu_seconds_per_meta_step']:>16.2f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_discovery.json"
    out.write_text(
        json.dumps(
            {
                "throughput": thr,
                "speedup": speedup,
                "memory": mem,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "machine": platform.platform(),
                "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
