"""Expert selection with task embeddings (reference section 4; not in the original code).

Given a new task (the *query*) and a set of pretrained feature extractors (*experts*), each
represented by the embedding of the task it was trained on (same probe), rank the experts
by distance to the query and pick the nearest, instead of training a linear probe on every
expert's features (the brute-force ground truth, :func:`brute_force_errors`).

* :func:`trivial_embedding` -- ``t0``, the embedding of a trivial task: ``hessian := scale``
  (the posterior equals the prior). Only variational embeddings have a prior; for
  Monte-Carlo ones (scale = 1) it is refused. The original's helper
  (``get_trivial_embedding_from``) expected an old dict format and failed (issue #1).
* :func:`asymmetric_distance` -- ``d_asym(a -> b) = d_sym(a, b) - alpha * d_sym(a, t0(a))``
  with ``d_sym`` the symmetric ``cosine`` and ``a`` the source (the expert's task), ``b``
  the target (the query). The term ``d_sym(a, t0)`` measures how far the source is from a
  trivial task (its complexity), so subtracting it favours experts trained on richer
  tasks. **The form and alpha = 0.15 are unverified** (from the paper's text, not code).
* :func:`rank_experts` -- experts in ascending distance, ties broken by name.
* :func:`regret_table` -- per query: selected expert and its error, best expert and its
  error, regret = selected - best, and the expected regret of a uniformly random choice
  (mean over experts of error - best); optionally the regret of always using one fixed
  expert (the paper's "always ImageNet" baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from taskspace.embed.distances import _rank_key
from taskspace.embed.distances import distance as _distance
from taskspace.embed.embedding import Embedding, check_comparable
from taskspace.errors import TaskspaceError

__all__ = [
    "DEFAULT_ALPHA",
    "EXPERT_DISTANCES",
    "asymmetric_distance",
    "brute_force_errors",
    "rank_experts",
    "regret_table",
    "trivial_embedding",
]

#: The paper's alpha for the asymmetric distance (unverified).
DEFAULT_ALPHA = 0.15
EXPERT_DISTANCES = ("cosine", "asymmetric")

Features = Callable[[torch.Tensor], torch.Tensor] | nn.Module


def trivial_embedding(e: Embedding) -> Embedding:
    """The trivial embedding ``t0`` of ``e``: ``hessian := scale`` (posterior = prior).

    Only for variational embeddings (``meta["method"] == "variational"``): a Monte-Carlo
    embedding has scale 1 (no prior), so its "trivial embedding" would be an arbitrary
    constant vector; that raises :class:`TaskspaceError`.
    """
    method = e.meta.get("method")
    if method != "variational":
        raise TaskspaceError(
            f"the trivial embedding needs a variational embedding (hessian := prior precision); "
            f"task {e.task!r} was embedded with method {method!r}, whose scale is 1, not a prior"
        )
    meta = dict(e.meta)
    meta["trivial"] = True
    return Embedding(hessian=e.scale.copy(), scale=e.scale.copy(), meta=meta)


def asymmetric_distance(a: Embedding, b: Embedding, alpha: float = DEFAULT_ALPHA) -> float:
    """``d_sym(a, b) - alpha * d_sym(a, t0(a))`` with ``d_sym`` = ``cosine``; ``a`` is the
    source (expert) task, ``b`` the target. Form and default alpha unverified (see the
    module docstring). Needs variational embeddings (for ``t0``), whatever ``alpha``."""
    t0 = trivial_embedding(a)
    return _distance(a, b, "cosine") - alpha * _distance(a, t0, "cosine")


def rank_experts(
    query: Embedding,
    experts: Mapping[str, Embedding],
    distance: str = "cosine",
    alpha: float = DEFAULT_ALPHA,
) -> list[tuple[str, float]]:
    """Experts as ``(name, distance)`` in ascending distance from the query (ties by name,
    NaN last). ``distance``: ``"cosine"`` (d_sym) or ``"asymmetric"`` (expert -> query,
    :func:`asymmetric_distance` with ``alpha``)."""
    if distance not in EXPERT_DISTANCES:
        raise TaskspaceError(
            f"unknown expert distance {distance!r}; choose one of {', '.join(EXPERT_DISTANCES)}"
        )
    if not experts:
        raise TaskspaceError("no experts to rank")
    scored: list[tuple[str, float]] = []
    for name, e in experts.items():
        check_comparable(query, e)
        d = _cosine(query, e) if distance == "cosine" else asymmetric_distance(e, query, alpha)
        scored.append((str(name), d))
    scored.sort(key=lambda nd: _rank_key(nd[1], nd[0]))
    return scored


def _cosine(a: Embedding, b: Embedding) -> float:
    return _distance(a, b, "cosine")


def _features(fn: Features, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """``fn`` applied to ``x`` in batches, no grad, modules in eval mode (mode restored)."""
    was_training = fn.training if isinstance(fn, nn.Module) else None
    if isinstance(fn, nn.Module):
        fn.eval()
    try:
        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                f = fn(x[i : i + batch_size].to(device))
                out.append(f.reshape(f.shape[0], -1).float())
        return torch.cat(out) if out else torch.zeros(0, 0)
    finally:
        if isinstance(fn, nn.Module) and was_training is not None:
            fn.train(was_training)


def _fit_linear(
    f_train: torch.Tensor,
    y_train: torch.Tensor,
    num_classes: int,
    *,
    l2: float,
    max_iter: int,
    seed: int,
) -> nn.Linear:
    """Softmax regression, mean CE + ``l2/2 * ||W||^2``, by full-batch L-BFGS (strong Wolfe
    line search): a convex problem solved to convergence, so the error measures the
    features, not the optimiser."""
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(f_train.shape[1], num_classes).to(f_train.device)
    with torch.no_grad():
        bound = 1.0 / max(f_train.shape[1], 1) ** 0.5
        w0 = (torch.rand(head.weight.shape, generator=g) * 2 - 1) * bound
        head.weight.copy_(w0.to(f_train.device))
        head.bias.zero_()
    opt = torch.optim.LBFGS(
        head.parameters(),
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(f_train), y_train)
        loss = loss + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def brute_force_errors(
    features: Mapping[str, Features],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    l2: float = 1e-4,
    max_iter: int = 500,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """The ground truth of expert selection: for each expert, a linear probe (softmax
    regression) trained on that expert's frozen features of ``x_train`` and its test error
    (fraction misclassified) on ``x_test``.

    ``features[name]`` maps a batch of inputs to features (a callable or an ``nn.Module``,
    run in eval mode without gradients; flattened to ``[n, d]``). Features are computed
    once and cached, then standardised with the training mean and standard deviation. The
    probe is softmax regression with an L2 penalty ``l2/2 * ||W||^2`` on the weights,
    fitted by full-batch L-BFGS (at most ``max_iter`` iterations) from an initialisation
    drawn from ``seed`` (the same for every expert): a convex problem solved to
    convergence, deterministic on CPU.
    """
    if not features:
        raise TaskspaceError("no experts given")
    y_train = torch.as_tensor(y_train, dtype=torch.int64)
    y_test = torch.as_tensor(y_test, dtype=torch.int64)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise TaskspaceError("inputs and labels differ in length")
    if len(y_train) == 0 or len(y_test) == 0:
        raise TaskspaceError("brute-force probing needs training and test examples")
    if int(torch.unique(y_train).numel()) < 2:
        raise TaskspaceError("the new task has a single class in its training examples")
    num_classes = int(max(int(y_train.max()), int(y_test.max()))) + 1
    dev = torch.device(device)
    errors: dict[str, float] = {}
    for name, fn in features.items():
        f_tr = _features(fn, x_train, 256, dev)
        f_te = _features(fn, x_test, 256, dev)
        mean, std = f_tr.mean(0), f_tr.std(0, correction=0).clamp_min(1e-6)
        f_tr, f_te = (f_tr - mean) / std, (f_te - mean) / std
        head = _fit_linear(f_tr, y_train.to(dev), num_classes, l2=l2, max_iter=max_iter, seed=seed)
        with torch.no_grad():
            pred = head(f_te).argmax(1).cpu()
        errors[str(name)] = float((pred != y_test).double().mean())
    return errors


def regret_table(
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    errors: Mapping[str, Mapping[str, float]],
    *,
    fixed: str | None = None,
) -> list[dict[str, Any]]:
    """One row per query task: ``task, selected, selected_error, best, best_error, regret,
    random_regret`` (and ``fixed, fixed_regret`` when a fixed expert is named).

    ``rankings[task]`` is :func:`rank_experts`'s output (the first entry is selected);
    ``errors[task][expert]`` the brute-force error of each expert on that task.
    ``regret = selected_error - best_error``; ``random_regret`` = the expected regret of a
    uniformly random expert = mean over experts of ``error - best_error``. The best expert
    is the one with the lowest error, ties by name.
    """
    rows: list[dict[str, Any]] = []
    for task, ranking in rankings.items():
        if task not in errors:
            raise TaskspaceError(f"no brute-force errors for task {task!r}")
        errs = {str(k): float(v) for k, v in errors[task].items()}
        if not ranking:
            raise TaskspaceError(f"empty ranking for task {task!r}")
        selected = str(ranking[0][0])
        for name in (selected, *([fixed] if fixed is not None else [])):
            if name not in errs:
                raise TaskspaceError(f"no brute-force error of expert {name!r} on task {task!r}")
        best = min(errs, key=lambda k: (errs[k], k))
        row: dict[str, Any] = {
            "task": task,
            "selected": selected,
            "selected_error": errs[selected],
            "best": best,
            "best_error": errs[best],
            "regret": errs[selected] - errs[best],
            "random_regret": float(np.mean([v - errs[best] for v in errs.values()])),
        }
        if fixed is not None:
            row["fixed"] = fixed
            row["fixed_regret"] = errs[fixed] - errs[best]
        rows.append(row)
    return rows
