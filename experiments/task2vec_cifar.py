"""Task2Vec semantics on CIFAR-10 (issue #14): distance tracks how many classes tasks share.

A small probe (``convnet``) is trained here on CIFAR-10 (10-way, a few epochs on a
class-stratified subset); a seeded sample of the human 5-vs-5 partitions and some balanced
random binary tasks are embedded (Monte-Carlo per-sample Fisher, the default) on images the
probe never trained on.

Measured:

* Spearman correlation, over all pairs of human tasks, between the cosine distance of their
  embeddings and the number of classes they do not share. A 5-vs-5 task is the same task
  with its labels swapped, so for positive sets P and Q the count is
  ``min(|P ^ Q|, |P ^ Q'|)`` (Q' the complement; ``^`` the symmetric difference), which is
  0, 2 or 4 (twice the number of classes that must change side). Target >= 0.5.
* mean distance random <-> human against human <-> human (target: random farther).

Run: ``.venv/bin/python experiments/task2vec_cifar.py``; results go to
``experiments/results/task2vec_cifar.json``.
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
from scipy.stats import spearmanr

from taskspace.data.config import DataConfig, load_data
from taskspace.data.dataset import ImageDataset
from taskspace.embed.api import embed_tasks
from taskspace.embed.distances import pdist
from taskspace.engine import fit_many
from taskspace.engine.recipe import Recipe
from taskspace.tasks.builders import human_tasks, random_tasks
from taskspace.tasks.taskset import TaskSet

CIFAR = Path("../shared/external/cifar10-yoongikim")


def load(args: argparse.Namespace) -> ImageDataset:
    """CIFAR-10 subset, its pool split into ``probe`` (probe training) and ``train``
    (embedding) halves, seeded."""
    ds = load_data(
        DataConfig(name="cifar10", root=str(args.cifar), train_size=args.images, test_size=100),
        progress=False,
    )
    pool = torch.cat([ds.split("train"), ds.split("heldout")])
    perm = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(args.seed))]
    n = int(len(perm) * args.probe_fraction)
    ds.use_splits({"probe": perm[:n].sort().values, "train": perm[n:].sort().values})
    return ds


def train_probe(ds: ImageDataset, args: argparse.Namespace) -> tuple[torch.nn.Module, float]:
    recipe = Recipe(optimizer="adam", lr=1e-3, batch_size=128, epochs=args.probe_epochs)
    ens = fit_many("convnet", ds, ds.classes.unsqueeze(0), recipe, seeds=args.seed,
                   train_idx=ds.split("probe"),
                   model_kwargs={"widths": list(args.widths)})  # fmt: skip
    model = ens.model(0)
    idx = ds.split("train")
    with torch.no_grad():
        acc = float((model(ds.normalize(ds.images[idx])).argmax(1) == ds.classes[idx]).float()
                    .mean())  # fmt: skip
    return model, acc


def positives(ts: TaskSet, name: str) -> set[int]:
    return set(ts.meta["tasks"][name]["positive_classes"])


def not_shared(p: set[int], q: set[int], c: int = 10) -> int:
    """Classes two 5-vs-5 tasks do not share, up to label swap: min(|P^Q|, |P^Q'|)."""
    comp = set(range(c)) - q
    return min(len(p ^ q), len(p ^ comp))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cifar", type=Path, default=CIFAR)
    p.add_argument("--images", type=int, default=5000, help="CIFAR-10 train images used")
    p.add_argument("--probe-fraction", type=float, default=0.6)
    p.add_argument("--probe-epochs", type=float, default=10.0)
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--human", type=int, default=28)
    p.add_argument("--random", type=int, default=8)
    p.add_argument("--max-samples", type=int, default=1000)
    p.add_argument("--skip-layers", type=int, default=0)
    p.add_argument("--estimator", default="per_sample", help="or batch_mean_sq (faithful)")
    p.add_argument("--head-fit", default="lbfgs", help="or adam (faithful)")
    p.add_argument("--head-weight-decay", type=float, default=None,
                   help="default: 1e-3 for lbfgs, 1e-4 for adam")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("experiments/results/task2vec_cifar.json"))
    args = p.parse_args()
    torch.manual_seed(args.seed)
    t0 = time.time()
    ds = load(args)
    probe, acc = train_probe(ds, args)
    t_probe = time.time() - t0
    print(f"probe 10-way accuracy on the embedding images: {acc:.3f} ({t_probe:.0f}s)",
          flush=True)  # fmt: skip
    human = human_tasks(ds.classes, 10, max_tasks=args.human, seed=args.seed,
                        include_original=False)  # fmt: skip
    rand = random_tasks(len(ds), args.random, seed=args.seed, balanced=True)
    tasks = TaskSet.concat(human, rand)
    t1 = time.time()
    embs = embed_tasks(ds, tasks, probe, split="train", max_samples=args.max_samples,
                       skip_layers=args.skip_layers, seed=args.seed,
                       estimator=args.estimator, head_fit=args.head_fit,
                       head_weight_decay=args.head_weight_decay)  # fmt: skip
    t_embed = time.time() - t1
    D = pdist(embs, "cosine")
    nh = len(human)
    pairs = list(itertools.combinations(range(nh), 2))
    d = np.array([D[i, j] for i, j in pairs])
    k = np.array([not_shared(positives(human, human.names[i]), positives(human, human.names[j]))
                  for i, j in pairs])  # fmt: skip
    rho, pval = spearmanr(d, k)
    hh = float(d.mean())
    rh = float(D[nh:, :nh].mean())
    rr = float(np.mean([D[i, j] for i, j in itertools.combinations(range(nh, len(tasks)), 2)]))
    by_k = {int(v): float(d[k == v].mean()) for v in np.unique(k)}
    counts = {int(v): int((k == v).sum()) for v in np.unique(k)}
    print(f"spearman {rho:.3f} (p={pval:.2g}); mean d by not-shared {by_k}; "
          f"human-human {hh:.4f} random-human {rh:.4f} random-random {rr:.4f}")  # fmt: skip
    out: dict[str, Any] = {
        "command": "python experiments/task2vec_cifar.py " + " ".join(
            f"--{a.replace('_', '-')} {getattr(args, a)}" for a in
            ("images", "probe_epochs", "human", "random", "max_samples", "skip_layers",
             "estimator", "head_fit", "head_weight_decay", "seed")
        ),
        "args": {a: (str(v) if isinstance(v, Path) else v) for a, v in vars(args).items()},
        "probe": {"model": "convnet", "widths": list(args.widths), "epochs": args.probe_epochs,
                  "train_images": len(ds.split("probe")),
                  "accuracy_on_embedding_images": acc},
        "embedding_images": min(args.max_samples, len(ds.split("train"))),
        "spearman": float(rho), "spearman_p": float(pval),
        "not_shared_rule": "min(|P^Q|, |P^Q'|) over positive sets (label swap)",
        "mean_distance_by_not_shared": by_k, "pairs_by_not_shared": counts,
        "mean_human_human": hh, "mean_random_human": rh, "mean_random_random": rr,
        "random_farther": rh > hh,
        "head_accuracy": {n: e.meta.get("head_accuracy") for n, e in zip(tasks.names, embs)},
        "tasks": tasks.names,
        "positive_classes": {n: sorted(positives(human, n)) for n in human.names},
        "distances": D.round(6).tolist(),
        "seconds": {"probe": t_probe, "embed": t_embed, "total": time.time() - t0},
        "machine": platform.platform(), "threads": torch.get_num_threads(),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
