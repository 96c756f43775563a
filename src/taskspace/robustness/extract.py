"""Structure in the delta matrix: co-clustering, SVD + KMeans and task pairing.

Every function takes a :class:`~taskspace.robustness.spurious.DeltaMatrix` (named axes;
NaN cells count as 0) and is deterministic given its ``seed`` (the original seeded
neither the co-clustering nor KMeans, and KMeans' ``n_init`` default changed between
scikit-learn releases, so both are explicit here).

- :func:`cocluster`: ``sklearn.cluster.SpectralCoclustering(n_clusters, svd_method=
  "arpack", n_init, random_state=seed)`` on one of four inputs (``matrix=``): the binary
  ``clip(T >= epsilon, 1e-7)``; ``T`` normalised per **row** (the original's
  ``column_normalize`` acts on rows; ``normalize="softmax"`` as in the README era or
  ``"zscore"`` as at the latest commit, zero-norm / zero-std rows protected by 1e-7);
  or the cosine matrices ``T.A`` (``cos(T[i, :], T[:, j])``) and ``T.T``
  (``cos(T[i, :], T[j, :])``). Rows and columns come back with labels, clusters and the
  orders that sort them by label (the reordered heatmaps).
- :func:`svd_kmeans`: L2-normalise the rows (rows of norm below 1e-7 become 1e-7), ``u,
  s = svd``, ``g = s^2 / sum s^2``, keep ``d`` = the **smallest** count with ``cumsum(g)
  >= gamma`` (:func:`svd_dimension`; the original's ``argmax(cumsum(g) > gamma)`` kept
  one too few, none when ``s1`` alone passed ``gamma``) columns of ``u`` and run
  ``KMeans(k, tol=1e-6, n_init, random_state=seed)`` on them.
- :func:`association`: the symmetric attribute association ``(T + T^T) / 100 + I`` of a
  square matrix (an attribute is fully associated with itself): rows of a planted pair
  then point the same way, so :func:`svd_kmeans` of it puts the pair in one cluster (the
  rows of ``T`` itself group *tasks that share a shortcut*, as ``Male`` on CelebA).
- :func:`task_pairings`: mml-robustness's ``task_pairing_identification.py``: binarise at
  ``T >= 30``, "poor" tasks below the 33rd percentile of plain average accuracy, seeded
  ``disjoint`` / ``nondisjoint`` / ``dpoor`` / ``ndpoor`` pairings, optionally within
  clusters.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from taskspace.errors import TaskspaceError
from taskspace.robustness.spurious import DeltaMatrix

__all__ = [
    "GAMMA",
    "PAIRING_EPSILON",
    "CoClusters",
    "SvdClusters",
    "association",
    "cocluster",
    "cocluster_input",
    "normalize_rows",
    "svd_dimension",
    "svd_kmeans",
    "task_pairings",
]

#: Share of the squared singular values the SVD keeps (reference default).
GAMMA = 0.9
#: The threshold of task pairing (reference: ``T >= 30``).
PAIRING_EPSILON = 30.0
_TINY = 1e-7

Matrix = Literal["binary", "normalized", "cosine_ta", "cosine_tt"]
Normalize = Literal["softmax", "zscore"]
Pairing = Literal["disjoint", "nondisjoint", "dpoor", "ndpoor"]


def _values(delta: DeltaMatrix | np.ndarray) -> np.ndarray:
    v = delta.values.numpy() if isinstance(delta, DeltaMatrix) else np.asarray(delta)
    return np.nan_to_num(np.asarray(v, dtype=np.float64), nan=0.0)


def _clusters(labels: np.ndarray, names: Sequence[str]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for label, name in zip(labels.tolist(), names):
        out.setdefault(int(label), []).append(str(name))
    return dict(sorted(out.items()))


def normalize_rows(x: np.ndarray, how: Normalize = "zscore") -> np.ndarray:
    """Each row normalised on its own: ``softmax`` or ``zscore`` (mean 0, population std
    1). Rows with norm (softmax) or std (z-score) at most 1e-7 become 1e-7 everywhere."""
    x = np.asarray(x, dtype=np.float64)
    if how == "softmax":
        norm = np.linalg.norm(x, axis=-1, keepdims=True)
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return np.where(norm > _TINY, e / e.sum(axis=-1, keepdims=True), _TINY)
    if how == "zscore":
        std = x.std(axis=-1, keepdims=True)
        z = (x - x.mean(axis=-1, keepdims=True)) / np.clip(std, _TINY, None)
        return np.where(std > _TINY, z, _TINY)
    raise TaskspaceError(f"normalize must be 'softmax' or 'zscore', got {how!r}")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > _TINY, x / np.clip(norm, _TINY, None), _TINY)


def cocluster_input(
    delta: DeltaMatrix,
    matrix: Matrix = "binary",
    *,
    epsilon: float = 33.0,
    normalize: Normalize = "zscore",
) -> tuple[np.ndarray, list[str], list[str]]:
    """The matrix :func:`cocluster` works on, with its row and column names (module doc).

    SpectralCoclustering scales by row and column sums, so it needs non-negative entries
    with no empty row: the binary matrix is clipped at 1e-7, a z-scored matrix is shifted
    by its minimum (plus 1e-7; each row's order is kept), cosines are clipped at 1e-7.
    """
    t = _values(delta)
    rows, cols = list(delta.rows), list(delta.cols)
    if matrix == "binary":
        return np.clip((t >= epsilon).astype(np.float64), _TINY, None), rows, cols
    if matrix == "normalized":
        x = normalize_rows(t, normalize)
        if normalize == "zscore":
            x = x - x.min() + _TINY
        return x, rows, cols
    if matrix == "cosine_tt":
        u = _unit_rows(t)
        return np.clip(u @ u.T, _TINY, None), rows, list(rows)
    if matrix == "cosine_ta":
        if t.shape[0] != t.shape[1]:
            raise TaskspaceError("the T.A cosine needs a square matrix (tasks = attributes)")
        return np.clip(_unit_rows(t) @ _unit_rows(t.T).T, _TINY, None), rows, cols
    raise TaskspaceError(
        f"matrix must be 'binary', 'normalized', 'cosine_ta' or 'cosine_tt', got {matrix!r}"
    )


@dataclass(frozen=True)
class CoClusters:
    """A co-clustering: the ``matrix`` clustered, its ``rows`` / ``cols`` names, each
    row's and column's cluster label, and the orders sorting them by label."""

    matrix: np.ndarray
    rows: list[str]
    cols: list[str]
    row_labels: np.ndarray
    column_labels: np.ndarray

    @property
    def row_order(self) -> np.ndarray:
        return np.argsort(self.row_labels, kind="stable")

    @property
    def column_order(self) -> np.ndarray:
        return np.argsort(self.column_labels, kind="stable")

    def row_clusters(self) -> dict[int, list[str]]:
        """``{cluster: [row names]}`` (JSON-able)."""
        return _clusters(self.row_labels, self.rows)

    def column_clusters(self) -> dict[int, list[str]]:
        """``{cluster: [column names]}`` (JSON-able)."""
        return _clusters(self.column_labels, self.cols)

    def reordered(self) -> np.ndarray:
        """The matrix with rows and columns sorted by cluster (the reordered heatmap)."""
        return self.matrix[self.row_order][:, self.column_order]


def cocluster(
    delta: DeltaMatrix,
    n_clusters: int,
    *,
    matrix: Matrix = "binary",
    epsilon: float = 33.0,
    normalize: Normalize = "zscore",
    n_init: int = 100,
    seed: int = 0,
) -> CoClusters:
    """Spectral co-clustering of :func:`cocluster_input` (``svd_method="arpack"``,
    ``n_init`` k-means starts, ``random_state=seed``)."""
    # scikit-learn is imported on use: it slows every start-up
    from sklearn.cluster import SpectralCoclustering

    x, rows, cols = cocluster_input(delta, matrix, epsilon=epsilon, normalize=normalize)
    if not 1 <= n_clusters <= min(x.shape):
        raise TaskspaceError(f"n_clusters must lie in [1, {min(x.shape)}], got {n_clusters}")
    model = SpectralCoclustering(
        n_clusters=n_clusters, svd_method="arpack", n_init=n_init, random_state=seed
    )
    # scikit-learn's arpack path calls scipy's svds without random_state, which then
    # starts from numpy's global generator: seed it for this call and put it back
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        model.fit(x)
    finally:
        np.random.set_state(state)
    rows_l, cols_l = _relabel(np.asarray(model.row_labels_), np.asarray(model.column_labels_))
    return CoClusters(x, rows, cols, rows_l, cols_l)


def _relabel(first: np.ndarray, *rest: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cluster ids renumbered by first appearance (rows, then columns), so that equal
    partitions get equal labels."""
    ids: dict[int, int] = {}
    for label in np.concatenate([first, *rest]).tolist():
        ids.setdefault(int(label), len(ids))
    return tuple(np.array([ids[int(v)] for v in a], dtype=np.int64) for a in (first, *rest))


def svd_dimension(singular_values: np.ndarray | Sequence[float], gamma: float = GAMMA) -> int:
    """The smallest ``d`` with ``sum_{i<=d} s_i^2 / sum s^2 >= gamma`` (at least 1).

    The comparison allows 1e-12 of rounding, so a share that equals ``gamma`` on paper
    counts (the original compared floats with ``==`` elsewhere, and kept ``d - 1``
    columns here)."""
    if not 0.0 <= gamma < 1.0:
        raise TaskspaceError(f"gamma must lie in [0, 1), got {gamma}")
    s2 = np.asarray(singular_values, dtype=np.float64) ** 2
    if s2.size == 0 or s2.sum() <= 0:
        raise TaskspaceError("svd_dimension needs a non-zero singular value")
    share = np.cumsum(s2) / s2.sum()
    return int(np.argmax(share >= gamma - 1e-12)) + 1


@dataclass(frozen=True)
class SvdClusters:
    """SVD + KMeans: ``names`` of the rows, ``labels``, the kept dimension ``d``, the
    cumulative share of the squared singular values ``explained``, and the row
    ``embedding`` (``u[:, :d]``)."""

    names: list[str]
    labels: np.ndarray
    d: int
    explained: np.ndarray
    embedding: np.ndarray

    @property
    def order(self) -> np.ndarray:
        return np.argsort(self.labels, kind="stable")

    def clusters(self) -> dict[int, list[str]]:
        """``{cluster: [names]}`` (JSON-able)."""
        return _clusters(self.labels, self.names)

    def cosine(self) -> np.ndarray:
        """Cosine similarity of the rows' embeddings (the cosine heatmap)."""
        u = _unit_rows(self.embedding)
        return u @ u.T


def association(delta: DeltaMatrix) -> np.ndarray:
    """``(T + T^T) / 100 + I`` of a square matrix whose rows and columns name the same
    attributes in the same order (NaN as 0): how strongly two attributes go together in
    either direction, each attribute fully with itself."""
    if list(delta.rows) != list(delta.cols):
        raise TaskspaceError("association needs the same attributes on both axes, in order")
    t = _values(delta)
    return (t + t.T) / 100.0 + np.eye(len(t))


def svd_kmeans(
    x: DeltaMatrix | np.ndarray,
    n_clusters: int,
    *,
    names: Sequence[str] | None = None,
    gamma: float = GAMMA,
    n_init: int = 10,
    seed: int = 0,
) -> SvdClusters:
    """Cluster the rows of ``x`` (a :class:`DeltaMatrix`: its rows, named by ``rows``;
    or an array with ``names``): L2-normalised rows, SVD, the first
    :func:`svd_dimension` columns of ``u``, then ``KMeans(n_clusters, tol=1e-6, n_init,
    random_state=seed)``."""
    # scikit-learn is imported on use: it slows every start-up
    from sklearn.cluster import KMeans

    if isinstance(x, DeltaMatrix):
        names = list(x.rows) if names is None else list(names)
    arr = _values(x)
    if names is None or len(names) != arr.shape[0]:
        raise TaskspaceError("svd_kmeans needs one name per row")
    if not 1 <= n_clusters <= arr.shape[0]:
        raise TaskspaceError(f"n_clusters must lie in [1, {arr.shape[0]}], got {n_clusters}")
    u, s, _ = np.linalg.svd(_unit_rows(arr))
    d = svd_dimension(s, gamma)
    emb = u[:, :d]
    km = KMeans(n_clusters=n_clusters, tol=1e-6, n_init=n_init, random_state=seed).fit(emb)
    s2 = s**2
    (labels,) = _relabel(np.asarray(km.labels_))
    return SvdClusters(list(names), labels, d, np.cumsum(s2) / s2.sum(), emb.copy())


def task_pairings(
    delta: DeltaMatrix,
    kind: Pairing = "disjoint",
    *,
    num_tasks: int = 2,
    num_pairings: int = 5,
    epsilon: float = PAIRING_EPSILON,
    percentile: float = 33.0,
    clusters: Mapping[int, Sequence[str]] | Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
) -> list[list[str]]:
    """Seeded multi-task pairings of spurious groupings (``["Task:Attr", ...]`` each).

    A task's correlates are the attributes with ``T[task, attr] >= epsilon`` (off the
    diagonal). ``disjoint``: tasks whose correlate sets are non-empty and pairwise
    disjoint, each with one of its correlates drawn; ``nondisjoint``: tasks sharing a
    correlate, all grouped by one shared correlate drawn from the intersection; ``dpoor``
    / ``ndpoor``: the same among the "poor" tasks (plain average accuracy below the
    ``percentile``-th percentile of all tasks'). ``clusters`` (e.g.
    :meth:`SvdClusters.clusters`) keeps only pairings whose tasks share a cluster. At most
    ``num_pairings`` are drawn (``random.Random(seed)``); none raises
    :class:`TaskspaceError`.
    """
    if kind not in ("disjoint", "nondisjoint", "dpoor", "ndpoor"):
        raise TaskspaceError(
            f"kind must be 'disjoint', 'nondisjoint', 'dpoor' or 'ndpoor', got {kind!r}"
        )
    delta = delta.by_task()
    t = _values(delta)
    tasks, attrs = list(delta.tasks), list(delta.attrs)
    if num_tasks < 2 or num_tasks > len(tasks):
        raise TaskspaceError(f"num_tasks must lie in [2, {len(tasks)}], got {num_tasks}")
    correlates = {
        task: sorted(
            (a for j, a in enumerate(attrs) if a != task and t[i, j] >= epsilon),
            key=attrs.index,
        )
        for i, task in enumerate(tasks)
    }
    pool = tasks
    if kind in ("dpoor", "ndpoor"):
        acc = np.array([delta.avg_acc.get(task, np.nan) for task in tasks], dtype=np.float64)
        if np.isnan(acc).any():
            raise TaskspaceError("poor pairings need every task's average accuracy")
        cut = np.percentile(acc, percentile)
        pool = [task for task, a in zip(tasks, acc) if a < cut]
    cluster_of: dict[str, set[str]] = {}
    if clusters is not None:
        for key, members in clusters.items():
            for name in members:
                cluster_of.setdefault(str(name), set()).add(str(key))
    rng = random.Random(seed)
    found: list[list[str]] = []
    for combo in itertools.combinations(pool, num_tasks):
        if clusters is not None and not set.intersection(
            *(cluster_of.get(task, set()) for task in combo)
        ):
            continue
        sets = [set(correlates[task]) for task in combo]
        if kind in ("disjoint", "dpoor"):
            if any(not s for s in sets) or len(set().union(*sets)) != sum(map(len, sets)):
                continue
            found.append([f"{task}:{rng.choice(correlates[task])}" for task in combo])
        else:
            common = sorted(set.intersection(*sets), key=attrs.index)
            if not common:
                continue
            shared = rng.choice(common)
            found.append([f"{task}:{shared}" for task in combo])
    if not found:
        raise TaskspaceError(
            f"no {kind} pairing of {num_tasks} tasks has spurious attributes at T >= {epsilon:g}"
        )
    if len(found) > num_pairings:
        found = rng.sample(found, num_pairings)
    return found
