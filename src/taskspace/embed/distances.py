"""Distances between Task2Vec embeddings, distance matrices and nearest-task queries.

The seven distances of the original ``task_similarity.py`` (reference section 3), on
:class:`~taskspace.embed.embedding.Embedding` objects with ``h = hessian``, ``s = scale``,
``v = 1/h`` and, per dimension, ``KL(v0 || v1) = (v0/v1 - 1 + ln v1 - ln v0) / 2``:

==================== ===========================================================
``cosine`` (default)  cos(h0/(h0+h1+1e-8), h1/(h0+h1+1e-8)): the paper's d_sym;
                      ignores the scale
``normalized_cosine`` cos(v0*s0, v1*s1)
``kl``                sum of max(KL(v0||v1), KL(v1||v0))
``asymmetric_kl``     sum of KL(v0||v1)
``jsd``               mean of (KL(v0||m) + KL(v1||m))/2, m = (v0+v1)/2
``correlation``       1 - Pearson(v0, v1)
``entropy``           ln 2 - mean H_b(h0/(h0+h1+1e-8))
==================== ===========================================================

where ``cos(u, w) = 1 - u.w / (|u| |w|)``. The ``1e-8`` inside the scaled hessian is the
original's absolute constant and is kept (it matters only when the hessians themselves
are of order 1e-8, e.g. the batch-mean Monte-Carlo estimator on a tiny probe).

**``var_eps`` switch.** A dimension whose Fisher is exactly zero (a dead filter, a filter
the task never uses) has infinite variance ``v = 1/0``; the original then returns ``inf``
or ``nan`` (numpy's ``inf - inf``) for every variance-based distance (``normalized_cosine``,
``kl``, ``asymmetric_kl``, ``jsd``, ``correlation``), while ``cosine`` and ``entropy`` stay
finite. ``var_eps=0`` is the faithful value and reproduces that exactly. The default,
``DEFAULT_VAR_EPS = 1e-6``, computes ``v = 1 / (h + var_eps * mean(h))`` with the mean over
the embedding's own dimensions: the regulariser is relative to the embedding's overall Fisher
magnitude (so it means the same thing for the Monte-Carlo estimator, whose values are tiny,
and the variational one, whose values are large), is a property of the embedding alone (the
same ``v`` whatever it is compared with), and changes non-zero dimensions by about one part
in a million of the mean while keeping every variance distance finite.

``pdist`` and ``cdist`` follow the original: ``pdist`` fills the upper triangle and mirrors
it (zero diagonal), except ``asymmetric_kl`` which fills every ordered pair
``D[i, j] = d(e_i, e_j)``; ``cdist`` leaves 0 where an entry is ``None``. Both refuse
embeddings that are not comparable (different probe, estimator or skip; see
:func:`~taskspace.embed.embedding.check_comparable`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.spatial.distance as sd
from scipy.special import xlogy

from taskspace.embed.embedding import Embedding, check_comparable
from taskspace.errors import TaskspaceError

__all__ = [
    "DEFAULT_DISTANCE",
    "DEFAULT_VAR_EPS",
    "DISTANCES",
    "cdist",
    "distance",
    "nearest",
    "pdist",
    "scaled_hessians",
    "variance",
]

#: Every distance name, in the order of the reference table.
DISTANCES = (
    "cosine",
    "normalized_cosine",
    "kl",
    "asymmetric_kl",
    "jsd",
    "correlation",
    "entropy",
)
DEFAULT_DISTANCE = "cosine"
#: Default ``var_eps`` (relative to the embedding's mean hessian); 0 is the faithful value.
DEFAULT_VAR_EPS = 1e-6
#: The original's absolute constant in the scaled hessian h0 / (h0 + h1 + 1e-8).
_HESS_EPS = 1e-8


def _hessian(e: Embedding) -> np.ndarray:
    return np.asarray(e.hessian, dtype=np.float64)


def variance(
    e: Embedding, var_eps: float = DEFAULT_VAR_EPS, normalized: bool = False
) -> np.ndarray:
    """``v = 1 / (h + var_eps * mean(h))`` (``1/h`` at ``var_eps=0``, inf where h = 0);
    ``normalized`` multiplies by the scale (the original's ``var / lambda2`` with
    ``lambda2 = 1/scale``)."""
    if var_eps < 0:
        raise TaskspaceError(f"var_eps must be >= 0, got {var_eps}")
    h = _hessian(e)
    if var_eps > 0:
        ref = float(np.mean(np.abs(h))) if h.size else 0.0
        h = h + var_eps * (ref if np.isfinite(ref) and ref > 0 else 1.0)
    with np.errstate(divide="ignore"):
        v = 1.0 / h
    if normalized:
        v = v * np.asarray(e.scale, dtype=np.float64)
    return v


def scaled_hessians(a: Embedding, b: Embedding) -> tuple[np.ndarray, np.ndarray]:
    """``h0 / (h0 + h1 + 1e-8)`` and ``h1 / (h0 + h1 + 1e-8)``, as the original."""
    h0, h1 = _hessian(a), _hessian(b)
    den = h0 + h1 + _HESS_EPS
    return h0 / den, h1 / den


def _kl(v0: np.ndarray, v1: np.ndarray) -> np.ndarray:
    """Per-dimension KL(N(0, v0) || N(0, v1))."""
    return 0.5 * (v0 / v1 - 1.0 + np.log(v1) - np.log(v0))


def _cosine(a: Embedding, b: Embedding, var_eps: float) -> float:
    h0, h1 = scaled_hessians(a, b)
    return float(sd.cosine(h0, h1))


def _normalized_cosine(a: Embedding, b: Embedding, var_eps: float) -> float:
    return float(sd.cosine(variance(a, var_eps, True), variance(b, var_eps, True)))


def _kl_max(a: Embedding, b: Embedding, var_eps: float) -> float:
    v0, v1 = variance(a, var_eps), variance(b, var_eps)
    return float(np.maximum(_kl(v0, v1), _kl(v1, v0)).sum())


def _asymmetric_kl(a: Embedding, b: Embedding, var_eps: float) -> float:
    return float(_kl(variance(a, var_eps), variance(b, var_eps)).sum())


def _jsd(a: Embedding, b: Embedding, var_eps: float) -> float:
    v0, v1 = variance(a, var_eps), variance(b, var_eps)
    m = 0.5 * (v0 + v1)
    return float((0.5 * (_kl(v0, m) + _kl(v1, m))).mean())


def _correlation(a: Embedding, b: Embedding, var_eps: float) -> float:
    return float(sd.correlation(variance(a, var_eps), variance(b, var_eps)))


def _entropy(a: Embedding, b: Embedding, var_eps: float) -> float:
    p, _ = scaled_hessians(a, b)
    h_b = -(xlogy(p, p) + xlogy(1.0 - p, 1.0 - p))
    return float(np.log(2.0) - h_b.mean())


_FUNCTIONS: dict[str, Callable[[Embedding, Embedding, float], float]] = {
    "cosine": _cosine,
    "normalized_cosine": _normalized_cosine,
    "kl": _kl_max,
    "asymmetric_kl": _asymmetric_kl,
    "jsd": _jsd,
    "correlation": _correlation,
    "entropy": _entropy,
}


def _function(name: str) -> Callable[[Embedding, Embedding, float], float]:
    fn = _FUNCTIONS.get(name)
    if fn is None:
        raise TaskspaceError(f"unknown distance {name!r}; choose one of {', '.join(DISTANCES)}")
    return fn


def _compute(
    fn: Callable[[Embedding, Embedding, float], float], a: Embedding, b: Embedding, var_eps: float
) -> float:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return fn(a, b, var_eps)


def distance(
    a: Embedding, b: Embedding, name: str = DEFAULT_DISTANCE, *, var_eps: float = DEFAULT_VAR_EPS
) -> float:
    """The distance ``name`` (one of :data:`DISTANCES`) from ``a`` to ``b``.

    Raises :class:`TaskspaceError` for an unknown name or embeddings that are not
    comparable. ``var_eps``: see the module docstring (0 = faithful).
    """
    fn = _function(name)
    check_comparable(a, b)
    return _compute(fn, a, b, var_eps)


def pdist(
    embeddings: Sequence[Embedding],
    name: str = DEFAULT_DISTANCE,
    *,
    var_eps: float = DEFAULT_VAR_EPS,
) -> np.ndarray:
    """``[n, n]`` float64 matrix of ``distance(e_i, e_j, name)``: upper triangle computed
    and mirrored with a zero diagonal, except ``asymmetric_kl`` (every ordered pair, the
    diagonal included), as the original."""
    fn = _function(name)
    embs = list(embeddings)
    for e in embs[1:]:
        check_comparable(embs[0], e)
    n = len(embs)
    out = np.zeros((n, n), dtype=np.float64)
    if name == "asymmetric_kl":
        for i in range(n):
            for j in range(n):
                out[i, j] = _compute(fn, embs[i], embs[j], var_eps)
        return out
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = _compute(fn, embs[i], embs[j], var_eps)
    return out


def cdist(
    from_: Sequence[Embedding | None],
    to: Sequence[Embedding | None],
    name: str = DEFAULT_DISTANCE,
    *,
    var_eps: float = DEFAULT_VAR_EPS,
) -> np.ndarray:
    """``[len(from_), len(to)]`` float64 matrix of ``distance(from_[i], to[j], name)``;
    0 where either entry is ``None`` (as the original)."""
    fn = _function(name)
    src, dst = list(from_), list(to)
    present = [e for e in (*src, *dst) if e is not None]
    for e in present[1:]:
        check_comparable(present[0], e)
    out = np.zeros((len(src), len(dst)), dtype=np.float64)
    for i, a in enumerate(src):
        for j, b in enumerate(dst):
            if a is not None and b is not None:
                out[i, j] = _compute(fn, a, b, var_eps)
    return out


def _rank_key(d: float, name: str) -> tuple[bool, float, str]:
    """Ascending distance, NaN last, ties by name."""
    nan = bool(np.isnan(d))
    return (nan, 0.0 if nan else float(d), name)


def nearest(D: np.ndarray, names: Sequence[str], k: int = 5) -> list[dict[str, Any]]:
    """For each task (row of ``D``), its ``k`` nearest other tasks, as CSV rows
    ``{task, rank, neighbour, distance}`` (rank 1 = nearest). The task itself is excluded;
    ties are broken by name; NaN distances rank last; ``k`` is capped at ``n - 1`` (so one
    task, or ``k=0``, gives no rows)."""
    D = np.asarray(D, dtype=np.float64)
    names = list(names)
    n = len(names)
    if D.shape != (n, n):
        raise TaskspaceError(
            f"distance matrix has shape {D.shape}, expected ({n}, {n}) for {n} names"
        )
    if k < 0:
        raise TaskspaceError(f"k must be >= 0, got {k}")
    rows: list[dict[str, Any]] = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        others.sort(key=lambda j: _rank_key(D[i, j], names[j]))
        for rank, j in enumerate(others[:k], start=1):
            rows.append(
                {"task": names[i], "rank": rank, "neighbour": names[j], "distance": float(D[i, j])}
            )
    return rows
