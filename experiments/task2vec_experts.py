"""Task2Vec expert selection on CIFAR-10 (issue #14, reference section 4).

Experts: 5 small networks (``convnet``), expert ``e`` trained from scratch on the binary
task of its own class pair ``{2e, 2e+1}`` (airplane/automobile, bird/cat, deer/dog,
frog/horse, ship/truck), disjoint subsets, one ``fit_many`` call (masks). Each expert is
represented by the Task2Vec embedding of its training task (on its training images) with
one common probe: a ``convnet`` trained on 10-way CIFAR-10 on the same training half.

Queries: every binary task "class a vs class b" (45 pairs; 5 are an expert's own task,
"within", 40 take one class from two different experts, "across"), embedded with the same
probe on the query's own training images (the other half of the data, never seen by the
experts or the probe). Experts are ranked by symmetric cosine distance (Monte-Carlo
embeddings have no prior, so no asymmetric distance). Brute force: a linear probe (softmax
regression, L-BFGS) on each expert's frozen features, trained on the query's training
images and scored on its test images. Regret = selected error - best error, against the
expected regret of a uniformly random expert, averaged over queries.

Run: ``.venv/bin/python experiments/task2vec_experts.py``; results go to
``experiments/results/task2vec_experts.json`` (with a markdown table).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskspace.data.config import DataConfig, load_data
from taskspace.data.dataset import ImageDataset
from taskspace.embed.api import embed_tasks
from taskspace.embed.embedding import Embedding
from taskspace.embed.experts import brute_force_errors, rank_experts, regret_table
from taskspace.engine import fit_many
from taskspace.engine.recipe import Recipe
from taskspace.tasks.taskset import TaskSet

CIFAR = Path("../shared/external/cifar10-yoongikim")


def load(args: argparse.Namespace) -> ImageDataset:
    """CIFAR-10 subset, split (seeded) into ``fit`` (probe and experts), ``qtrain`` and
    ``qtest`` (the queries' brute-force probes)."""
    ds = load_data(
        DataConfig(name="cifar10", root=str(args.cifar), train_size=args.images, test_size=100),
        progress=False,
    )
    pool = torch.cat([ds.split("train"), ds.split("heldout")])
    perm = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(args.seed))]
    a, b = int(len(perm) * 0.5), int(len(perm) * 0.75)
    ds.use_splits({"fit": perm[:a].sort().values, "qtrain": perm[a:b].sort().values,
                   "qtest": perm[b:].sort().values})  # fmt: skip
    return ds


def recipe(args: argparse.Namespace) -> Recipe:
    return Recipe(optimizer="adam", lr=1e-3, batch_size=128, epochs=args.epochs)


def train_experts(
    ds: ImageDataset, pairs: list[tuple[int, int]], args: argparse.Namespace
) -> list[torch.nn.Module]:
    """One binary network per class pair, each on its own classes' ``fit`` images."""
    labels = torch.stack([(ds.classes == b).long() for _, b in pairs])
    masks = torch.stack([(ds.classes == a) | (ds.classes == b) for a, b in pairs])
    ens = fit_many("convnet", ds, labels, recipe(args), seeds=args.seed + 1,
                   train_idx=ds.split("fit"), masks=masks, num_outputs=2,
                   model_kwargs={"widths": list(args.widths)})  # fmt: skip
    return [ens.model(e) for e in range(len(pairs))]


def train_probe(ds: ImageDataset, args: argparse.Namespace) -> torch.nn.Module:
    ens = fit_many("convnet", ds, ds.classes.unsqueeze(0), recipe(args), seeds=args.seed,
                   train_idx=ds.split("fit"),
                   model_kwargs={"widths": list(args.widths)})  # fmt: skip
    return ens.model(0)


def pair_view(ds: ImageDataset, a: int, b: int, split: str) -> tuple[ImageDataset, TaskSet]:
    """The images of classes ``a`` and ``b`` in ``split`` and the task ``a`` (0) vs ``b`` (1)."""
    idx = ds.split(split)
    idx = idx[(ds.classes[idx] == a) | (ds.classes[idx] == b)]
    view = ImageDataset(
        ds.name, ds.images[idx], ds.mean, ds.std, ds.classes[idx], ds.class_names,
        splits={"train": torch.arange(len(idx))},
    )  # fmt: skip
    name = f"{ds.class_names[a]}-vs-{ds.class_names[b]}"
    labels = (view.classes == b).long().unsqueeze(0)
    return view, TaskSet(labels, [name], ["table"], {})


