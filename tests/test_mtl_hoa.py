"""HOA: the pair matrix against explicit single and pair fits, its orientation, the
per-task metrics with missing labels, and the planted set."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from taskspace.engine import MultiTask, Recipe, fit_many, predict_many
from taskspace.errors import TaskspaceError
from taskspace.mtl.hoa import fit_groups, group_metrics, hoa_affinity, hoa_groups
from taskspace.mtl.planted import load_planted, planted_families, planted_names

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = Recipe(optimizer="adam", lr=3e-3, batch_size=20, epochs=2)
KW = {"widths": [8]}


@pytest.fixture(scope="module")
def tiny():
    ds = load_planted(sizes=(60, 40, 40), seed=3)
    return ds, ds.attributes[:, :3].long()


def _explicit(ds, y, tasks, seed):
    """One network on ``tasks`` by a plain fit_many call; val CE and error per task."""
    ens = fit_many(
        "mlp",
        ds,
        y[:, list(tasks)][None],
        RECIPE,
        [seed],
        objective=MultiTask(num_classes=2),
        num_outputs=2 * len(tasks),
        model_kwargs=KW,
        batched=False,
    )
    val = ds.split("val")
    lg = predict_many(ens, ds, val).view(len(val), len(tasks), 2)
    loss = [F.cross_entropy(lg[:, j], y[val, t]).item() for j, t in enumerate(tasks)]
    err = [(lg[:, j].argmax(-1) != y[val, t]).float().mean().item() for j, t in enumerate(tasks)]
    return loss, err


@pytest.mark.parametrize("metric", ["loss", "error"])
def test_hoa_matrix_is_rows_onto_columns_from_explicit_fits(tiny, metric):
    ds, y = tiny
    res = hoa_affinity(
        ds, y, model="mlp", model_kwargs=KW, recipe=RECIPE, seeds=(5,), metric=metric,
        select="last", names=["a", "b", "c"],
    )  # fmt: skip
    assert res.names == ["a", "b", "c"] and res.networks == 3 + 3
    assert res.matrix.shape == (3, 3) and res.per_seed.shape == (1, 3, 3)
    pick = 0 if metric == "loss" else 1
    for t in range(3):  # diagonal: the single-task network
        assert res.matrix[t, t].item() == pytest.approx(
            _explicit(ds, y, (t,), 5)[pick][0], abs=1e-5
        )
    for t, o in ((0, 1), (0, 2), (1, 2)):  # the pair network scores both of its tasks
        vals = _explicit(ds, y, (t, o), 5)[pick]
        assert res.matrix[t, o].item() == pytest.approx(vals[0], abs=1e-5)  # onto t from o
        assert res.matrix[o, t].item() == pytest.approx(vals[1], abs=1e-5)  # onto o from t
    assert not torch.allclose(res.matrix, res.matrix.T)  # not symmetric: rows are scored


def test_hoa_best_epoch_is_no_worse_than_last_on_the_summed_val_loss(tiny):
    ds, y = tiny
    common = dict(model="mlp", model_kwargs=KW, recipe=RECIPE.replace(epochs=4), seeds=(0, 1))
    best = fit_groups(ds, y, [(0, 1)], select="best", **common)
    last = fit_groups(ds, y, [(0, 1)], select="last", **common)
    for s in (0, 1):
        tot = [
            sum(r["loss"] for r in f.rows if r["seed"] == s and r["split"] == "val")
            for f in (best, last)
        ]
        assert tot[0] <= tot[1] + 1e-6
    hist = [r for r in best.history if r["seed"] == 0]
    kept = [r["epoch"] for r in best.rows if r["seed"] == 0][0]
    low = min(hist, key=lambda r: r["val_loss"])
    assert kept == pytest.approx(low["epoch"])
    assert {r["split"] for r in best.rows} == {"val", "test"}


def test_group_metrics_hand_computed_with_missing_labels():
    logits = torch.tensor([[[2.0, 0.0, 0.0, 1.0], [0.0, 1.0, 3.0, 0.0], [1.0, 1.0, 0.0, 0.0]]])
    y = torch.tensor([[[0, 1], [0, -1], [1, 0]]])
    loss, err = group_metrics(logits, y)

    def ce(a, b, k):
        return math.log(math.exp(a) + math.exp(b)) - (a, b)[k]

    assert loss[0, 0].item() == pytest.approx((ce(2, 0, 0) + ce(0, 1, 0) + ce(1, 1, 1)) / 3)
    assert loss[0, 1].item() == pytest.approx((ce(0, 1, 1) + ce(0, 0, 0)) / 2)  # 1 missing
    assert err[0, 0].item() == pytest.approx(2 / 3)  # example 2 wrong, example 3 a tie -> 0
    assert err[0, 1].item() == pytest.approx(0.0)


def test_hoa_groups_and_bad_input(tiny):
    ds, y = tiny
    assert hoa_groups(3) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)]
    with pytest.raises(TaskspaceError, match="at least two"):
        hoa_affinity(ds, y[:, :1], model="mlp", model_kwargs=KW, recipe=RECIPE)
    with pytest.raises(TaskspaceError, match="metric"):
        hoa_affinity(ds, y, metric="acc", model="mlp", model_kwargs=KW, recipe=RECIPE)  # type: ignore[arg-type]
    with pytest.raises(TaskspaceError, match="distinct task indices"):
        fit_groups(ds, y, [(0, 3)], model="mlp", model_kwargs=KW, recipe=RECIPE)


def test_planted_labels_are_signs_and_their_xor():
    ds = load_planted(families=3, sizes=(30, 20, 20), seed=1)
    a = ds.attributes
    assert ds.attribute_names == planted_names(3) and a.shape == (70, 9)
    for f in range(3):
        assert torch.equal(a[:, 3 * f + 2], a[:, 3 * f] ^ a[:, 3 * f + 1])
    assert planted_families(planted_names(2)) == [0, 0, 0, 1, 1, 1]
    assert torch.equal(load_planted(seed=1, families=3, sizes=(30, 20, 20)).images, ds.images)
    noisy = load_planted(label_noise=0.3, sizes=(200, 50, 50))
    clean = load_planted(label_noise=0.0, sizes=(200, 50, 50))
    flipped = (noisy.attributes != clean.attributes).float()
    assert flipped[200:].sum() == 0 and 0.2 < flipped[:200].mean() < 0.4  # train only
    with pytest.raises(TaskspaceError, match="label_noise"):
        load_planted(label_noise=0.7)


def test_task_labels_from_a_taskset_are_images_by_tasks():
    from taskspace.mtl.hoa import task_labels
    from taskspace.tasks.taskset import TaskSet

    ts = TaskSet(torch.tensor([[0, 1, 1], [1, 0, 0]]), ["p", "q"], ["human", "human"], {})
    y, names = task_labels(ts)
    assert names == ["p", "q"] and torch.equal(y, torch.tensor([[0, 1], [1, 0], [1, 0]]))
    with pytest.raises(TaskspaceError, match="twice"):
        task_labels(y, ["p", "p"])
