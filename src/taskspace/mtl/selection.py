"""Exact network selection (TAG, section 6): which groups of tasks to train together.

Given a matrix ``A[t][o]`` ("onto t from o": rows are targets, columns partners), every
non-empty subset ``G`` of the tasks is a candidate network. A task ``t`` in a network
``G`` with ``|G| >= 2`` scores ``s_G(t) = mean over o in G minus t of A[t][o]``; a singleton
scores ``-1e6`` for affinity kinds (TAG, CS: forbids it) and ``A[t][t]`` for HOA (the
single-task result). A selection picks at most ``B`` networks that cover every task; each
task is served by its best chosen network (highest score for affinities, lowest for HOA,
whose entries are errors or losses) and the objective is the mean of the served scores.

The original notebooks enumerate all ``sum_{k=1..B} C(2^n - 1, k)`` sets depth-first
(2.8e9 for the 9 CelebA tasks at B = 4). Here the exact solver works on *served sets*: an
optimal selection partitions the tasks into at most ``B`` classes (the tasks each network
serves), and a class ``C`` is worth ``w(C) = best over G containing C of sum_{t in C}
s_G(t)``. Both ``w`` (over all 3^n pairs C within G) and the best partition (a subset DP,
``B * 3^n / 2`` steps) are small: milliseconds at n = 9. ``solver="milp"`` solves the
brief's integer programme (binary ``y_G``, ``x_{G,t}``; ``sum_G x_{G,t} = 1``; ``x <= y``;
``sum y <= B``) with SciPy's HiGHS instead; the tests check that both agree.

Ties (``tie_break="prune"``, the default): objectives that agree within
``TIE_RTOL * max|A|`` count as equal; among equal optima the DP keeps the fewest networks,
then for each served class the smallest network (fewest tasks, then the lowest bit mask
over the task order), then the first partition in a fixed enumeration order, so results
are deterministic. A task is then served by the best chosen network that holds it (the
first in the returned order on a tie), and networks that serve no task are dropped.
``tie_break="dfs_first"`` instead runs the original's depth-first enumeration and returns
its first optimum found (strict improvements only), redundant networks included, in the
order it found them (section 6.4); it is practical only for small ``n`` and ``B``. Its
ties are ulp-level: the original averages the served scores over a Python set of names,
whose order changes with the hash seed; here they are averaged in the order the tasks are
first met (chosen networks in order, members in task order), which reproduces both
examples of section 6.4 on the full-precision Taskonomy tables.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from taskspace.errors import TaskspaceError

__all__ = [
    "DFS_FIRST_MAX_SETS",
    "KINDS",
    "SINGLETON_AFFINITY",
    "TIE_RTOL",
    "Selection",
    "evaluate_grouping",
    "group_scores",
    "original_enumeration_count",
    "parse_grouping",
    "select_groups",
    "select_groups_all",
    "select_groups_enumerate",
    "time_enumeration",
]

#: Kinds of matrix: affinities (higher is better; ``tag`` and ``cs`` are aliases) or HOA
#: (errors or losses; lower is better).
KINDS = ("affinity", "tag", "cs", "hoa")
#: A singleton's score for affinity kinds: the original's sentinel, which forbids it.
SINGLETON_AFFINITY = -1e6
#: Relative tolerance under which two objectives count as a tie (times ``max|A|``).
TIE_RTOL = 1e-10
#: The most sets ``tie_break="dfs_first"`` enumerates before refusing (pure Python).
DFS_FIRST_MAX_SETS = 5_000_000
#: The most tasks the exact solver takes (its tables grow as 3^n).
MAX_TASKS = 14

TIE_BREAKS = ("prune", "dfs_first")
SOLVERS = ("auto", "dp", "milp")


# --------------------------------------------------------------------------- results
@dataclass
class Selection:
    """A chosen set of networks.

    Attributes:
        groups: the networks, each a tuple of task names in the task order.
        served: task -> index into ``groups`` of the network that serves it.
        objective: mean over tasks of the served scores.
        per_task_score: task -> its served score.
        budget: the budget ``B`` it was chosen under (the number of groups for a given
            grouping).
        kind: ``affinity`` (maximised) or ``hoa`` (minimised).
        tasks: the task names in the matrix order.
    """

    groups: list[tuple[str, ...]]
    served: dict[str, int]
    objective: float
    per_task_score: dict[str, float]
    budget: int
    kind: str
    tasks: tuple[str, ...] = field(default=())

    def serves(self, index: int) -> list[str]:
        """Tasks served by network ``index``, in the task order."""
        order = self.tasks or tuple(self.served)
        return [t for t in order if self.served.get(t) == index]

    def to_json(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "kind": self.kind,
            "objective": self.objective,
            "tasks": list(self.tasks),
            "groups": [list(g) for g in self.groups],
            "served": dict(self.served),
            "serves": [self.serves(i) for i in range(len(self.groups))],
            "per_task_score": dict(self.per_task_score),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Selection:
        return cls(
            groups=[tuple(g) for g in data["groups"]],
            served={str(k): int(v) for k, v in data["served"].items()},
            objective=float(data["objective"]),
            per_task_score={str(k): float(v) for k, v in data["per_task_score"].items()},
            budget=int(data["budget"]),
            kind=str(data["kind"]),
            tasks=tuple(data.get("tasks", ())),
        )


# --------------------------------------------------------------------------- checks
def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise TaskspaceError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return "hoa" if kind == "hoa" else "affinity"


def _matrix(A: Any) -> np.ndarray:
    try:
        a = np.array(A, dtype=np.float64)
    except (TypeError, ValueError):
        raise TaskspaceError("the affinity matrix must hold numbers") from None
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise TaskspaceError(f"the affinity matrix must be square and non-empty, got {a.shape}")
    if not np.isfinite(a).all():
        raise TaskspaceError("the affinity matrix holds NaN or infinite values")
    if a.shape[0] > MAX_TASKS:
        raise TaskspaceError(
            f"network selection takes at most {MAX_TASKS} tasks (2^n - 1 candidate "
            f"networks), got {a.shape[0]}"
        )
    return a


def _names(names: Sequence[str] | None, n: int) -> tuple[str, ...]:
    if names is None:
        return tuple(f"t{i}" for i in range(n))
    out = tuple(str(x) for x in names)
    if len(out) != n:
        raise TaskspaceError(f"{len(out)} task names for a {n} x {n} matrix")
    dup = sorted({x for x in out if out.count(x) > 1})
    if dup:
        raise TaskspaceError(f"duplicate task name(s): {', '.join(dup)}")
    return out


def _budget(budget: Any) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise TaskspaceError(f"the budget B must be an integer >= 1, got {budget!r}")
    return int(budget)


def original_enumeration_count(n: int, budget: int) -> int:
    """Sets the original enumeration visits: ``sum_{k=1..B} C(2^n - 1, k)``."""
    m = 2**n - 1
    return sum(math.comb(m, k) for k in range(1, budget + 1))


# --------------------------------------------------------------------------- scores
def _members(mask: int, n: int) -> list[int]:
    return [t for t in range(n) if mask >> t & 1]


def group_scores(A: Any, kind: str = "affinity") -> np.ndarray:
    """``S[mask, t]``: task ``t``'s score in the network whose bit mask is ``mask``
    (bit ``t`` = task ``t``; NaN where ``t`` is not a member; row 0 unused).

    The sum over partners runs in the task order, as the original accumulates it."""
    a = _matrix(A)
    k = _kind(kind)
    n = a.shape[0]
    masks = np.arange(2**n)
    member = (masks[:, None] >> np.arange(n)[None, :]) & 1 == 1
    off = a.copy()
    np.fill_diagonal(off, 0.0)
    sums = np.zeros((2**n, n))
    for o in range(n):  # ascending partners: the original's order of additions
        sums += np.where(member[:, o : o + 1], off[:, o][None, :], 0.0)
    size = member.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = sums / (size - 1)[:, None]
    for t in range(n):
        s[1 << t, t] = a[t, t] if k == "hoa" else SINGLETON_AFFINITY
    s[~member] = np.nan
    return s


def _tolerance(a: np.ndarray) -> float:
    return TIE_RTOL * max(float(np.abs(a).max()), 1e-300)


# --------------------------------------------------------------------------- assignment
def _assign(v: np.ndarray, masks: Sequence[int], n: int, tol: float) -> tuple[list[int], list[int]]:
    """Each task's best network among ``masks`` (values ``v``, higher is better; the first
    in ``masks`` order on a tie); returns (served index per task, networks serving any)."""
    served: list[int] = []
    for t in range(n):
        best, best_j = -math.inf, -1
        for j, m in enumerate(masks):
            if m >> t & 1 and v[m, t] > best + tol:
                best, best_j = float(v[m, t]), j
        if best_j < 0:
            raise TaskspaceError(f"task {t} is in no group")
        served.append(best_j)
    return served, sorted(set(served))


def _selection(
    a: np.ndarray,
    s: np.ndarray,
    masks: Sequence[int],
    names: tuple[str, ...],
    kind: str,
    budget: int,
    prune: bool,
) -> Selection:
    n = len(names)
    v = -s if kind == "hoa" else s
    served, used = _assign(v, masks, n, _tolerance(a))
    keep = [masks[j] for j in used] if prune else list(masks)
    index = {masks[j]: keep.index(masks[j]) for j in used}
    scores = [float(s[masks[served[t]], t]) for t in range(n)]
    return Selection(
        groups=[tuple(names[t] for t in _members(m, n)) for m in keep],
        served={names[t]: index[masks[served[t]]] for t in range(n)},
        objective=math.fsum(scores) / n,
        per_task_score={names[t]: scores[t] for t in range(n)},
        budget=budget,
        kind=kind,
        tasks=names,
    )


def _canonical(masks: Sequence[int], n: int) -> list[int]:
    """Unique masks ordered by their task positions (lexicographic)."""
    return sorted(set(masks), key=lambda m: _members(m, n))


# --------------------------------------------------------------------------- exact DP
def _submasks(mask: int, n: int) -> np.ndarray:
    """All submasks of ``mask`` (0 first), built by doubling over its members in task
    order: a fixed enumeration order."""
    subs = np.zeros(1, dtype=np.int64)
    for t in _members(mask, n):
        subs = np.concatenate([subs, subs | (1 << t)])
    return subs


def _class_values(v: np.ndarray, n: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """``w[C]`` = best over networks G containing C of sum_{t in C} v[G, t], and that G
    (the smallest on a tie, then the lowest mask)."""
    full = 2**n
    w = np.full(full, -np.inf)
    best_g = np.zeros(full, dtype=np.int64)
    order = sorted(range(1, full), key=lambda m: (bin(m).count("1"), m))
    for g in order:
        sums = np.zeros(1)
        subs = np.zeros(1, dtype=np.int64)
        for t in _members(g, n):  # sums over members in ascending task order
            sums = np.concatenate([sums, sums + v[g, t]])
            subs = np.concatenate([subs, subs | (1 << t)])
        better = sums[1:] > w[subs[1:]] + tol
        idx = subs[1:][better]
        w[idx] = sums[1:][better]
        best_g[idx] = g
    return w, best_g


def _partition_dp(
    w: np.ndarray, n: int, budget: int, tol: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``F[k][S]`` = best sum of ``w`` over partitions of S into at most k classes, and
    the class holding S's lowest task (0: use k - 1 classes, fewer networks on a tie)."""
    full = 2**n
    kmax = min(budget, n)
    f = np.full((kmax + 1, full), -np.inf)
    f[0, 0] = 0.0
    choice = [np.zeros(full, dtype=np.int64) for _ in range(kmax + 1)]
    rest_subs = {}
    for s_mask in range(1, full):
        low = s_mask & -s_mask
        rest_subs[s_mask] = _submasks(s_mask ^ low, n) | low
    for k in range(1, kmax + 1):
        f[k] = f[k - 1]
        for s_mask in range(1, full):
            cls = rest_subs[s_mask]
            vals = w[cls] + f[k - 1][s_mask ^ cls]
            top = vals.max()
            if not np.isfinite(top) or top <= f[k - 1, s_mask] + tol:
                continue
            first = int(np.argmax(vals >= top - tol))
            f[k, s_mask] = vals[first]
            choice[k][s_mask] = cls[first]
    return f, choice