def embed_pair(
    ds: ImageDataset, a: int, b: int, split: str, probe: torch.nn.Module, args: argparse.Namespace
) -> Embedding:
    view, ts = pair_view(ds, a, b, split)
    return embed_tasks(view, ts, probe, max_samples=args.max_samples, seed=args.seed,
                       head_fit=args.head_fit,
                       head_weight_decay=args.head_weight_decay)[0]  # fmt: skip


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [
        "| queries | n | Task2Vec regret | random regret (expected) | Task2Vec picks best |",
        "|---|---|---|---|---|",
    ]
    for group, s in summary.items():
        lines.append(f"| {group} | {s['n']} | {s['regret']:.4f} | {s['random_regret']:.4f} | "
                     f"{s['picks_best']}/{s['n']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cifar", type=Path, default=CIFAR)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--epochs", type=float, default=10.0, help="probe and expert epochs")
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--head-fit", default="lbfgs", help="or adam (faithful)")
    p.add_argument("--head-weight-decay", type=float, default=None,
                   help="default: 1e-3 for lbfgs, 1e-4 for adam")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("experiments/results/task2vec_experts.json"))
    args = p.parse_args()
    torch.manual_seed(args.seed)
    t0 = time.time()
    ds = load(args)
    pairs = [(2 * e, 2 * e + 1) for e in range(5)]
    experts = train_experts(ds, pairs, args)
    probe = train_probe(ds, args)
    t_train = time.time() - t0
    expert_names = [f"expert:{ds.class_names[a]}+{ds.class_names[b]}" for a, b in pairs]
    expert_embs = {n: embed_pair(ds, a, b, "fit", probe, args)
                   for n, (a, b) in zip(expert_names, pairs)}  # fmt: skip
    feats = {n: m.features for n, m in zip(expert_names, experts)}
    rankings: dict[str, list[tuple[str, float]]] = {}
    errors: dict[str, dict[str, float]] = {}
    kind: dict[str, str] = {}
    for a, b in itertools.combinations(range(10), 2):
        q = embed_pair(ds, a, b, "qtrain", probe, args)
        name = q.meta["task"]
        rankings[name] = [(str(n), float(d)) for n, d in rank_experts(q, expert_embs)]
        tr, trs = pair_view(ds, a, b, "qtrain")
        te, tes = pair_view(ds, a, b, "qtest")
        errors[name] = brute_force_errors(feats, tr.normalize(tr.images), trs.labels[0],
                                          te.normalize(te.images), tes.labels[0],
                                          seed=args.seed)  # fmt: skip
        kind[name] = "within" if (a, b) in pairs else "across"
    rows = regret_table(rankings, errors)
    summary: dict[str, Any] = {}
    for group in ("all", "within", "across"):
        sel = [r for r in rows if group == "all" or kind[r["task"]] == group]
        summary[group] = {
            "n": len(sel),
            "regret": float(np.mean([r["regret"] for r in sel])),
            "random_regret": float(np.mean([r["random_regret"] for r in sel])),
            "picks_best": int(sum(r["regret"] == 0 for r in sel)),
            "mean_best_error": float(np.mean([r["best_error"] for r in sel])),
            "mean_selected_error": float(np.mean([r["selected_error"] for r in sel])),
        }
    table = markdown(rows, summary)
    print(table)
    out = {
        "command": f"python experiments/task2vec_experts.py --images {args.images} "
                   f"--epochs {args.epochs} --max-samples {args.max_samples} --seed {args.seed} "
                   f"--head-fit {args.head_fit} --head-weight-decay {args.head_weight_decay}",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "experts": {n: [ds.class_names[a], ds.class_names[b]]
                    for n, (a, b) in zip(expert_names, pairs)},
        "splits": {k: len(v) for k, v in ds.splits.items()},
        "distance": "cosine (symmetric; Monte-Carlo embeddings)",
        "summary": summary, "markdown": table,
        "rows": [dict(r, kind=kind[r["task"]]) for r in rows],
        "rankings": rankings, "errors": errors,
        "seconds": {"train": t_train, "total": time.time() - t0},
        "machine": platform.platform(), "threads": torch.get_num_threads(),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
