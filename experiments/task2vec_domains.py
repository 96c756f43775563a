"""Task2Vec domains check (issue #14): tasks from digits, CIFAR-10 and CelebA separate.

One small probe (``convnet``, trained here with ``fit_many``, no downloads) learns a
24-way mixture classification: the 10 digit classes, the 10 CIFAR-10 classes and 4 CelebA
classes (``Male`` x ``Smiling``). Every image is 3x32x32 (digits resized from 8x8, gray
channel replicated) and normalised with the mixture's statistics, so the probe sees the
same input distribution it was trained on. Each domain's images are split in two: one half
trains the probe, the other half is what that domain's tasks are embedded on.

Tasks (8+ per domain): digits and CIFAR-10: seeded samples of the human 5-vs-5 class
partitions; CelebA: the 10 attributes closest to balance (``Male`` and ``Smiling``
excluded, since the probe was trained on them). All are embedded with the same probe, by
both estimators (Monte-Carlo per-sample Fisher and the variational method).

Measured: the fraction of tasks whose nearest neighbour (symmetric cosine) is in its own
domain, per estimator (target >= 0.9), and the clustered distance matrix (Monte-Carlo) with
its leaf order, saved to ``docs/images/task2vec_domains.png``.

Deviation for CPU time: the variational method runs ``--var-draws`` (2,560) class-balanced
draws per task instead of the original 10,000 (40 steps of 64 instead of 156).

Run: ``.venv/bin/python experiments/task2vec_domains.py`` (paths default to
``../shared/external``); results go to ``experiments/results/task2vec_domains.json``.
"""

from __future__ import annotations

import argparse
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
from taskspace.data.resize import resize_dataset
from taskspace.embed.api import embed_tasks
from taskspace.embed.distances import pdist
from taskspace.embed.embedding import Embedding
from taskspace.embed.plots import cluster_order, plot_distance_matrix
from taskspace.engine import fit_many
from taskspace.engine.recipe import Recipe
from taskspace.tasks.builders import human_tasks
from taskspace.tasks.taskset import TaskSet

EXT = Path("../shared/external")
CIFAR = EXT / "cifar10-yoongikim"
CELEBA = EXT / "celeba-cs389hw4" / "celebA"
ATTR = EXT / "celeba-attr-zgjsxx" / "list_attr_celeba.txt"
SIZE = 32
CMD_ARGS = (
    "per_domain",
    "tasks",
    "probe_epochs",
    "max_samples",
    "var_draws",
    "var_epochs",
    "var_lr_noise",
    "var_average_last",
    "skip_layers",
    "head_fit",
    "head_weight_decay",
    "seed",
)
PROBE_CLASSES = ("Male", "Smiling")  # CelebA's probe-training labels (2 x 2 = 4 classes)


def to_rgb32(ds: ImageDataset) -> torch.Tensor:
    """uint8 [N, 3, 32, 32]: resized to 32 when needed, a gray channel replicated."""
    if ds.image_size != SIZE:
        ds = resize_dataset(ds, SIZE, cache=False)
    x = ds.images
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


def domain_view(
    name: str,
    images: torch.Tensor,
    classes: torch.Tensor,
    class_names: list[str],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    seed: int,
) -> ImageDataset:
    """An ImageDataset of one domain, split 50/50 into ``probe`` and ``train`` (embedding)."""
    n = len(images)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    half = n // 2
    splits = {"probe": perm[:half].sort().values, "train": perm[half:].sort().values}
    return ImageDataset(name, images, mean, std, classes, class_names, splits=splits)