def _dp_masks(f: np.ndarray, choice: list[np.ndarray], n: int, budget: int) -> list[int]:
    s_mask, k, classes = 2**n - 1, min(budget, n), []
    while s_mask:
        while choice[k][s_mask] == 0:
            k -= 1
        c = int(choice[k][s_mask])
        classes.append(c)
        s_mask ^= c
        k -= 1
    return classes


def _solve_dp(
    s: np.ndarray, a: np.ndarray, kind: str, budgets: Sequence[int]
) -> dict[int, list[int]]:
    n = a.shape[0]
    v = -s if kind == "hoa" else s
    tol = _tolerance(a)
    w, best_g = _class_values(np.nan_to_num(v, nan=-np.inf), n, tol)
    f, choice = _partition_dp(w, n, max(budgets), tol)
    out = {}
    for b in budgets:
        classes = _dp_masks(f, choice, n, b)
        out[b] = _canonical([int(best_g[c]) for c in classes], n)
    return out


# --------------------------------------------------------------------------- MILP
def _solve_milp(s: np.ndarray, kind: str, budget: int, n: int) -> list[int]:
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    v = -s if kind == "hoa" else s
    groups = list(range(1, 2**n))
    pairs = [(g, t) for g in groups for t in _members(g, n)]
    ng, nx = len(groups), len(pairs)
    cost = np.concatenate([np.zeros(ng), [-v[g, t] for g, t in pairs]])
    rows, cols, vals = [], [], []
    # each task served once: sum_G x_{G,t} = 1
    for j, (_, t) in enumerate(pairs):
        rows.append(t)
        cols.append(ng + j)
        vals.append(1.0)
    # x_{G,t} - y_G <= 0
    for j, (g, _) in enumerate(pairs):
        rows += [n + j, n + j]
        cols += [ng + j, g - 1]
        vals += [1.0, -1.0]
    # sum_G y_G <= B
    rows += [n + nx] * ng
    cols += list(range(ng))
    vals += [1.0] * ng
    mat = coo_matrix((vals, (rows, cols)), shape=(n + nx + 1, ng + nx)).tocsr()
    lower = np.concatenate([np.ones(n), np.full(nx, -np.inf), [-np.inf]])
    upper = np.concatenate([np.ones(n), np.zeros(nx), [budget]])
    res = milp(
        cost,
        constraints=LinearConstraint(mat, lower, upper),
        integrality=np.ones(ng + nx),
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 0.0},
    )
    if res.x is None:
        raise TaskspaceError(f"the MILP solver failed: {res.message}")
    x = res.x[ng:]
    return _canonical([g for (g, _), xv in zip(pairs, x, strict=True) if xv > 0.5], n)


