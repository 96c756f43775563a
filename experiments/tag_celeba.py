"""TAG on the CelebA subset: affinities, selected groups and their test error (issue #15).

What it does, in the paper's order (Fifty et al. 2021, section 5 of
``task-relations.md``):

1. **Affinities.** One all-task network (9 heads, 2-way CE each, equal weights) trained with
   :func:`taskspace.mtl.affinity.task_affinity` twice: TAG's lookahead affinity
   (``kind="tag"``, plain-SGD lookahead, scaled by the lr, every step, summed over epochs:
   the CelebA notebook's switches) and the gradient cosine (``kind="cs"``, shared kernels).
   Matrices are ``Z[source, target]``; selection reads ``A = Z.T`` ("onto t from o").
2. **Selection.** :func:`taskspace.mtl.selection.select_groups_all` for B = 2, 3, 4 (exact;
   singletons forbidden for affinities, as the original).
3. **Evaluation.** Every network that any grouping needs is trained as plain multi-task
   (equal weights) from the same initialisation and data order per seed: all tasks in one,
   one per task, the groups chosen here and the paper's groups (section 6.3's CelebA rows).
   They are all one ``fit_many`` call: every network has the 9 heads and a task outside the
   network's group gets the label ``MISSING`` (-1), so its loss is masked to 0 and the head
   never trains (``MultiTask`` sums task losses: the same as a network with only the
   group's heads). Each network keeps its epoch with the lowest summed validation loss of
   its own tasks (the paper's restore-best early stopping, with a fixed epoch budget).
   Each task reports the test error of the network that serves it.

Model ``tag_celeba_resnet`` (registered here): the paper's CelebA "ResNet18" at reduced
width: 3x3 conv (no bias, stride 1, same padding) -> BN (eps 1e-3, Keras's) -> ReLU -> 3x3/2
valid max-pool -> one basic block (width -> width) -> 2x2 average pool -> flatten (at 32x32
and width 16: 16 x 7 x 7 = 784 features; the paper at 64x64, width 64: 14,400), then the
linear head (9 x 2 logits; PyTorch's default init, not Glorot).

Training: SGD with momentum 0.9 (the paper's optimiser), lr and batch CPU-sized (the paper:
lr 5e-4, batch 256, 162,770 images, <= 100 epochs with patience 10).

Run ``python experiments/tag_celeba.py --help``; the README block quotes the command used.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taskspace.data.config import DataConfig, load_data
from taskspace.data.dataset import ImageDataset
from taskspace.engine import Evaluate, MultiTask, Recipe, fit_many
from taskspace.engine.objectives import MISSING
from taskspace.engine.predict import predict_many
from taskspace.models.classifier import Classifier
from taskspace.models.registry import get_factory, register_model
from taskspace.models.resnet import BasicBlock
from taskspace.mtl.affinity import AffinityResult, task_affinity
from taskspace.mtl.selection import Selection, evaluate_grouping, select_groups_all
from taskspace.report.mpl import pyplot

TASKS = (
    "5_o_Clock_Shadow", "Black_Hair", "Blond_Hair", "Brown_Hair", "Goatee", "Mustache",
    "No_Beard", "Rosy_Cheeks", "Wearing_Hat",
)  # fmt: skip
SHORT = ("5oCS", "BlackH", "BlondH", "BrownH", "Goatee", "Mustache", "NoBeard", "Rosy", "Hat")
BUDGETS = (2, 3, 4)
MODEL = "tag_celeba_resnet"

#: Section 6.3's CelebA TAG and CS selections (from the paper's shipped matrices): per
#: budget, (group, tasks it serves) in short names.
PAPER: dict[str, dict[int, list[tuple[tuple[str, ...], tuple[str, ...]]]]] = {
    "tag": {
        2: [
            (("5oCS", "NoBeard"), ("5oCS", "NoBeard")),
            (
                ("BlackH", "BlondH", "BrownH", "Goatee", "Mustache", "NoBeard", "Rosy", "Hat"),
                ("BlackH", "BlondH", "BrownH", "Goatee", "Mustache", "Rosy", "Hat"),
            ),
        ],
        3: [
            (("5oCS", "NoBeard"), ("5oCS", "NoBeard")),
            (("BlackH", "BrownH"), ("BlackH", "BrownH")),
            (
                ("BlackH", "BlondH", "Goatee", "Mustache", "NoBeard", "Rosy", "Hat"),
                ("BlondH", "Goatee", "Mustache", "Rosy", "Hat"),
            ),
        ],
        4: [
            (("5oCS", "NoBeard"), ("5oCS", "NoBeard")),
            (("BlackH", "BrownH"), ("BlackH", "BrownH")),
            (("Goatee", "Mustache", "NoBeard"), ("Goatee", "Mustache")),
            (("BlackH", "BlondH", "BrownH", "NoBeard", "Rosy", "Hat"), ("BlondH", "Rosy", "Hat")),
        ],
    },
    "cs": {
        2: [
            (("Goatee", "Mustache"), ("Goatee", "Mustache")),
            (
                ("5oCS", "BlackH", "BlondH", "BrownH", "Goatee", "NoBeard", "Rosy", "Hat"),
                ("5oCS", "BlackH", "BlondH", "BrownH", "NoBeard", "Rosy", "Hat"),
            ),
        ],
        3: [
            (("5oCS", "NoBeard"), ("5oCS", "NoBeard")),
            (("Goatee", "Mustache"), ("Goatee", "Mustache")),
            (
                ("BlackH", "BlondH", "BrownH", "Rosy", "Hat"),
                ("BlackH", "BlondH", "BrownH", "Rosy", "Hat"),
            ),
        ],
        4: [
            (("5oCS", "NoBeard"), ("5oCS", "NoBeard")),
            (("BlackH", "BrownH"), ("BlackH", "BrownH")),
            (("Goatee", "Mustache"), ("Goatee", "Mustache")),
            (("BlackH", "BlondH", "BrownH", "NoBeard", "Rosy", "Hat"), ("BlondH", "Rosy", "Hat")),
        ],
    },
}
#: Section 6.3's objectives of those selections on the paper's matrices.
PAPER_OBJECTIVE = {
    "tag": {2: -99.44, 3: -92.44, 4: -86.88},
    "cs": {2: 0.9662, 3: 1.3095, 4: 1.4940},
}


# --------------------------------------------------------------------------- the model


class TagCelebaTrunk(nn.Module):
    """The paper's CelebA trunk at any width: conv-BN-ReLU-maxpool-basic block-avgpool-flatten."""

    def __init__(self, in_channels: int, width: int, image_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width, eps=1e-3)
        self.block = BasicBlock(width, width)
        side = ((image_size - 3) // 2 + 1) // 2  # valid 3x3/2 max-pool, then 2x2 average pool
        self.feature_dim = width * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(torch.relu(self.bn(self.conv(x))), 3, stride=2)
        return F.avg_pool2d(self.block(out), 2).flatten(1)


def tag_celeba_resnet(
    num_outputs: int, *, in_channels: int = 3, image_size: int = 32, width: int = 16
) -> Classifier:
    """TAG's CelebA "ResNet18" (one basic block) with ``width`` channels."""
    trunk = TagCelebaTrunk(in_channels, width, image_size)
    return Classifier(
        trunk,
        trunk.feature_dim,
        num_outputs,
        in_channels=in_channels,
        image_size=image_size,
        fixed_size=True,
    )


if get_factory(MODEL) is None:
    register_model(MODEL)(tag_celeba_resnet)


# --------------------------------------------------------------------------- data


def load(args: argparse.Namespace) -> tuple[ImageDataset, torch.Tensor]:
    """The CelebA subset (seeded 60/20/20 split) and its ``[N, 9]`` labels."""
    cfg = DataConfig(
        name="celeba",
        root=args.root,
        attributes=args.attributes,
        partition="seeded",
        image_size=args.image_size,
        split_seed=args.split_seed,
    )
    ds = load_data(cfg, progress=False)
    if args.subset:  # tiny checks: the first n of every split in its seeded order
        ds.use_splits({k: ds.first(k, min(args.subset, len(v))) for k, v in ds.splits.items()})
    assert ds.attributes is not None and ds.attribute_names is not None
    cols = [ds.attribute_names.index(t) for t in TASKS]
    return ds, ds.attributes[:, cols].long()


# --------------------------------------------------------------------------- affinities


def affinities(
    ds: ImageDataset, y: torch.Tensor, rec: Recipe, args: argparse.Namespace
) -> dict[str, tuple[AffinityResult, float]]:
    out: dict[str, tuple[AffinityResult, float]] = {}
    for kind in ("tag", "cs"):
        t0 = time.time()
        r = task_affinity(
            ds,
            y,
            kind=kind,  # type: ignore[arg-type]
            names=SHORT,
            model=MODEL,
            model_kwargs={"width": args.width},
            recipe=rec,
            epochs=args.affinity_epochs,
            seeds=args.affinity_seeds,
            every=args.every,
            lookahead="sgd",
            scale_by_lr=True,
            epoch_agg="sum",
            val_split="val",
            batched=False,
        )
        r.ensemble = None
        out[kind] = (r, time.time() - t0)
        print(f"{kind} affinity: {out[kind][1]:.0f} s", flush=True)
    return out


# --------------------------------------------------------------------------- networks


def network_list(
    chosen: dict[str, dict[int, Selection]],
) -> list[tuple[str, ...]]:
    """Every network to train: all-in-one, the singles, chosen and paper groups (unique)."""
    nets: list[tuple[str, ...]] = [SHORT, *((t,) for t in SHORT)]

    def add(g: Sequence[str]) -> None:
        key = tuple(t for t in SHORT if t in g)
        if key not in nets:
            nets.append(key)

    for sels in chosen.values():
        for sel in sels.values():
            for g in sel.groups:
                add(g)
    for per_b in PAPER.values():
        for rows in per_b.values():
            for g, _ in rows:
                add(g)
    return nets


def masked_labels(y: torch.Tensor, nets: Sequence[tuple[str, ...]]) -> torch.Tensor:
    """``[M, N, 9]``: network m's labels, ``MISSING`` for tasks outside its group."""
    out = torch.full((len(nets), *y.shape), MISSING, dtype=torch.long)
    for m, g in enumerate(nets):
        for t, name in enumerate(SHORT):
            if name in g:
                out[m, :, t] = y[:, t]
    return out


def _per_task(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task CE and error ``[M, 9]`` of logits ``[M, n, 18]`` against ``[M, n, 9]``
    (all labels counted, masked or not: the caller picks the served tasks)."""
    m, n, t = y.shape
    lg = logits.reshape(m, n, t, 2)
    ce = F.cross_entropy(lg.permute(0, 3, 1, 2), y.clamp_min(0), reduction="none").mean(1)
    err = (lg.argmax(-1) != y.clamp_min(0)).double().mean(1)
    return ce, err


def train_networks(
    ds: ImageDataset,
    y: torch.Tensor,
    nets: Sequence[tuple[str, ...]],
    rec: Recipe,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Train every network for every seed in one ``fit_many``; per-task val/test CE and
    error ``[K, M, 9]`` (every head evaluated; only the group's heads are meaningful)."""
    k, m = len(args.seeds), len(nets)
    lab = masked_labels(y, nets)
    labels = lab.repeat(k, 1, 1)  # seed-major: row s * m + j
    seeds = [s for s in args.seeds for _ in range(m)]
    val_idx, test_idx = ds.split("val"), ds.split("test")

    def val_loss(logits: torch.Tensor, idx: torch.Tensor, members: Sequence[int]) -> torch.Tensor:
        yy = labels[torch.as_tensor(list(members))][:, idx]
        mm, n, t = yy.shape
        lg = logits.reshape(mm, n, t, 2)
        ce = F.cross_entropy(lg.permute(0, 3, 1, 2), yy.clamp_min(0), reduction="none")
        have = (yy != MISSING).to(ce.dtype)
        per = (ce * have).sum(1) / have.sum(1).clamp_min(1)
        return per.sum(1)

    ev = Evaluate({"val": val_idx}, {"loss": val_loss}, select=("val", "loss"), mode="min")
    t0 = time.time()
    ens = fit_many(
        MODEL,
        ds,
        labels,
        rec.replace(epochs=args.group_epochs),
        seeds,
        objective=MultiTask(task_loss="ce", num_classes=2),
        hooks=[ev],
        model_kwargs={"width": args.width},
        batched=False,  # on a CPU the per-model loop is faster (measured: 7.8 s vs 19.5 s)
    )
    fit_s = time.time() - t0
    out: dict[str, Any] = {"fit_seconds": fit_s, "best_epoch": {}}
    for split, idx in (("val", val_idx), ("test", test_idx)):
        logits = predict_many(ens, ds, idx)
        ce, err = _per_task(logits, y[idx][None].expand(k * m, -1, -1))
        out[f"{split}_ce"] = ce.reshape(k, m, -1)
        out[f"{split}_err"] = err.reshape(k, m, -1)
    steps_per_epoch = math.ceil(len(ds.split("train")) / rec.batch_size)
    out["best_epoch"] = [
        [ev.best[s * m + j][1] / steps_per_epoch for j in range(m)] for s in range(k)
    ]
    print(f"group networks: {k * m} trained in {fit_s:.0f} s", flush=True)
    return out


def grouping_scores(
    nets: Sequence[tuple[str, ...]],
    groups: Sequence[Sequence[str]],
    served: dict[str, int],
    trained: dict[str, Any],
) -> dict[str, Any]:
    """Per-task val/test error and CE (mean over seeds) of a grouping, each task from the
    network that serves it, and the totals (per seed, then mean and std)."""
    index = {g: i for i, g in enumerate(nets)}
    keys = [tuple(t for t in SHORT if t in g) for g in groups]
    rows = torch.tensor([index[keys[served[t]]] for t in SHORT])
    cols = torch.arange(len(SHORT))
    out: dict[str, Any] = {}
    for what in ("test_err", "val_err", "test_ce", "val_ce"):
        per = trained[what][:, rows, cols]  # [K, 9]
        scale = 100.0 if what.endswith("err") else 1.0
        total = per.sum(1) * scale
        out[what] = {
            "per_task": dict(zip(SHORT, (per.mean(0) * scale).tolist())),
            "total_per_seed": total.tolist(),
            "total": float(total.mean()),
            "total_std": float(total.std()) if len(total) > 1 else 0.0,
        }
    return out


# --------------------------------------------------------------------------- figures


def heatmap(z: torch.Tensor, title: str, path: Path) -> None:
    """``A = Z.T`` ("onto" rows, "from" columns, the paper's tables), diagonal greyed."""
    plt = pyplot()
    a = z.T.double().numpy().copy()
    np.fill_diagonal(a, np.nan)
    lim = float(np.nanmax(np.abs(a))) or 1.0
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    cmap = plt.get_cmap("RdBu_r").copy()
    cmap.set_bad("#d0d0d0")
    im = ax.imshow(np.ma.masked_invalid(a), cmap=cmap, vmin=-lim, vmax=lim)
    for i in range(len(SHORT)):
        for j in range(len(SHORT)):
            if i != j:
                ax.text(j, i, f"{a[i, j]:.2g}", ha="center", va="center", fontsize=6.5)
    ax.set_xticks(range(len(SHORT)), SHORT, rotation=45, ha="right")
    ax.set_yticks(range(len(SHORT)), SHORT)
    ax.set_xlabel("from (source)")
    ax.set_ylabel("onto (target)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default="../shared/external/celeba-cs389hw4/celebA")
    p.add_argument(
        "--attributes", default="../shared/external/celeba-attr-zgjsxx/list_attr_celeba.txt"
    )
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--subset", type=int, default=0, help="n images per split (tiny checks)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--affinity-epochs", type=float, default=8)
    p.add_argument("--group-epochs", type=float, default=10)
    p.add_argument("--affinity-seeds", type=int, nargs="+", default=[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="experiments/results/tag_celeba.json")
    p.add_argument("--images", default="docs/images", help="heatmap folder ('' for none)")
    p.add_argument("--affinity-from", default=None, help="reuse this result's affinities")
    p.add_argument("--merge", nargs="+", default=None, help="join result files (seeds)")
    return p.parse_args(argv)


def assemble(matrices: dict[str, torch.Tensor], nets: list[tuple[str, ...]], trained: dict) -> dict:
    """Selections on ``matrices`` (``Z[source, target]`` per kind) and every grouping's
    scores from the trained networks' metrics ``[K, M, 9]``."""
    chosen = {
        kind: select_groups_all(z.double().T.numpy(), BUDGETS, kind="affinity", names=SHORT)
        for kind, z in matrices.items()
    }
    baselines = {
        "all_in_one": grouping_scores(nets, [SHORT], dict.fromkeys(SHORT, 0), trained),
        "one_per_task": grouping_scores(
            nets, [(t,) for t in SHORT], {t: i for i, t in enumerate(SHORT)}, trained
        ),
    }
    groupings: list[dict[str, Any]] = []
    for kind in ("tag", "cs"):
        a = matrices[kind].double().T.numpy()
        for b in BUDGETS:
            sel = chosen[kind][b]
            groupings.append(
                {
                    "source": "ours",
                    "kind": kind,
                    "budget": b,
                    "selection": sel.to_json(),
                    **grouping_scores(nets, sel.groups, sel.served, trained),
                }
            )
            rows = PAPER[kind][b]
            groups = [g for g, _ in rows]
            served = {t: i for i, (_, s) in enumerate(rows) for t in s}
            on_ours = evaluate_grouping(a, groups, "affinity", names=SHORT)
            groupings.append(
                {
                    "source": "paper",
                    "kind": kind,
                    "budget": b,
                    "groups": [list(g) for g in groups],
                    "serves": [list(s) for _, s in rows],
                    "paper_objective": PAPER_OBJECTIVE[kind][b],
                    "objective_on_our_matrix": on_ours.objective,
                    **grouping_scores(nets, groups, served, trained),
                }
            )
    return {"baselines": baselines, "groupings": groupings}


METRICS = ("test_err", "val_err", "test_ce", "val_ce")


def _affinity_json(r: AffinityResult, seconds: float) -> dict[str, Any]:
    return {
        "matrix_source_target": r.matrix.tolist(),
        "per_seed": r.per_seed.tolist(),
        "per_epoch": r.per_epoch.tolist(),
        "train_losses": r.train_losses.tolist(),
        "val_losses": None if r.val_losses is None else r.val_losses.tolist(),
        "config": r.config,
        "seconds": seconds,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.merge:
        return merge(args)
    torch.set_num_threads(args.threads)
    start = time.time()
    ds, y = load(args)
    rec = Recipe(optimizer="sgd", lr=args.lr, momentum=0.9, batch_size=args.batch_size)
    if args.affinity_from:  # reuse the matrices of an earlier run (more seeds of the groups)
        aff_json = json.loads(Path(args.affinity_from).read_text())["affinity"]
    else:
        aff = affinities(ds, y, rec, args)
        aff_json = {kind: _affinity_json(r, secs) for kind, (r, secs) in aff.items()}
    matrices = {k: torch.tensor(v["matrix_source_target"]) for k, v in aff_json.items()}
    chosen = {
        kind: select_groups_all(z.double().T.numpy(), BUDGETS, kind="affinity", names=SHORT)
        for kind, z in matrices.items()
    }
    nets = network_list(chosen)
    trained = train_networks(ds, y, nets, rec, args)
    wall = time.time() - start
    result = {
        "tasks": list(TASKS),
        "short": list(SHORT),
        "args": vars(args),
        "recipe": dataclasses.asdict(rec),
        "model": {"name": MODEL, "width": args.width, "image_size": args.image_size},
        "splits": {k: len(v) for k, v in ds.splits.items()},
        "positive_rate": dict(zip(SHORT, y.double().mean(0).tolist())),
        "affinity": aff_json,
        "networks": [list(g) for g in nets],
        "seeds": list(args.seeds),
        "network_metrics": {k: trained[k].tolist() for k in METRICS},
        "best_epoch": trained["best_epoch"],
        **assemble(matrices, nets, trained),
        "group_fit_seconds": trained["fit_seconds"],
        "wall_seconds": wall,
        "threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    finish(result, args)
    return result


def merge(args: argparse.Namespace) -> dict[str, Any]:
    """Join runs on the same matrices and networks (different seeds) into one result."""
    parts = [json.loads(Path(p).read_text()) for p in args.merge]
    first = parts[0]
    for p in parts[1:]:
        if p["networks"] != first["networks"] or p["affinity"] != first["affinity"]:
            raise SystemExit("merge: the runs differ in their networks or affinities")
    nets = [tuple(g) for g in first["networks"]]
    trained = {
        k: torch.cat([torch.tensor(p["network_metrics"][k], dtype=torch.float64) for p in parts])
        for k in METRICS
    }
    matrices = {k: torch.tensor(v["matrix_source_target"]) for k, v in first["affinity"].items()}
    result = {
        **first,
        "args": [p["args"] for p in parts],
        "seeds": [s for p in parts for s in p["seeds"]],
        "network_metrics": {k: v.tolist() for k, v in trained.items()},
        "best_epoch": [row for p in parts for row in p["best_epoch"]],
        **assemble(matrices, nets, trained),
        "group_fit_seconds": [p["group_fit_seconds"] for p in parts],
        "wall_seconds": [p["wall_seconds"] for p in parts],
    }
    finish(result, args)
    return result


def finish(result: dict[str, Any], args: argparse.Namespace) -> None:
    """Write the JSON and the heatmaps; print the summary."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if args.images:
        epochs = result["affinity"]["tag"]["config"]["recipe"]["epochs"]
        size = result["model"]["image_size"]
        for kind, label in (("tag", "TAG lookahead affinity"), ("cs", "gradient cosine (CS)")):
            heatmap(
                torch.tensor(result["affinity"][kind]["matrix_source_target"]),
                f"CelebA subset {size}x{size}: {label}, sum over {epochs:g} epochs",
                Path(args.images) / f"tag_celeba_{kind}.png",
            )
    print(summary(result), flush=True)
    print(f"wall {result['wall_seconds']} s -> {out}", flush=True)


def _fmt_groups(groups: Sequence[Sequence[str]], serves: Sequence[Sequence[str]]) -> str:
    parts = []
    for g, s in zip(groups, serves):
        tail = "" if list(s) == list(g) else "->" + ",".join(s)
        parts.append("{" + ",".join(g) + "}" + tail)
    return "; ".join(parts)


def summary(result: dict[str, Any]) -> str:
    """A plain-text table: each grouping, its groups and total test error."""
    lines = []
    for name, r in result["baselines"].items():
        t = r["test_err"]
        lines.append(f"{name:>12}: test err total {t['total']:.2f} +- {t['total_std']:.2f}")
    for g in result["groupings"]:
        if g["source"] == "ours":
            groups, serves = g["selection"]["groups"], g["selection"]["serves"]
        else:
            groups, serves = g["groups"], g["serves"]
        t = g["test_err"]
        lines.append(
            f"{g['source']:>5} {g['kind']} B={g['budget']}: test err total {t['total']:.2f} "
            f"+- {t['total_std']:.2f}  {_fmt_groups(groups, serves)}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
