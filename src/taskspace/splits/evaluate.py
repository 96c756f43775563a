"""Train a learner on many splits at once and score it on each split's test side.

Every (split, setting) pair is one model: labels are the split's target (setting ``2-way``)
or the original classes (setting ``C-way``, e.g. ``10-way``), the mask is the split's train
side, and all models go through one :func:`taskspace.engine.fit_many` call. Init and data
order seeds depend only on ``(seed, split id, setting)``, so results do not depend on how
splits are grouped into chunks.

:func:`headline_table` is the paper's table (setting x random/adversarial: mean and std of
test accuracy over targets x discovered tasks); :func:`format_headline` prints it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, overload

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.engine import Recipe, fit_many, get_recipe, predict_many
from taskspace.errors import TaskspaceError
from taskspace.seeding import Stream, derive_seed
from taskspace.splits.builders import (
    Split,
    adversarial_splits,
    random_split_like,
    reference_random_split,
)
from taskspace.tasks import TaskSet

#: Columns of one result row (one split, one setting).
RESULT_COLUMNS = [
    "split",
    "kind",
    "type",
    "setting",
    "target",
    "discovered",
    "orientation",
    "n_train",
    "n_test",
    "train_acc",
    "test_acc",
    "split_id",
]

#: Columns of one headline row.
HEADLINE_COLUMNS = ["setting", "type", "mean", "std", "min", "max", "count"]


def split_type(split: Split) -> str:
    """``random`` for baselines, ``adversarial`` for every other kind."""
    return "random" if split.kind == "random" else "adversarial"


def class_setting(num_classes: int) -> str:
    """Name of the original-classes setting, e.g. ``10-way``."""
    return f"{int(num_classes)}-way"


def auto_settings(split: Split, num_classes: int) -> list[str]:
    """Settings a split is evaluated in by default.

    ``binary`` splits: ``2-way``, plus the class setting when the target is a class
    partition (then the split is also the reference's multi-class split).
    ``imported`` splits: ``2-way`` when they carry target labels (the reference's
    ``cifar_splits.torch`` serves both its 2-way and 10-way rows), and the class setting.
    ``multiclass`` and ``random_network`` splits: the class setting. Random baselines
    follow the kind they stand in for (``meta["setting_kind"]``).
    """
    kind = split.meta.get("setting_kind", split.kind) if split.kind == "random" else split.kind
    cls = class_setting(num_classes)
    if kind == "binary":
        has_partition = "positive_classes" in split.meta
        return ["2-way", cls] if has_partition else ["2-way"]
    if kind == "imported" and split.target_labels is not None:
        return ["2-way", cls]
    return [cls]


def resolve_settings(
    splits: Sequence[Split], settings: str | Sequence[str], num_classes: int
) -> list[tuple[int, str]]:
    """``(split position, setting)`` work items for ``settings`` (``auto``, or a list of
    ``2-way`` / ``classes`` / ``<C>-way``)."""
    cls = class_setting(num_classes)
    if isinstance(settings, str):
        settings = [s.strip() for s in settings.split(",") if s.strip()]
    items: list[tuple[int, str]] = []
    for i, s in enumerate(splits):
        if list(settings) == ["auto"]:
            wanted = auto_settings(s, num_classes)
        else:
            wanted = []
            for name in settings:
                name = cls if name in ("classes", "multiclass", cls) else name
                if name not in ("2-way", cls):
                    raise TaskspaceError(f"unknown setting {name!r}; use auto, 2-way or {cls}")
                if name == "2-way" and s.target_labels is None:
                    continue  # no binary target on this split
                wanted.append(name)
        items.extend((i, w) for w in wanted)
    return items


def _labels_for(split: Split, setting: str, dataset: ImageDataset) -> torch.Tensor:
    if setting == "2-way":
        if split.target_labels is None:
            raise TaskspaceError(f"split {split.name!r} has no target labels for a 2-way learner")
        return split.target_labels
    return dataset.classes


Rows = list[dict[str, Any]]
"""Result rows, one dict per row (columns named by the function that makes them)."""
Predictions = dict[tuple[str, str], torch.Tensor]
"""``{(split name, setting): int64 [N]}`` predicted labels."""


@overload
def evaluate_splits(
    dataset: ImageDataset,
    splits: Sequence[Split],
    *,
    settings: str | Sequence[str] = ...,
    model: str = ...,
    recipe: str | Recipe = ...,
    seed: int = ...,
    split_ids: Sequence[int] | None = ...,
    device: str = ...,
    chunk_size: int | None = ...,
    batched: bool | None = ...,
    model_kwargs: dict | None = ...,
    progress: bool = ...,
    return_predictions: Literal[False] = ...,
) -> Rows: ...
@overload
def evaluate_splits(
    dataset: ImageDataset,
    splits: Sequence[Split],
    *,
    settings: str | Sequence[str] = ...,
    model: str = ...,
    recipe: str | Recipe = ...,
    seed: int = ...,
    split_ids: Sequence[int] | None = ...,
    device: str = ...,
    chunk_size: int | None = ...,
    batched: bool | None = ...,
    model_kwargs: dict | None = ...,
    progress: bool = ...,
    return_predictions: Literal[True],
) -> tuple[Rows, Predictions]: ...
@overload
def evaluate_splits(
    dataset: ImageDataset,
    splits: Sequence[Split],
    *,
    settings: str | Sequence[str] = ...,
    model: str = ...,
    recipe: str | Recipe = ...,
    seed: int = ...,
    split_ids: Sequence[int] | None = ...,
    device: str = ...,
    chunk_size: int | None = ...,
    batched: bool | None = ...,
    model_kwargs: dict | None = ...,
    progress: bool = ...,
    return_predictions: bool = ...,
) -> Rows | tuple[Rows, Predictions]: ...
def evaluate_splits(
    dataset: ImageDataset,
    splits: Sequence[Split],
    *,
    settings: str | Sequence[str] = "auto",
    model: str = "mlp",
    recipe: str | Recipe = "fast",
    seed: int = 0,
    split_ids: Sequence[int] | None = None,
    device: str = "cpu",
    chunk_size: int | None = None,
    batched: bool | None = None,
    model_kwargs: dict | None = None,
    progress: bool = False,
    return_predictions: bool = False,
) -> Rows | tuple[Rows, Predictions]:
    """Train one learner per (split, setting) on the split's train side, all at once.

    Args:
        splits: the splits (adversarial and random baselines alike).
        settings: ``auto`` (see :func:`auto_settings`) or a list of ``2-way`` / ``classes``.
        model_kwargs: overrides for the learner (e.g. ``{"widths": [256, 64]}``).
        split_ids: a stable id per split for seeding (default: positions); a resumed or
            chunked run passes global ids so its models are the same as in one big run.
        return_predictions: also return ``{(split name, setting): int64 [N]}`` predicted
            labels on both sides of the split (``-1`` elsewhere), for pictures.

    Returns:
        one row per (split, setting) with :data:`RESULT_COLUMNS`.
    """
    recipe = get_recipe(recipe)
    n = len(dataset)
    for s in splits:
        s.validate(n)
    ids = list(range(len(splits))) if split_ids is None else [int(i) for i in split_ids]
    if len(ids) != len(splits):
        raise TaskspaceError(f"{len(ids)} split ids for {len(splits)} splits")
    items = resolve_settings(splits, settings, dataset.num_classes)
    if not items:
        return ([], {}) if return_predictions else []
    labels, masks, seeds, orders = [], [], [], []
    for i, setting in items:
        s = splits[i]
        if len(s.train_idx) == 0:
            raise TaskspaceError(f"split {s.name!r} has an empty train side")
        labels.append(_labels_for(s, setting, dataset))
        masks.append(s.mask(n, "train"))
        code = 2 if setting == "2-way" else 1
        seeds.append(derive_seed(seed, ids[i], code))
        orders.append(derive_seed(seed, ids[i], code, Stream.SPLIT_ORDER))
    label_mat = torch.stack(labels).long()
    mask_mat = torch.stack(masks)
    num_outputs = max(dataset.num_classes, int(label_mat.max()) + 1)
    # 2-way models get 2 outputs and class models C outputs: train the two groups apart
    rows: list[dict[str, Any]] = [{} for _ in items]
    preds: dict[tuple[str, str], torch.Tensor] = {}
    union = mask_mat.any(0).nonzero().flatten()
    for group_setting in sorted({st for _, st in items}):
        pos = [k for k, (_, st) in enumerate(items) if st == group_setting]
        outputs = 2 if group_setting == "2-way" else num_outputs
        ens = fit_many(
            model,
            dataset,
            label_mat[pos],
            recipe,
            [seeds[k] for k in pos],
            order_seeds=[orders[k] for k in pos],
            train_idx=union,
            masks=mask_mat[pos],
            num_outputs=outputs,
            device=device,
            chunk_size=chunk_size,
            batched=batched,
            model_kwargs=model_kwargs,
            progress=progress,
        )
        both = torch.zeros(n, dtype=torch.bool)
        for k in pos:
            s = splits[items[k][0]]
            both[s.train_idx] = True
            both[s.test_idx] = True
        eval_idx = both.nonzero().flatten()
        logits = predict_many(ens, dataset, eval_idx, device=device)
        where = torch.full((n,), -1, dtype=torch.long)
        where[eval_idx] = torch.arange(len(eval_idx))
        for r, k in enumerate(pos):
            i, setting = items[k]
            s = splits[i]
            pred = logits[r].argmax(-1)
            y = label_mat[k]
            acc = {
                side: _acc(pred, y, where, idx)
                for side, idx in (("train", s.train_idx), ("test", s.test_idx))
            }
            rows[k] = {
                "split": s.name,
                "kind": s.kind,
                "type": split_type(s),
                "setting": setting,
                "target": s.meta.get("target", ""),
                "discovered": s.meta.get("discovered", ""),
                "orientation": s.meta.get("orientation", ""),
                "n_train": len(s.train_idx),
                "n_test": len(s.test_idx),
                "train_acc": acc["train"],
                "test_acc": acc["test"],
                "split_id": ids[i],
            }
            if return_predictions:
                full = torch.full((n,), -1, dtype=torch.long)
                full[eval_idx] = pred
                preds[(s.name, setting)] = full
    return (rows, preds) if return_predictions else rows


def _acc(pred: torch.Tensor, y: torch.Tensor, where: torch.Tensor, idx: torch.Tensor) -> float:
    if len(idx) == 0:
        return float("nan")
    return float((pred[where[idx]] == y[idx]).float().mean())


def summarize_headline(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean / std (sample, ``ddof=1``) / min / max / count of test accuracy per
    (setting, type), settings in order ``2-way`` first, ``random`` before ``adversarial``."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((str(r["setting"]), str(r["type"])), []).append(float(r["test_acc"]))
    out = []

    def order(key: tuple[str, str]) -> tuple[int, str, int]:
        setting, typ = key
        return (0 if setting == "2-way" else 1, setting, 0 if typ == "random" else 1)

    for key in sorted(groups, key=order):
        vals = [v for v in groups[key] if not math.isnan(v)]
        mean = sum(vals) / len(vals) if vals else float("nan")
        std = (
            math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
            if len(vals) > 1
            else 0.0
        )
        out.append(
            {
                "setting": key[0],
                "type": key[1],
                "mean": mean,
                "std": std,
                "min": min(vals) if vals else float("nan"),
                "max": max(vals) if vals else float("nan"),
                "count": len(vals),
            }
        )
    return out


def format_headline(rows: Sequence[dict[str, Any]]) -> str:
    """The headline table as text: one line per setting, random and adversarial columns.

    Accepts summary rows (from :func:`headline_table` / :func:`summarize_headline`) or
    per-split result rows (summarised first).
    """
    if rows and "test_acc" in rows[0]:
        rows = summarize_headline(rows)
    by: dict[str, dict[str, dict]] = {}
    for r in rows:
        by.setdefault(str(r["setting"]), {})[str(r["type"])] = r
    lines = [f"{'setting':<10} {'random':>16} {'adversarial':>16} {'adv. min':>9} {'splits':>7}"]

    def cell(r: dict | None) -> str:
        if r is None:
            return f"{'-':>16}"
        return f"{float(r['mean']):>8.3f} ± {float(r['std']):<5.3f}"

    for setting, d in by.items():
        count = int(d.get("adversarial", d.get("random", {})).get("count", 0))
        adv_min = f"{float(d['adversarial']['min']):.3f}" if "adversarial" in d else "-"
        lines.append(
            f"{setting:<10} {cell(d.get('random')):>16} "
            f"{cell(d.get('adversarial')):>16} {adv_min:>9} {count:>7}"
        )
    return "\n".join(lines)


#: ``random_baseline=`` values: ours (size-matched, the default) and the reference's.
RANDOM_BASELINES = ("matched", "reference")


def check_random_baseline(baseline: str) -> None:
    """Refuse a ``random_baseline`` that is not one of :data:`RANDOM_BASELINES`."""
    if baseline not in RANDOM_BASELINES:
        raise TaskspaceError(
            f"random_baseline must be one of {', '.join(RANDOM_BASELINES)}, got {baseline!r}"
        )


def with_random_baselines(
    splits: Sequence[Split], seed: int = 0, baseline: str = "matched"
) -> list[Split]:
    """``splits`` followed by one random baseline split per split.

    ``matched`` (default): a random split with the same train/test sizes as each split
    (:func:`random_split_like`, seed derived from ``seed`` and the split's position), so the
    random-vs-adversarial gap is not confounded by train-set size (adversarial train sides
    are rarely half the pool), and runs made before this option keep their baselines.
    ``reference``: the reference's baseline, one half/half split of the pool drawn with
    ``seed`` (0 by default, as the reference), the same for every split
    (:func:`reference_random_split`); use it to reproduce the paper's random column.
    """
    check_random_baseline(baseline)
    if baseline == "reference":
        base = [reference_random_split(s, seed=seed) for s in splits]
    else:
        base = [
            random_split_like(s, seed=derive_seed(seed, i, Stream.RANDOM_SPLIT))
            for i, s in enumerate(splits)
        ]
    return [*splits, *base]


@overload
def headline_table(
    dataset: ImageDataset,
    targets: TaskSet,
    discovered: TaskSet,
    model: str = ...,
    recipe: str | Recipe = ...,
    seed: int = ...,
    *,
    kind: str = ...,
    settings: str | Sequence[str] = ...,
    pool: str | torch.Tensor | None = ...,
    flip: bool = ...,
    random_baseline: str = ...,
    device: str = ...,
    chunk_size: int | None = ...,
    model_kwargs: dict | None = ...,
    progress: bool = ...,
    return_rows: Literal[False] = ...,
) -> Rows: ...
@overload
def headline_table(
    dataset: ImageDataset,
    targets: TaskSet,
    discovered: TaskSet,
    model: str = ...,
    recipe: str | Recipe = ...,
    seed: int = ...,
    *,
    kind: str = ...,
    settings: str | Sequence[str] = ...,
    pool: str | torch.Tensor | None = ...,
    flip: bool = ...,
    random_baseline: str = ...,
    device: str = ...,
    chunk_size: int | None = ...,
    model_kwargs: dict | None = ...,
    progress: bool = ...,
    return_rows: Literal[True],
) -> tuple[Rows, Rows]: ...
@overload
def headline_table(
    dataset: ImageDataset,
    targets: TaskSet,
    discovered: TaskSet,
    model: str = ...,
    recipe: str | Recipe = ...,
    seed: int = ...,
    *,
    kind: str = ...,
    settings: str | Sequence[str] = ...,
    pool: str | torch.Tensor | None = ...,
    flip: bool = ...,
    random_baseline: str = ...,
    device: str = ...,
    chunk_size: int | None = ...,
    model_kwargs: dict | None = ...,
    progress: bool = ...,
    return_rows: bool = ...,
) -> Rows | tuple[Rows, Rows]: ...
def headline_table(
    dataset: ImageDataset,
    targets: TaskSet,
    discovered: TaskSet,
    model: str = "mlp",
    recipe: str | Recipe = "fast",
    seed: int = 0,
    *,
    kind: str = "binary",
    settings: str | Sequence[str] = "auto",
    pool: str | torch.Tensor | None = None,
    flip: bool = False,
    random_baseline: str = "matched",
    device: str = "cpu",
    chunk_size: int | None = None,
    model_kwargs: dict | None = None,
    progress: bool = False,
    return_rows: bool = False,
) -> Rows | tuple[Rows, Rows]:
    """The paper's headline table for (targets x discovered tasks), in one call.

    Builds the adversarial splits (:func:`adversarial_splits`), one random baseline per
    adversarial split (``random_baseline``, see :func:`with_random_baselines`), trains a
    learner on every split and setting at once, and returns :func:`summarize_headline` rows
    (setting, type, mean, std, min, max, count); with ``return_rows`` also the per-split
    rows.
    """
    adv = adversarial_splits(dataset, targets, discovered, kind=kind, pool=pool, flip=flip)
    splits = with_random_baselines(adv, seed, random_baseline)
    rows = evaluate_splits(
        dataset,
        splits,
        settings=settings,
        model=model,
        recipe=recipe,
        seed=seed,
        device=device,
        chunk_size=chunk_size,
        model_kwargs=model_kwargs,
        progress=progress,
    )
    summary = summarize_headline(rows)
    return (summary, rows) if return_rows else summary


__all__ = [
    "HEADLINE_COLUMNS",
    "RANDOM_BASELINES",
    "RESULT_COLUMNS",
    "auto_settings",
    "check_random_baseline",
    "class_setting",
    "evaluate_splits",
    "format_headline",
    "headline_table",
    "resolve_settings",
    "split_type",
    "summarize_headline",
    "with_random_baselines",
]