# --------------------------------------------------------------------------- enumeration
def _candidates(a: np.ndarray, kind: str) -> list[tuple[int, dict[int, float]]]:
    """The original's candidate list, in its order: depth-first over the tasks, a
    multi-task subset when it is created, a singleton after its subtree; scores summed over
    partners in path order, then divided by ``|G| - 1``. Entries: (bit mask, task ->
    score)."""
    n = a.shape[0]
    out: list[tuple[int, dict[int, float]]] = []

    def grow(index: int, mask: int, sums: dict[int, float]) -> None:
        for i in range(index, n):
            new = dict(sums)
            new[i] = 0.0
            if mask:
                for p in sums:
                    new[p] += float(a[p, i])
                    new[i] += float(a[i, p])
                out.append((mask | 1 << i, new))
            grow(i + 1, mask | 1 << i, new)
            if not mask:
                single = a[i, i] if kind == "hoa" else SINGLETON_AFFINITY
                out.append((1 << i, {i: float(single)}))

    grow(0, 0, {})
    result = []
    for mask, sums in out:
        size = bin(mask).count("1")
        result.append((mask, {t: v / (size - 1) if size > 1 else v for t, v in sums.items()}))
    return result


class _Enumeration:
    """The original select_groups: every set of at most B candidates, depth-first, the
    first best kept (strict improvements); stops after ``limit`` sets when given."""

    def __init__(self, cands: list[tuple[int, dict[int, float]]], n: int, kind: str) -> None:
        self.cands = cands
        self.n = n
        self.hoa = kind == "hoa"
        self.best_val = math.inf if self.hoa else -math.inf
        self.best: list[int] = []
        self.visited = 0

    def run(self, budget: int, limit: int | None = None) -> _Enumeration:
        self.limit = limit
        with contextlib.suppress(StopIteration):
            self._node(0, [], budget)
        return self

    def _node(self, index: int, chosen: list[int], budget: int) -> None:
        if chosen:
            self.visited += 1
            if self.limit is not None and self.visited > self.limit:
                raise StopIteration
            covered: dict[int, None] = {}
            for c in chosen:
                covered.update(dict.fromkeys(self.cands[c][1]))
            if len(covered) == self.n:
                # the original's start values; its mean runs over a set of names, whose
                # order varies with the hash seed: here the order tasks are first met in
                # (chosen networks in order, members in task order), which reproduces
                # section 6.4's ulp-level ties on the full-precision tables
                init = 1e6 if self.hoa else -1e6
                best = dict.fromkeys(covered, init)
                for c in chosen:
                    for t, v in self.cands[c][1].items():
                        best[t] = min(best[t], v) if self.hoa else max(best[t], v)
                val = float(np.mean(list(best.values())))
                if (val < self.best_val) if self.hoa else (val > self.best_val):
                    self.best_val = val
                    self.best = list(chosen)
        if len(chosen) == budget:
            return
        for i in range(index, len(self.cands)):
            self._node(i + 1, [*chosen, i], budget)


