"""Adversarial train/test splits (``reference/task-discovery.md`` section 8) and baselines.

The principle: for a target task ``t`` and a task ``d`` the learner generalises on (a
discovered task, ``tau_d``), train on ``{t = d}`` and test on ``{t != d}``. On the train side
``t`` and ``d`` cannot be told apart, so the learner follows its bias towards ``d`` and
scores below chance on the test side. Replacing ``d`` by ``1 - d`` (``flip=True``) swaps
the two sides; both are adversarial, so the orientation is recorded in the split's meta.

Builders:

- :func:`binary_split`: target labels ``t`` and discovered labels ``d`` over all images.
- :func:`multiclass_split`: ``t = 1[class in C1]`` from a class partition; the learner is then
  trained on the original classes.
- :func:`random_network_split`: ``d`` from the logit of a randomly initialised registry model
  (per class, the lower half of the logits is 1), ``t`` a seeded random class partition.
- :func:`random_split_like`: a seeded random split with the same side sizes (the baseline).
- :func:`reference_random_split`: the reference's baseline, one seeded half/half split of the
  pool, the same for every target and discovered task.
- :func:`adversarial_splits`: every (target, discovered) pair of two task sets.

Every split is restricted to a *pool* of indices, by default the dataset's non-test images.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from taskspace.data.dataset import ImageDataset
from taskspace.engine import fit_many
from taskspace.errors import TaskspaceError
from taskspace.models import Classifier, create_model
from taskspace.tasks import TaskSet

#: Split kinds: the three adversarial builders, imported files, and random baselines.
SPLIT_KINDS: tuple[str, ...] = ("binary", "multiclass", "random_network", "imported", "random")


@dataclass(eq=False)
class Split:
    """One train/test split of a dataset's images.

    Attributes:
        train_idx: ``int64 [n_train]`` sorted dataset indices of the train side.
        test_idx: ``int64 [n_test]`` sorted dataset indices of the test side (disjoint).
        name: unique name, used for file names and result rows.
        kind: one of :data:`SPLIT_KINDS`.
        meta: JSON-able facts: ``target`` / ``discovered`` task names, ``orientation``
            (``"t=d"`` or ``"t=1-d"``), ``positive_classes`` of the target when it is a class
            partition, ``n_train`` / ``n_test``, ``pool`` size, seeds.
        target_labels: optional ``int64 [N]`` target labels over all images (what a 2-way
            learner is trained on); ``None`` for splits without a binary target.
    """

    train_idx: torch.Tensor
    test_idx: torch.Tensor
    name: str
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    target_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.train_idx = _as_index(self.train_idx, f"split {self.name!r} train_idx")
        self.test_idx = _as_index(self.test_idx, f"split {self.name!r} test_idx")
        if self.kind not in SPLIT_KINDS:
            raise TaskspaceError(
                f"unknown split kind {self.kind!r}; expected one of {', '.join(SPLIT_KINDS)}"
            )
        common = np.intersect1d(self.train_idx.numpy(), self.test_idx.numpy())
        if common.size:
            raise TaskspaceError(
                f"split {self.name!r}: train and test share {common.size} indices "
                f"(e.g. {int(common[0])}); the two sides must be disjoint"
            )
        if self.target_labels is not None:
            self.target_labels = torch.as_tensor(self.target_labels).long().flatten()
        self.meta = dict(self.meta)
        self.meta.setdefault("n_train", len(self.train_idx))
        self.meta.setdefault("n_test", len(self.test_idx))

    @property
    def sizes(self) -> tuple[int, int]:
        """``(n_train, n_test)``."""
        return len(self.train_idx), len(self.test_idx)

    def validate(self, n_images: int) -> Split:
        """Check every index lies in ``[0, n_images)`` (and target labels cover all images)."""
        for side, idx in (("train", self.train_idx), ("test", self.test_idx)):
            if len(idx) and int(idx.max()) >= n_images:
                raise TaskspaceError(
                    f"split {self.name!r}: {side} index {int(idx.max())} is out of range for a "
                    f"dataset of {n_images} images"
                )
        if self.target_labels is not None and len(self.target_labels) != n_images:
            raise TaskspaceError(
                f"split {self.name!r}: target labels cover {len(self.target_labels)} images, "
                f"the dataset has {n_images}"
            )
        return self

    def mask(self, n_images: int, side: str = "train") -> torch.Tensor:
        """``bool [N]``, true on the given side."""
        out = torch.zeros(n_images, dtype=torch.bool)
        out[self.train_idx if side == "train" else self.test_idx] = True
        return out

    def flipped(self) -> Split:
        """The same split with the sides swapped (``d`` replaced by ``1 - d``)."""
        meta = copy.deepcopy(self.meta)
        meta["orientation"] = _other_orientation(meta.get("orientation", "t=d"))
        meta["n_train"], meta["n_test"] = len(self.test_idx), len(self.train_idx)
        return Split(
            self.test_idx.clone(),
            self.train_idx.clone(),
            _flip_name(self.name),
            self.kind,
            meta,
            self.target_labels,
        )


def _other_orientation(o: str) -> str:
    return "t=1-d" if o == "t=d" else "t=d"


def _flip_name(name: str) -> str:
    return name[: -len("-flip")] if name.endswith("-flip") else f"{name}-flip"


def _as_index(idx: Any, what: str) -> torch.Tensor:
    """A sorted, duplicate-free ``int64`` CPU index tensor (or a clear error)."""
    arr = idx.detach().cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
    if arr.size == 0:
        return torch.zeros(0, dtype=torch.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise TaskspaceError(
            f"{what} must be a 1-D integer index array, got {arr.dtype} {arr.shape}"
        )
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise TaskspaceError(f"{what} has negative index {int(arr.min())}")
    uniq = np.unique(arr)
    if uniq.size != arr.size:
        raise TaskspaceError(f"{what} repeats indices")
    return torch.from_numpy(uniq)


def default_pool(dataset: ImageDataset) -> torch.Tensor:
    """Every image outside the dataset's ``test`` split (train + held-out), sorted."""
    keep = torch.ones(len(dataset), dtype=torch.bool)
    if "test" in dataset.splits:
        keep[dataset.splits["test"]] = False
    return keep.nonzero().flatten()


