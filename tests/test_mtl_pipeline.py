"""The grouping pipeline: arms from selections, the comparison table by hand, and the
whole pipeline on a tiny planted set."""

from __future__ import annotations

import pytest
import torch

from taskspace.engine import Recipe
from taskspace.mtl.affinity import AffinityResult
from taskspace.mtl.pipeline import (
    ALL_IN_ONE,
    ONE_PER_TASK,
    arms,
    comparison_rows,
    group_tasks,
    networks_to_train,
    onto_matrix,
    selections_for,
)
from taskspace.mtl.planted import load_planted

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["a", "b", "c"]


def _selection():
    # onto t from o: a and b help each other, c is hurt by everyone
    A = torch.tensor([[5.0, 2.0, -1.0], [3.0, 5.0, -2.0], [-1.0, -3.0, 5.0]], dtype=torch.float64)
    return selections_for(A, "tag", NAMES, [1, 2])


def test_arms_and_networks_from_selections():
    sels = _selection()
    assert sels[1].groups == [("a", "b", "c")]
    assert sels[2].groups[0] == ("a", "b") and set(sels[2].groups[1]) >= {"c"}
    m = arms(sels, NAMES)
    assert list(m) == ["B=1", "B=2", ALL_IN_ONE, ONE_PER_TASK]
    assert m["B=1"] == [((0, 1, 2), [0, 1, 2])]
    assert m["B=2"][0] == ((0, 1), [0, 1]) and m["B=2"][1][1] == [2]
    assert m[ONE_PER_TASK] == [((0,), [0]), ((1,), [1]), ((2,), [2])]
    nets = networks_to_train(m)
    assert len(nets) == len(set(nets)) and (0, 1, 2) in nets and nets[0] == (0,)
    assert [len(g) for g in nets] == sorted(len(g) for g in nets)


def test_comparison_rows_by_hand():
    arm_map = {
        "B=2": [((0, 1), [0, 1]), ((1, 2), [2])],
        ONE_PER_TASK: [((0,), [0]), ((1,), [1]), ((2,), [2])],
    }
    loss = {("a+b", "a"): [1.0, 3.0], ("a+b", "b"): [2.0, 2.0], ("b+c", "c"): [0.5, 1.5],
            ("b+c", "b"): [9.0, 9.0], ("a", "a"): [1.5, 1.5], ("b", "b"): [1.0, 1.0],
            ("c", "c"): [4.0, 2.0]}  # fmt: skip
    rows = [
        {"members": g, "task": t, "split": "val", "seed": s, "loss": v[i], "error": v[i] / 10}
        for (g, t), v in loss.items()
        for i, s in enumerate((0, 1))
    ]
    out = comparison_rows(arm_map, rows, NAMES, [0, 1])
    by = {(r["arm"], r["task"]): r for r in out}
    assert by["B=2", "a"]["val_loss"] == 2.0 and by["B=2", "a"]["val_loss_std"] == 1.0
    assert by["B=2", "c"]["group"] == "b+c" and by["B=2", "c"]["val_loss"] == 1.0
    # totals per seed: 1 + 2 + 0.5 = 3.5 and 3 + 2 + 1.5 = 6.5 (b is served by a+b, not b+c)
    assert by["B=2", "total"]["val_loss"] == 5.0 and by["B=2", "total"]["val_loss_std"] == 1.5
    assert by["B=2", "total"]["val_error"] == pytest.approx(0.5)
    assert by[ONE_PER_TASK, "total"]["val_loss"] == 1.5 + 1.0 + 3.0
    assert by[ONE_PER_TASK, "total"]["networks"] == 3
    assert all(r["test_loss"] != r["test_loss"] for r in out)  # NaN: no test rows


def test_onto_matrix_transposes_tag_only():
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    res = AffinityResult("tag", ["a", "b"], ["a", "b"], z, z[None], z[None, None], z,
                         z[None, None], z[None, None], None, [0], {})  # fmt: skip
    assert torch.equal(onto_matrix(res), z.T.double())


@pytest.mark.parametrize("kind", ["cs", "hoa"])
def test_group_tasks_on_a_tiny_planted_set(kind):
    ds = load_planted(sizes=(80, 40, 40))
    y = ds.attributes[:, [0, 2, 3]]
    res = group_tasks(
        ds, y, kind=kind, names=["f0a", "f0x", "f1a"], budgets=[1, 2], model="mlp",
        model_kwargs={"widths": [8]}, recipe=Recipe(lr=3e-3, batch_size=20, epochs=2),
        seeds=(0, 1),
    )  # fmt: skip
    assert set(res.selections) == {1, 2}
    assert res.A.shape == (3, 3)
    totals = res.totals()
    assert set(totals) == {"B=1", "B=2", ALL_IN_ONE, ONE_PER_TASK}
    assert totals["B=1"] == totals[ALL_IN_ONE]  # the same network serves every task
    for r in res.rows:
        assert r["val_loss"] > 0 and r["test_loss"] > 0 and 0 <= r["val_error"] <= 3
    per_task = [r for r in res.rows if r["arm"] == ONE_PER_TASK and r["task"] != "total"]
    assert sum(r["val_loss"] for r in per_task) == pytest.approx(totals[ONE_PER_TASK])
    if kind == "hoa":  # singles and pairs reused from HOA: only all-in-one trained again
        assert res.fit.networks == 2
        assert res.A[0, 0] == pytest.approx(per_task[0]["val_loss"])