def select_groups_enumerate(
    A: Any,
    budget: int,
    *,
    kind: str = "affinity",
    names: Sequence[str] | None = None,
    prune: bool = False,
    max_sets: int | None = DFS_FIRST_MAX_SETS,
) -> Selection:
    """The original notebooks' enumeration (pure Python): every set of at most ``budget``
    candidates, depth-first, the first optimum found. Groups are returned in the order the
    original found them, redundant ones included unless ``prune``. Refuses (one line) when
    it would visit more than ``max_sets`` sets (``None``: no limit)."""
    a, k, b = _matrix(A), _kind(kind), _budget(budget)
    tasks = _names(names, a.shape[0])
    n = len(tasks)
    count = original_enumeration_count(n, b)
    if max_sets is not None and count > max_sets:
        raise TaskspaceError(
            f"the original enumeration visits {count:,} sets for n = {n}, B = {b} (limit "
            f"{max_sets:,}); use tie_break=prune (the exact solver)"
        )
    cands = _candidates(a, k)
    run = _Enumeration(cands, n, k).run(b)
    masks = [cands[c][0] for c in run.best]
    s = group_scores(a, k)
    return _selection(a, s, masks, tasks, k, b, prune)


def time_enumeration(
    A: Any, budget: int, *, kind: str = "affinity", max_sets: int | None = None
) -> tuple[int, float]:
    """Run the original enumeration for at most ``max_sets`` sets; returns (sets visited,
    seconds): its per-set cost, for projecting runs too long to make."""
    a, k = _matrix(A), _kind(kind)
    cands = _candidates(a, k)
    start = time.perf_counter()
    run = _Enumeration(cands, a.shape[0], k).run(_budget(budget), max_sets)
    return min(run.visited, max_sets or run.visited), time.perf_counter() - start