def load_domains(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The three domains: images, per-domain labels for the probe, and their task sets."""
    g = torch.Generator().manual_seed(args.seed)
    digits = load_data(DataConfig(name="digits"), progress=False)
    cifar = load_data(
        DataConfig(name="cifar10", root=str(args.cifar), train_size=args.per_domain,
                   test_size=100),
        progress=False,
    )  # fmt: skip
    celeba = load_data(
        DataConfig(name="celeba", root=str(args.celeba), attributes=str(args.attributes),
                   partition="seeded", image_size=SIZE),
        progress=False,
    )  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    # digits: every image (1,797); CIFAR-10: the stratified train pool; CelebA: a random subset
    d_idx = torch.arange(len(digits))
    c_idx = torch.cat([cifar.split("train"), cifar.split("heldout")])[: args.per_domain]
    a_idx = torch.randperm(len(celeba), generator=g)[: args.per_domain]
    assert celeba.attributes is not None and celeba.attribute_names is not None
    names = celeba.attribute_names
    att = celeba.attributes[a_idx].long()
    probe_cls = 2 * att[:, names.index(PROBE_CLASSES[0])] + att[:, names.index(PROBE_CLASSES[1])]
    out["digits"] = {"images": to_rgb32(digits)[d_idx], "classes": digits.classes[d_idx],
                     "class_names": digits.class_names}  # fmt: skip
    out["cifar10"] = {"images": cifar.images[c_idx], "classes": cifar.classes[c_idx],
                      "class_names": cifar.class_names}  # fmt: skip
    out["celeba"] = {"images": to_rgb32(celeba)[a_idx], "classes": probe_cls,
                     "class_names": ["f-nosmile", "f-smile", "m-nosmile", "m-smile"],
                     "attributes": att, "attribute_names": names}  # fmt: skip
    return out


def mixture_stats(
    domains: dict[str, dict[str, Any]],
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = torch.cat([d["images"] for d in domains.values()]).float() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def celeba_tasks(att: torch.Tensor, names: list[str], count: int) -> TaskSet:
    """The ``count`` attributes closest to 50% positive (probe-training ones excluded)."""
    rate = att.float().mean(0)
    order = torch.argsort((rate - 0.5).abs()).tolist()
    keep = [i for i in order if names[i] not in PROBE_CLASSES][:count]
    keep.sort()
    labels = att[:, keep].T.contiguous()
    return TaskSet(labels, [f"celeba:{names[i]}" for i in keep], ["attribute"] * len(keep), {})


def train_probe(
    views: dict[str, ImageDataset],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    args: argparse.Namespace,
) -> torch.nn.Module:
    """The 24-way mixture probe trained on every domain's ``probe`` half."""
    offsets, imgs, cls, names, probe_idx, start = {}, [], [], [], [], 0
    off = 0
    for name, ds in views.items():
        offsets[name] = off
        imgs.append(ds.images)
        cls.append(ds.classes + off)
        names += [f"{name}:{c}" for c in ds.class_names]
        probe_idx.append(ds.split("probe") + start)
        off += ds.num_classes
        start += len(ds)
    mix = ImageDataset("mixture", torch.cat(imgs), mean, std, torch.cat(cls), names,
                       splits={"train": torch.cat(probe_idx)})  # fmt: skip
    recipe = Recipe(optimizer="adam", lr=1e-3, batch_size=128, epochs=args.probe_epochs)
    ens = fit_many("convnet", mix, mix.classes.unsqueeze(0), recipe, seeds=args.seed,
                   model_kwargs={"widths": list(args.widths)})  # fmt: skip
    model = ens.model(0)
    # accuracy on the embedding halves (never trained on)
    with torch.no_grad():
        accs = {}
        start = 0
        for name, ds in views.items():
            idx = ds.split("train")
            x = mix.normalize(mix.images[idx + start])
            pred = model(x).argmax(1)
            accs[name] = float((pred == mix.classes[idx + start]).float().mean())
            start += len(ds)
    print("probe accuracy on the embedding halves:", accs, flush=True)
    model.probe_accuracy = accs  # type: ignore[attr-defined]
    return model


def nn_in_domain(D: np.ndarray, domains: list[str]) -> tuple[float, dict[str, float], list[str]]:
    """Fraction of tasks whose nearest other task is in their own domain."""
    D = D.copy()
    np.fill_diagonal(D, np.inf)
    nn_idx = D.argmin(1)
    hit = np.array([domains[i] == domains[j] for i, j in enumerate(nn_idx)])
    per = {d: float(hit[[x == d for x in domains]].mean()) for d in dict.fromkeys(domains)}
    misses = [f"{i}->{int(j)}" for i, j in enumerate(nn_idx) if not hit[i]]
    return float(hit.mean()), per, misses


def blocks(D: np.ndarray, domains: list[str]) -> dict[str, Any]:
    """How cleanly the clustered matrix splits into domain blocks: the domains along the
    leaf order (complete linkage, optimal ordering, as the PNG), the number of contiguous
    runs of one domain there (3 = three clean blocks), and the purity of the linkage cut
    into 3 clusters (share of tasks in their cluster's majority domain)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    order = cluster_order(D, [str(i) for i in range(len(D))])
    leaf_domains = [domains[i] for i in order]
    runs = 1 + sum(a != b for a, b in zip(leaf_domains, leaf_domains[1:]))
    Z = linkage(squareform(D, checks=False), method="complete", optimal_ordering=True)
    cut = fcluster(Z, 3, criterion="maxclust")
    majority = 0
    for c in np.unique(cut):
        members = [domains[i] for i in np.flatnonzero(cut == c)]
        majority += max(members.count(d) for d in set(members))
    return {
        "leaf_domains": leaf_domains,
        "leaf_runs": runs,
        "three_cluster_purity": majority / len(domains),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cifar", type=Path, default=CIFAR)
    p.add_argument("--celeba", type=Path, default=CELEBA)
    p.add_argument("--attributes", type=Path, default=ATTR)
    p.add_argument("--per-domain", type=int, default=2000)
    p.add_argument("--tasks", type=int, default=10, help="tasks per domain")
    p.add_argument("--probe-epochs", type=float, default=8.0)
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--max-samples", type=int, default=600)
    p.add_argument(
        "--var-draws",
        type=int,
        default=2560,
        help="variational draws per epoch (original 10,000; cut for CPU time)",
    )
    p.add_argument("--var-epochs", type=int, default=1, help="variational epochs (original 1)")
    p.add_argument("--var-lr-noise", type=float, default=1e-2, help="variational lr_noise")
    p.add_argument(
        "--var-average-last",
        type=float,
        default=0.0,
        help="variational average_last (0: last iterate, the original)",
    )
    p.add_argument("--skip-layers", type=int, default=0)
    p.add_argument("--head-fit", default="lbfgs", help="or adam (faithful)")
    p.add_argument("--head-weight-decay", type=float, default=None,
                   help="default: 1e-3 for lbfgs, 1e-4 for adam")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("experiments/results/task2vec_domains.json"))
    p.add_argument("--png", type=Path, default=Path("docs/images/task2vec_domains.png"))
    args = p.parse_args()
    torch.manual_seed(args.seed)
    t0 = time.time()
    raw = load_domains(args)
    mean, std = mixture_stats(raw)
    views = {
        name: domain_view(name, d["images"], d["classes"], d["class_names"], mean, std,
                          args.seed + i)
        for i, (name, d) in enumerate(raw.items())
    }  # fmt: skip
    t_load = time.time() - t0
    probe = train_probe(views, mean, std, args)
    t_probe = time.time() - t0 - t_load
    tasksets = {
        "digits": human_tasks(views["digits"].classes, 10, max_tasks=args.tasks, seed=args.seed,
                              include_original=False).renamed(prefix="digits:"),
        "cifar10": human_tasks(views["cifar10"].classes, 10, max_tasks=args.tasks,
                               seed=args.seed + 1, include_original=False
                               ).renamed(prefix="cifar:"),
        "celeba": celeba_tasks(raw["celeba"]["attributes"], raw["celeba"]["attribute_names"],
                               args.tasks),
    }  # fmt: skip
    results: dict[str, Any] = {}
    names = [n for ts in tasksets.values() for n in ts.names]
    domains = [d for d, ts in tasksets.items() for _ in ts.names]
    for method in ("montecarlo", "variational"):
        t1 = time.time()
        embs: list[Embedding] = []
        opts: dict[str, Any] = {
            "head_fit": args.head_fit,
            "head_weight_decay": args.head_weight_decay,
        }
        if method == "variational":
            opts["method_opts"] = {
                "draws_per_epoch": args.var_draws,
                "epochs": args.var_epochs,
                "lr_noise": args.var_lr_noise,
                "average_last": args.var_average_last,
            }
        for dom, ts in tasksets.items():
            embs += embed_tasks(views[dom], ts, probe, method=method, split="train",
                                skip_layers=args.skip_layers, max_samples=args.max_samples,
                                seed=args.seed, **opts)  # fmt: skip
        D = pdist(embs, "cosine")
        frac, per, misses = nn_in_domain(D, domains)
        res: dict[str, Any] = {
            "nn_in_domain": frac, "nn_in_domain_per_domain": per,
            "misses": [f"{names[int(a)]} -> {names[int(b)]}"
                       for a, b in (m.split("->") for m in misses)],
            "dimension": int(len(embs[0].hessian)), "seconds": time.time() - t1,
            "head_accuracy": {n: e.meta.get("head_accuracy") for n, e in zip(names, embs)},
            "mean_within": float(np.mean([D[i, j] for i in range(len(D)) for j in range(len(D))
                                          if i != j and domains[i] == domains[j]])),
            "mean_across": float(np.mean([D[i, j] for i in range(len(D)) for j in range(len(D))
                                          if domains[i] != domains[j]])),
        }  # fmt: skip
        res["leaf_order"] = [names[i] for i in cluster_order(D, names)]
        if method == "montecarlo":
            args.png.parent.mkdir(parents=True, exist_ok=True)
            plot_distance_matrix(
                D, names, args.png, title="Task2Vec (MC) cosine: digits / CIFAR-10 / CelebA"
            )
        res.update(blocks(D, domains))
        if method == "variational":
            mc = np.asarray(results["montecarlo"]["distances"])
            iu = np.triu_indices(len(D), 1)
            res["spearman_with_montecarlo"] = float(spearmanr(D[iu], mc[iu])[0])
        res["distances"] = D.round(5).tolist()
        results[method] = res
        print(method, f"nn in own domain {frac:.3f}", per, f"runs {res['leaf_runs']}",
              f"3-cluster purity {res['three_cluster_purity']:.3f}",
              f"{res['seconds']:.0f}s", flush=True)  # fmt: skip
    out = {
        "command": "python experiments/task2vec_domains.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k in CMD_ARGS
        ),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "probe": {"model": "convnet", "widths": list(args.widths), "classes": 24,
                  "labels": "10 digit classes + 10 CIFAR-10 classes + CelebA Male x Smiling",
                  "accuracy_on_embedding_halves": probe.probe_accuracy,
                  "epochs": args.probe_epochs},
        "images_per_domain": {d: len(v) for d, v in views.items()},
        "embedded_images_per_domain": {d: len(v.split("train")) for d, v in views.items()},
        "tasks": names, "domains": domains,
        "seconds": {"load": t_load, "probe": t_probe, "total": time.time() - t0},
        "machine": platform.platform(), "threads": torch.get_num_threads(),
        **results,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} and {args.png} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
