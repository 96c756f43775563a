"""The agreement score (AS): does a learner generalise on a labelling?

For each task, ``pairs`` pairs of models are trained on the task's labels; the two models of
a pair differ only in their initialisation (by default they read the same batches, as in the
reference; ``shared_order=False`` gives each its own data order). AS is the fraction of
evaluation images on which the pair's hard predictions agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.engine import Recipe, fit_many, get_recipe, predict_many
from taskspace.errors import TaskspaceError
from taskspace.seeding import Stream, derive_seed
from taskspace.tasks import TaskSet, validate_tasks

#: Columns of one agreement row (one task, one pair, one evaluation split).
ROW_COLUMNS = ["task", "kind", "task_index", "pair", "split", "agreement", "acc_a", "acc_b"]


def pair_seeds(
    task_ids: Sequence[int], pairs: int, seed: int, shared_order: bool
) -> tuple[list[int], list[int]]:
    """Init and order seeds for models ordered (task, pair, member a/b).

    Init seeds depend on (seed, task, pair, member), so results do not depend on how tasks
    are chunked. With ``shared_order`` both members of pair p of every task read the same
    batches; otherwise every model has its own order.
    """
    inits, orders = [], []
    for t in task_ids:
        for p in range(pairs):
            for member in (0, 1):
                s = derive_seed(seed, t, p, member)
                inits.append(s)
                orders.append(derive_seed(seed, Stream.PAIR_ORDER, p) if shared_order else s + 1)
    return inits, orders


def agreement_score(
    dataset: ImageDataset,
    tasks: TaskSet,
    *,
    model: str = "mlp",
    recipe: Recipe | str = "fast",
    pairs: int = 1,
    seed: int = 0,
    shared_order: bool = True,
    eval_splits: Sequence[str] = ("heldout", "test"),
    eval_idx: dict[str, torch.Tensor] | None = None,
    train_idx: torch.Tensor | None = None,
    task_ids: Sequence[int] | None = None,
    device: str = "cpu",
    chunk_size: int | None = None,
    batched: bool | None = None,
    model_kwargs: dict | None = None,
    progress: bool = False,
) -> list[dict]:
    """AS of every task in ``tasks``: one row per (task, pair, evaluation split).

    Args:
        dataset: images with ``train`` and the evaluation splits.
        tasks: the labellings; every task is validated (length, two classes in train).
        model, recipe: the learner.
        pairs: seeded pairs per task (report mean and std over them).
        shared_order: both models of a pair read the same batches (reference protocol).
        eval_splits: split names to evaluate on (those the dataset lacks are skipped, and
            so is a split a task has no labels on, :meth:`TaskSet.unlabelled_splits`: the
            reference's CIFAR task files label the training images only).
        eval_idx: explicit evaluation index sets instead of ``eval_splits`` (proxy AS).
        task_ids: global task indices used for seeding (default ``0..K-1``), so a chunk of
            a larger task set gets the same models as in a whole run.

    Returns:
        rows with keys :data:`ROW_COLUMNS`.
    """
    if pairs < 1:
        raise TaskspaceError(f"pairs must be >= 1, got {pairs}")
    recipe = get_recipe(recipe)
    train_idx = dataset.split("train") if train_idx is None else train_idx
    validate_tasks(tasks, dataset)
    task_ids = list(range(len(tasks))) if task_ids is None else list(task_ids)
    if eval_idx is None:
        eval_idx = {s: dataset.splits[s] for s in eval_splits if s in dataset.splits}
    if not eval_idx:
        raise TaskspaceError(
            f"no evaluation split among {list(eval_splits)} in dataset {dataset.name!r}"
        )
    unlabelled = [set(tasks.unlabelled_splits(k)) for k in range(len(tasks))]
    rows: list[dict] = []
    # tasks with different numbers of classes need different heads: one fit per group
    n_classes = [max(2, tasks.num_classes(k)) for k in range(len(tasks))]
    for c in sorted(set(n_classes)):
        ks = [k for k in range(len(tasks)) if n_classes[k] == c]
        inits, orders = pair_seeds([task_ids[k] for k in ks], pairs, seed, shared_order)
        labels = tasks.labels[ks].repeat_interleave(2 * pairs, dim=0)
        ens = fit_many(
            model,
            dataset,
            labels,
            recipe,
            inits,
            order_seeds=orders,
            train_idx=train_idx,
            num_outputs=c,
            device=device,
            chunk_size=chunk_size,
            batched=batched,
            model_kwargs=model_kwargs,
            progress=progress,
        )
        for split, idx in eval_idx.items():
            pred = predict_many(ens, dataset, idx, device=device).argmax(-1)
            pred = pred.view(len(ks), pairs, 2, len(idx))
            for j, k in enumerate(ks):
                if split in unlabelled[k]:
                    continue  # no labels there: no AS row against made-up labels
                truth = tasks.labels[k, idx]
                for p in range(pairs):
                    a, b = pred[j, p, 0], pred[j, p, 1]
                    rows.append(
                        {
                            "task": tasks.names[k],
                            "kind": tasks.kinds[k],
                            "task_index": task_ids[k],
                            "pair": p,
                            "split": split,
                            "agreement": float((a == b).float().mean()),
                            "acc_a": float((a == truth).float().mean()),
                            "acc_b": float((b == truth).float().mean()),
                        }
                    )
    rows.sort(key=lambda r: (r["task_index"], r["pair"], r["split"]))
    return rows


def proxy_agreement_score(
    dataset: ImageDataset,
    tasks: TaskSet,
    *,
    model: str = "mlp",
    steps: int = 100,
    lr: float = 0.01,
    batch_size: int = 512,
    seed: int = 0,
    pairs: int = 1,
    device: str = "cpu",
    **kwargs: object,
) -> list[dict]:
    """Proxy AS for screening (reference ``as-proxy-params``): ``steps`` plain-SGD steps,
    agreement on one held-out batch of ``batch_size`` images.

    ``lr`` is the reference's: one SGD over both networks on ``0.5 (L_A + L_B)``, so each
    network steps at ``lr / 2`` on its own loss. The batch is the first ``batch_size``
    held-out images in the split's seeded order (:meth:`ImageDataset.first`), class-mixed as
    the reference's ``random_split`` subset is.
    """
    recipe = get_recipe("proxy", steps=steps, lr=0.5 * lr, batch_size=batch_size)
    held = dataset.first("heldout", batch_size)
    return agreement_score(
        dataset,
        tasks,
        model=model,
        recipe=recipe,
        seed=seed,
        pairs=pairs,
        device=device,
        eval_idx={"proxy": held},
        **kwargs,  # type: ignore[arg-type]
    )


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Per (kind, split): mean and std over tasks of the per-task mean AS, and the count."""
    per_task: dict[tuple[str, str, int], list[float]] = {}
    for r in rows:
        per_task.setdefault((r["kind"], r["split"], int(r["task_index"])), []).append(
            float(r["agreement"])
        )
    groups: dict[tuple[str, str], list[float]] = {}
    for (kind, split, _), vals in per_task.items():
        groups.setdefault((kind, split), []).append(sum(vals) / len(vals))
    out = []
    for (kind, split), vals in sorted(groups.items()):
        t = torch.tensor(vals, dtype=torch.float64)
        out.append(
            {
                "kind": kind,
                "split": split,
                "mean": float(t.mean()),
                "std": float(t.std()) if len(vals) > 1 else 0.0,
                "count": len(vals),
            }
        )
    return out