# --------------------------------------------------------------------------- public API
def select_groups_all(
    A: Any,
    budgets: Sequence[int],
    *,
    kind: str = "affinity",
    names: Sequence[str] | None = None,
    tie_break: str = "prune",
    solver: str = "auto",
    prune: bool | None = None,
) -> dict[int, Selection]:
    """:func:`select_groups` for several budgets (one DP serves them all)."""
    a, k = _matrix(A), _kind(kind)
    tasks = _names(names, a.shape[0])
    bs = [_budget(b) for b in budgets]
    if not bs:
        raise TaskspaceError("give at least one budget")
    if tie_break not in TIE_BREAKS:
        raise TaskspaceError(f"tie_break must be one of {', '.join(TIE_BREAKS)}, got {tie_break!r}")
    if solver not in SOLVERS:
        raise TaskspaceError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if tie_break == "dfs_first":
        return {
            b: select_groups_enumerate(a, b, kind=k, names=tasks, prune=bool(prune)) for b in bs
        }
    s = group_scores(a, k)
    n = len(tasks)
    milp = solver == "milp"
    masks = {b: _solve_milp(s, k, b, n) for b in bs} if milp else _solve_dp(s, a, k, bs)
    keep = True if prune is None else prune
    return {b: _selection(a, s, masks[b], tasks, k, b, keep) for b in bs}