def resolve_pool(dataset: ImageDataset, pool: str | torch.Tensor | None) -> torch.Tensor:
    """``None``/``"nontest"`` -> :func:`default_pool`; ``"all"``; a split name; or indices."""
    if pool is None or (isinstance(pool, str) and pool == "nontest"):
        return default_pool(dataset)
    if isinstance(pool, str):
        if pool == "all":
            return torch.arange(len(dataset))
        return dataset.split(pool).sort().values
    out = _as_index(pool, "pool")
    if len(out) and int(out.max()) >= len(dataset):
        raise TaskspaceError(
            f"pool index {int(out.max())} is out of range for {len(dataset)} images"
        )
    return out


def _binary_labels(labels: torch.Tensor, what: str) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise TaskspaceError(f"{what} must be one label per image (1-D), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point:
        raise TaskspaceError(f"{what} must be integer 0/1 labels, got {labels.dtype}")
    labels = labels.long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 1):
        raise TaskspaceError(
            f"{what} must be binary (0/1) for a split; got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    return labels


def binary_split(
    target: torch.Tensor,
    discovered: torch.Tensor,
    *,
    pool: torch.Tensor | None = None,
    flip: bool = False,
    name: str | None = None,
    target_name: str = "target",
    discovered_name: str = "discovered",
    kind: str = "binary",
    meta: dict[str, Any] | None = None,
) -> Split:
    """Train ``{t = d}``, test ``{t != d}`` within ``pool`` (``flip``: ``d -> 1 - d``).

    Args:
        target: ``[N]`` 0/1 target labels ``t``.
        discovered: ``[N]`` 0/1 labels ``d`` of the task the learner is biased towards.
        pool: the indices to split (default: all ``N``).
        flip: use ``1 - d``, which swaps train and test.
        name: split name (default ``"<target>__<discovered>"`` plus ``-flip``).
    """
    t = _binary_labels(target, f"target task {target_name!r}")
    d = _binary_labels(discovered, f"discovered task {discovered_name!r}")
    if len(t) != len(d):
        raise TaskspaceError(
            f"target task {target_name!r} labels {len(t)} images but discovered task "
            f"{discovered_name!r} labels {len(d)}; tasks must label the same images"
        )
    pool = torch.arange(len(t)) if pool is None else _as_index(pool, "pool")
    if len(pool) and int(pool.max()) >= len(t):
        raise TaskspaceError(f"pool index {int(pool.max())} is out of range for {len(t)} images")
    if flip:
        d = 1 - d
    same = t[pool] == d[pool]
    name = name or f"{target_name}__{discovered_name}" + ("-flip" if flip else "")
    info = {
        "target": target_name,
        "discovered": discovered_name,
        "orientation": "t=1-d" if flip else "t=d",
        "pool_size": len(pool),
    }
    info.update(meta or {})
    return Split(pool[same], pool[~same], name, kind, info, t.clone())


def multiclass_split(
    classes: torch.Tensor,
    positive_classes: Sequence[int],
    discovered: torch.Tensor,
    *,
    pool: torch.Tensor | None = None,
    flip: bool = False,
    name: str | None = None,
    discovered_name: str = "discovered",
) -> Split:
    """The binary split with ``t = 1[class in positive_classes]`` (the class group C1).

    The learner is trained on the original classes; ``t`` only decides the split.
    """
    classes = torch.as_tensor(classes).long()
    c1 = sorted({int(c) for c in positive_classes})
    if not c1:
        raise TaskspaceError("multiclass split needs a non-empty positive class group C1")
    t = torch.isin(classes, torch.tensor(c1)).long()
    tname = (
        "C1=" + "".join(str(c) for c in c1)
        if max(c1) < 10
        else "C1=" + "-".join(str(c) for c in c1)
    )
    split = binary_split(
        t,
        discovered,
        pool=pool,
        flip=flip,
        name=name,
        target_name=tname,
        discovered_name=discovered_name,
        kind="multiclass",
        meta={"positive_classes": c1},
    )
    return split


def class_partition(num_classes: int, seed: int) -> list[int]:
    """The reference's random class partition: the first part of sklearn's
    ``train_test_split(arange(C), train_size=C // 2, random_state=seed)``, sorted."""
    # On use, not at the top: scikit-learn would slow down the start of every command.
    from sklearn.model_selection import train_test_split

    if num_classes < 2:
        raise TaskspaceError(f"a class partition needs at least 2 classes, got {num_classes}")
    first, _ = train_test_split(
        np.arange(num_classes), train_size=num_classes // 2, random_state=seed
    )
    return sorted(int(c) for c in first)


@torch.no_grad()
def random_network_logits(
    dataset: ImageDataset,
    idx: torch.Tensor,
    *,
    model: str = "mlp",
    seed: int = 0,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    model_kwargs: dict | None = None,
) -> torch.Tensor:
    """One logit per image of ``idx`` from a randomly initialised registry model.

    ``torch.manual_seed(seed)`` then ``create_model(model, 1, ...)``, eval mode, no grad
    (as the reference's ResNet-50 with ``fc`` replaced by ``Linear(2048 -> 1)``).
    """
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        net = create_model(
            model,
            1,
            in_channels=dataset.channels,
            image_size=dataset.image_size,
            **(model_kwargs or {}),
        )
    finally:
        torch.random.set_rng_state(state)
    net = net.to(device).eval()
    out = []
    for i in range(0, len(idx), batch_size):
        x = dataset.normalize(dataset.images[idx[i : i + batch_size]].to(device))
        out.append(net(x).float().reshape(-1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def lower_half_per_class(scores: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``[n]`` 0/1: within each class the ``floor(n_c / 2)`` lowest scores get 1.

    Ties are broken by position (stable sort), so the result is deterministic.
    """
    out = torch.zeros(len(scores), dtype=torch.long)
    for c in torch.unique(classes).tolist():
        members = (classes == c).nonzero().flatten()
        order = torch.sort(scores[members], stable=True).indices
        out[members[order[: len(members) // 2]]] = 1
    return out


def random_network_split(
    dataset: ImageDataset,
    *,
    model: str = "mlp",
    seed: int = 0,
    pool: str | torch.Tensor | None = None,
    flip: bool = False,
    name: str | None = None,
    device: str | torch.device = "cpu",
    model_kwargs: dict | None = None,
) -> Split:
    """The reference's ImageNet random-network split, for any dataset and registry model.

    ``d``: per class, the lower half of a random network's logits (over the pool) is 1.
    ``t``: ``1[class in C1]`` for the seeded random class partition :func:`class_partition`.
    Train ``{t = d}``, test ``{t != d}``.
    """
    pool_idx = resolve_pool(dataset, pool)
    logits = random_network_logits(
        dataset, pool_idx, model=model, seed=seed, device=device, model_kwargs=model_kwargs
    )
    d = torch.zeros(len(dataset), dtype=torch.long)
    d[pool_idx] = lower_half_per_class(logits, dataset.classes[pool_idx])
    c1 = class_partition(dataset.num_classes, seed)
    t = torch.isin(dataset.classes, torch.tensor(c1)).long()
    name = name or f"randnet-{model}-s{seed}" + ("-flip" if flip else "")
    return binary_split(
        t,
        d,
        pool=pool_idx,
        flip=flip,
        name=name,
        target_name="C1=" + "-".join(map(str, c1)),
        discovered_name=f"random-{model}-s{seed}",
        kind="random_network",
        meta={"positive_classes": c1, "network": model, "network_seed": int(seed)},
    )


def random_split_like(
    split: Split,
    *,
    seed: int = 0,
    pool: torch.Tensor | None = None,
    name: str | None = None,
) -> Split:
    """A seeded random split with the same ``|train|`` and ``|test|`` as ``split``.

    Drawn from ``pool`` (default: the union of the split's two sides) with
    ``torch.randperm`` on a generator seeded ``seed``. Target labels and the target's
    class partition are kept, so the baseline is evaluated on the same task.
    """
    pool = torch.cat([split.train_idx, split.test_idx]) if pool is None else _as_index(pool, "pool")
    pool = pool.sort().values
    n_train, n_test = split.sizes
    if n_train + n_test > len(pool):
        raise TaskspaceError(
            f"pool of {len(pool)} images is too small for a {n_train}/{n_test} random split"
        )
    g = torch.Generator().manual_seed(int(seed))
    perm = pool[torch.randperm(len(pool), generator=g)]
    meta = _baseline_meta(split, seed, "matched")
    return Split(
        perm[:n_train],
        perm[n_train : n_train + n_test],
        name or f"random-{split.name}",
        "random",
        meta,
        split.target_labels,
    )


def _baseline_meta(split: Split, seed: int, baseline: str) -> dict[str, Any]:
    """Meta of a random baseline standing in for ``split``: what it is like, and its seed."""
    keep = {
        k: v
        for k, v in split.meta.items()
        if k in ("target", "discovered", "positive_classes", "pool_size")
    }
    return {
        **keep,
        "like": split.name,
        "random_seed": int(seed),
        "setting_kind": split.kind,
        "random_baseline": baseline,
    }


def reference_random_split(split: Split, *, seed: int = 0, name: str | None = None) -> Split:
    """The reference's random baseline for ``split``: one half/half ``random_split`` of the
    pool (the union of the split's two sides), whatever the split's own sizes.

    ``perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))`` over the
    sorted pool; the first ``n - n // 2`` positions are train, the rest test (as
    ``torch.utils.data.random_split(pool, [0.5, 0.5])``). On CIFAR-10's 50,000 training
    images with seed 0 this is the reference's 25,000 / 25,000 split, the same for every
    target and ``split_idx``. Target labels and the target's class partition are kept.
    """
    pool = torch.cat([split.train_idx, split.test_idx]).sort().values
    perm = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(int(seed)))]
    n_train = len(pool) - len(pool) // 2
    return Split(
        perm[:n_train],
        perm[n_train:],
        name or f"random-{split.name}",
        "random",
        _baseline_meta(split, seed, "reference"),
        split.target_labels,
    )


def feature_sign_tasks(
    dataset: ImageDataset,
    count: int,
    *,
    seed: int = 0,
    model: str = "mlp",
    recipe: Any = "fast",
    model_kwargs: dict | None = None,
    device: str = "cpu",
) -> TaskSet:
    """A STAND-IN for discovered tasks: signs of random projections of learned features.

    Trains one ``model`` on the original classes (the dataset's ``train`` split), takes its
    eval-mode penultimate features ``f(x)`` of every image, centres them (mean over the
    non-test images) and labels task ``k`` as ``1[w_k . (f(x) - mean) > 0]`` with ``w_k``
    standard normal (generator seeded ``seed``). Such tasks are easy for the learner (they
    are linear in its own features), which is what an adversarial split needs; they are not
    the output of task discovery, and are named ``standin-NN`` with their own kind
    ``standin`` (neither ``random`` nor ``discovered``, so tables never mix them up).
    """
    if count < 1:
        raise TaskspaceError(f"need at least one stand-in task, got {count}")
    ens = fit_many(
        model,
        dataset,
        dataset.classes[None],
        recipe,
        [int(seed)],
        model_kwargs=model_kwargs,
        device=device,
    )
    net = cast(Classifier, ens.model(0)).to(device)  # Ensemble.model is typed nn.Module
    feats = []
    with torch.no_grad():
        for i in range(0, len(dataset), 1024):
            x = dataset.normalize(dataset.images[i : i + 1024].to(device))
            feats.append(net.backbone(x).float().cpu())
    f = torch.cat(feats)
    f = f - f[default_pool(dataset)].mean(0)
    g = torch.Generator().manual_seed(int(seed))
    w = torch.randn(f.shape[1], count, generator=g)
    labels = (f @ w > 0).long().T.contiguous()
    names = [f"standin-{k:02d}" for k in range(count)]
    meta = {
        "standin": True,
        "construction": "sign of random projections of the penultimate "
        f"features of a {model} trained on the original classes",
        "seed": int(seed),
    }
    return TaskSet(labels, names, ["standin"] * count, meta)


def _check_same_images(a: TaskSet, b: TaskSet, what_a: str, what_b: str) -> None:
    if a.num_images != b.num_images:
        raise TaskspaceError(
            f"{what_a} label {a.num_images} images but {what_b} label {b.num_images}; "
            "tasks must be over the same images (same dataset and options)"
        )


def adversarial_splits(
    dataset: ImageDataset,
    targets: TaskSet,
    discovered: TaskSet,
    *,
    kind: str = "binary",
    pool: str | torch.Tensor | None = None,
    flip: bool = False,
) -> list[Split]:
    """One split per (target, discovered task) pair, targets outermost.

    ``kind="binary"``: ``t`` is the target task's labels. ``kind="multiclass"``: ``t`` is
    ``1[class in C1]`` with ``C1`` the target's ``positive_classes`` (human tasks carry
    them in their meta); the split is the same, only its kind (and so the learner's labels
    in :mod:`taskspace.splits.evaluate`) differs.
    """
    if kind not in ("binary", "multiclass"):
        raise TaskspaceError(f"kind must be binary or multiclass here, got {kind!r}")
    _check_same_images(targets, discovered, "target tasks", "discovered tasks")
    if targets.num_images != len(dataset):
        raise TaskspaceError(
            f"tasks label {targets.num_images} images but the dataset has {len(dataset)}"
        )
    pool_idx = resolve_pool(dataset, pool)
    out = []
    for i, tname in enumerate(targets.names):
        tmeta = targets.task_meta(i)
        for j, dname in enumerate(discovered.names):
            if kind == "multiclass":
                c1 = tmeta.get("positive_classes")
                if not c1:
                    raise TaskspaceError(
                        f"target {tname!r} has no positive_classes in its "
                        "meta; multiclass splits need class-partition targets"
                    )
                s = multiclass_split(
                    dataset.classes,
                    c1,
                    discovered.labels[j],
                    pool=pool_idx,
                    flip=flip,
                    discovered_name=dname,
                    name=f"{tname}__{dname}" + ("-flip" if flip else ""),
                )
                s.meta["target"] = tname
            else:
                extra = (
                    {"positive_classes": tmeta["positive_classes"]}
                    if ("positive_classes" in tmeta)
                    else {}
                )
                s = binary_split(
                    targets.labels[i],
                    discovered.labels[j],
                    pool=pool_idx,
                    flip=flip,
                    target_name=tname,
                    discovered_name=dname,
                    meta=extra,
                )
            out.append(s)
    return out


__all__ = [
    "SPLIT_KINDS",
    "Split",
    "adversarial_splits",
    "binary_split",
    "class_partition",
    "default_pool",
    "feature_sign_tasks",
    "lower_half_per_class",
    "multiclass_split",
    "random_network_logits",
    "random_network_split",
    "random_split_like",
    "reference_random_split",
    "resolve_pool",
]