def select_groups(
    A: Any,
    budget: int,
    *,
    kind: str = "affinity",
    names: Sequence[str] | None = None,
    tie_break: str = "prune",
    solver: str = "auto",
    prune: bool | None = None,
) -> Selection:
    """The best at most ``budget`` networks for the matrix ``A[t][o]`` ("onto t from o").

    Args:
        A: square float matrix, rows = targets; TAG/CS affinities (``kind="affinity"``,
            ``"tag"`` or ``"cs"``: maximised, singletons forbidden) or HOA errors/losses
            (``kind="hoa"``: minimised, singletons score the diagonal).
        budget: the most networks ``B`` (>= 1).
        names: task names (default ``t0, t1, ...``).
        tie_break: ``prune`` (default): the exact solver, ties broken as the module says,
            networks that serve no task dropped; ``dfs_first``: the original's enumeration
            and its first optimum (redundant networks kept), small ``n`` only.
        solver: ``auto`` (= ``dp``, the exact served-set DP) or ``milp`` (SciPy HiGHS).
        prune: drop networks that serve no task (default: true for ``prune``, false for
            ``dfs_first``, as the original).

    >>> A = [[1.0, 0.5, -1.0], [0.4, 1.0, -1.0], [-1.0, -0.5, 1.0]]
    >>> sel = select_groups(A, 2, names=["a", "b", "c"])
    >>> sel.groups, sel.served, round(sel.objective, 4)
    ([('a', 'b'), ('b', 'c')], {'a': 0, 'b': 0, 'c': 1}, 0.1333)
    """
    b = _budget(budget)
    return select_groups_all(
        A, [b], kind=kind, names=names, tie_break=tie_break, solver=solver, prune=prune
    )[b]


def parse_grouping(text: str, names: Sequence[str]) -> list[tuple[str, ...]]:
    """``"a,b;c,d"`` -> ``[("a", "b"), ("c", "d")]``, checked against ``names``."""
    known = list(names)
    groups: list[tuple[str, ...]] = []
    for part in str(text).split(";"):
        members = tuple(x.strip() for x in part.split(",") if x.strip())
        if not members:
            raise TaskspaceError(f"empty group in grouping {text!r} (write e.g. a,b;c,d)")
        unknown = [x for x in members if x not in known]
        if unknown:
            raise TaskspaceError(
                f"unknown task name(s) {', '.join(unknown)} in grouping; known: {', '.join(known)}"
            )
        if len(set(members)) != len(members):
            raise TaskspaceError(f"a task appears twice in group {','.join(members)}")
        ordered = tuple(x for x in known if x in members)
        if ordered in groups:
            raise TaskspaceError(f"group {','.join(ordered)} is given twice")
        groups.append(ordered)
    missing = [x for x in known if not any(x in g for g in groups)]
    if missing:
        raise TaskspaceError(f"grouping {text!r} leaves out task(s) {', '.join(missing)}")
    return groups


def evaluate_grouping(
    A: Any,
    groups: Sequence[Sequence[str]],
    kind: str = "affinity",
    *,
    names: Sequence[str] | None = None,
    prune: bool = False,
) -> Selection:
    """The objective of a given grouping: each task served by its best network in it.
    Groups are kept in the given order (``prune``: drop those serving no task)."""
    a, k = _matrix(A), _kind(kind)
    tasks = _names(names, a.shape[0])
    index = {t: i for i, t in enumerate(tasks)}
    masks: list[int] = []
    for g in groups:
        unknown = [x for x in g if x not in index]
        if unknown or not g:
            raise TaskspaceError(
                f"unknown task name(s) {', '.join(map(str, unknown)) or '(empty group)'}; "
                f"known: {', '.join(tasks)}"
            )
        masks.append(sum(1 << index[x] for x in set(g)))
    covered = 0
    for m in masks:
        covered |= m
    missing = [t for i, t in enumerate(tasks) if not covered >> i & 1]
    if missing:
        raise TaskspaceError(f"the grouping leaves out task(s) {', '.join(missing)}")
    return _selection(a, group_scores(a, k), masks, tasks, k, len(masks), prune)
