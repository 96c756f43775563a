"""Groupings and group metrics against hand computations: group ids in the written
attribute order, padded counts, name errors, per-group / worst-group / plain and weighted
averages with an empty group, class accuracy, Wilson intervals and the final table."""

from __future__ import annotations

import math

import pytest
import torch

from taskspace.data import ImageDataset
from taskspace.errors import TaskspaceError
from taskspace.robustness import (
    final_table,
    group_counts,
    group_index,
    group_metrics,
    parse_grouping,
    wilson_interval,
)

NAMES = ["Blond_Hair", "Male", "Young"]
# rows: (Blond_Hair, Male, Young)
ROWS = [(0, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1), (1, 0, 1), (1, 1, 0)]


def _dataset(rows: list[tuple[int, ...]] = ROWS) -> ImageDataset:
    n = len(rows)
    return ImageDataset(
        name="toy",
        images=torch.zeros(n, 1, 2, 2, dtype=torch.uint8),
        mean=(0.0,),
        std=(1.0,),
        classes=torch.zeros(n, dtype=torch.long),
        class_names=["x"],
        splits={"train": torch.tensor([0, 1, 2, 4]), "test": torch.arange(n)},
        attributes=torch.tensor(rows),
        attribute_names=list(NAMES),
    )


def test_one_attribute_group_is_2y_plus_a():
    ds = _dataset()
    g = parse_grouping("Blond_Hair:Male", NAMES)
    assert (g.task, g.attributes, g.k, g.num_groups) == ("Blond_Hair", ("Male",), 1, 4)
    assert g.groups(ds).tolist() == [0, 1, 0, 3, 2, 3]
    assert g.targets(ds).tolist() == [0, 0, 0, 1, 1, 1]
    assert g.group_names() == [
        "Blond_Hair=0,Male=0",
        "Blond_Hair=0,Male=1",
        "Blond_Hair=1,Male=0",
        "Blond_Hair=1,Male=1",
    ]
    assert g.group_class().tolist() == [0, 0, 1, 1]


def test_two_attributes_keep_the_written_order():
    """g = 4y + 2 a1 + a2 with a1 the first attribute written: swapping the attributes
    swaps the ids of the mixed groups (the original's set() made this arbitrary)."""
    ds = _dataset()
    my = parse_grouping("Blond_Hair:Male,Young", NAMES)
    ym = parse_grouping("Blond_Hair:Young,Male", NAMES)
    assert my.attributes == ("Male", "Young") and ym.attributes == ("Young", "Male")
    assert my.groups(ds).tolist() == [0, 2, 1, 7, 5, 6]
    assert ym.groups(ds).tolist() == [0, 1, 2, 7, 6, 5]
    assert my.num_groups == 8 and my.group_class().tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert my.group_names()[5] == "Blond_Hair=1,Male=0,Young=1"
    bits = torch.tensor(ROWS)
    assert torch.equal(group_index(bits[:, 0], bits[:, 1:]), my.groups(ds))


def test_counts_are_padded_when_trailing_groups_are_empty():
    ds = _dataset()
    g = parse_grouping("Blond_Hair:Male", NAMES)
    # train = rows 0, 1, 2, 4: groups 0, 1, 0, 2 -> blond males (g3) absent
    assert torch.bincount(g.groups(ds)[ds.split("train")]).tolist() == [2, 1, 1]  # too short
    assert g.group_counts(ds, "train").tolist() == [2, 1, 1, 0]
    assert g.class_counts(ds, "train").tolist() == [3, 1]
    assert g.proportions(ds, "train").tolist() == [0.5, 0.25, 0.25, 0.0]
    three = parse_grouping("Blond_Hair:Male,Young", NAMES)
    assert three.group_counts(ds, "train").tolist() == [1, 1, 1, 0, 0, 1, 0, 0]
    assert group_counts(torch.tensor([0, 0, 1]), 4).tolist() == [2, 1, 0, 0]


def test_unknown_names_and_bad_syntax_give_one_line_errors():
    with pytest.raises(TaskspaceError, match="did you mean 'Male'") as err:
        parse_grouping("Blond_Hair:Mal", NAMES)
    assert "\n" not in str(err.value)
    with pytest.raises(TaskspaceError, match="unknown attribute 'Blond_hair'.*'Blond_Hair'"):
        parse_grouping("Blond_hair:Male", NAMES)
    for bad in ("Blond_Hair", "Blond_Hair:", "Blond_Hair:Male,,Young", "a:b:c"):
        with pytest.raises(TaskspaceError):
            parse_grouping(bad, NAMES)
    with pytest.raises(TaskspaceError, match="more than once"):
        parse_grouping("Blond_Hair:Male,Male", NAMES)
    # the diagonal (Task:Task) is allowed: two of its groups are empty
    diag = parse_grouping("Male:Male", NAMES)
    assert diag.group_counts(_dataset(), "test").tolist() == [3, 0, 0, 3]
    with pytest.raises(TaskspaceError, match="0/1"):
        parse_grouping("Blond_Hair:Male", NAMES).groups(_dataset([(0, 2, 0)]))


# Hand example: 10 examples, groups 0/1/2 (group 3 empty), three models.
G = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
Y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
PRED = torch.tensor(
    [
        [0, 0, 0, 1, 1, 1, 1, 1, 0, 0],  # g0 3/4, g1 0/2, g2 2/4
        [0, 0, 0, 0, 0, 1, 1, 1, 1, 0],  # g0 4/4, g1 1/2, g2 3/4
        [1, 1, 0, 0, 0, 0, 1, 1, 1, 1],  # g0 2/4, g1 2/2, g2 4/4
    ]
)


def test_group_metrics_by_hand_with_an_empty_group():
    p = torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    gm = group_metrics(PRED, Y, G, 4, train_proportions=p)
    assert gm.correct.tolist() == [[3, 0, 2, 0], [4, 1, 3, 0], [2, 2, 4, 0]]
    assert gm.total.tolist() == [4, 2, 4, 0]
    acc = gm.acc
    assert acc[1, :3].tolist() == [1.0, 0.5, 0.75] and bool(acc[:, 3].isnan().all())
    # the empty group neither crashes the min nor counts as 0
    assert gm.worst_group.tolist() == [0.0, 0.5, 0.5]
    assert gm.worst_group_id.tolist() == [1, 1, 0]  # model 2's worst is the majority group
    assert gm.average.tolist() == pytest.approx([0.5, 0.8, 0.8])
    assert gm.weighted_average.tolist() == pytest.approx([0.5, 0.8125, 0.75])
    assert gm.class_accuracy[1].tolist() == pytest.approx([5 / 6, 3 / 4])
    assert gm.class_total.tolist() == [6, 4]
    # proportions of an empty evaluation group are dropped and the rest renormalised
    p2 = torch.tensor([0.4, 0.2, 0.2, 0.2], dtype=torch.float64)
    w2 = group_metrics(PRED, Y, G, 4, train_proportions=p2).weighted_average
    assert float(w2[1]) == pytest.approx((0.4 * 1 + 0.2 * 0.5 + 0.2 * 0.75) / 0.8)
    assert bool(group_metrics(PRED, Y, G, 4).weighted_average.isnan().all())
    # one model as [n]
    assert group_metrics(PRED[1], Y, G, 4).correct.tolist() == [[4, 1, 3, 0]]
    rows = gm.rows(split="test", seed=[0, 1, 2])
    assert rows[2]["seed"] == 2 and rows[2]["split"] == "test"
    assert rows[1]["g1_acc"] == 0.5 and rows[1]["g1_correct_counts"] == 1
    assert rows[1]["g1_count"] == 2 and math.isnan(rows[1]["g3_acc"])
    assert rows[0]["worst_group_acc"] == 0.0 and rows[0]["weighted_avg_acc"] == 0.5


def test_wilson_interval_matches_published_values():
    low, high = wilson_interval(torch.tensor(8), torch.tensor(10))
    assert (float(low), float(high)) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    low, high = wilson_interval(torch.tensor([0, 5]), torch.tensor([0, 5]))
    assert math.isnan(float(low[0])) and float(high[1]) == pytest.approx(1.0)
    assert float(low[1]) == pytest.approx(5 / (5 + 1.959964**2), abs=1e-6)


def test_final_table_mean_std_over_seeds_and_pooled_intervals():
    gm = group_metrics(PRED, Y, G, 4, train_proportions=torch.tensor([0.5, 0.25, 0.25, 0.0]))
    rows = final_table({"erm": {"test": gm}, "jtt": {"val": gm.select([1])}})
    assert [(r["method"], r["split"], r["seeds"]) for r in rows] == [
        ("erm", "test", 3),
        ("jtt", "val", 1),
    ]
    r = rows[0]
    assert r["worst_group_acc_mean"] == pytest.approx(1 / 3)
    assert r["worst_group_acc_std"] == pytest.approx(math.sqrt(((1 / 3) ** 2 + 2 / 36) / 3))
    assert r["avg_acc_mean"] == pytest.approx(0.7)
    assert r["weighted_avg_acc_mean"] == pytest.approx((0.5 + 0.8125 + 0.75) / 3)
    assert r["g1_acc_mean"] == pytest.approx(0.5) and r["g1_count"] == 2
    assert math.isnan(r["g3_acc_mean"]) and r["g3_count"] == 0
    # pooled over seeds: g0 9/12, g1 3/6, g2 9/12 -> worst pooled group g1
    low, high = wilson_interval(torch.tensor(3), torch.tensor(6))
    assert r["worst_group_pooled"] == 1
    assert (r["worst_group_ci_low"], r["worst_group_ci_high"]) == (float(low), float(high))
    low, high = wilson_interval(torch.tensor(21), torch.tensor(30))
    assert r["avg_acc_ci_low"] == pytest.approx(float(low))
    assert rows[1]["worst_group_acc_std"] == 0.0


def test_evaluation_grouping_may_differ_from_training_grouping():
    """The same predictions under two groupings: counts are regrouped, averages agree."""
    ds = _dataset()
    pred = torch.tensor([0, 1, 0, 1, 0, 1])  # wrong on rows 1 and 4
    y = ds.attributes[:, 0]
    one = parse_grouping("Blond_Hair:Male", NAMES)
    two = parse_grouping("Blond_Hair:Male,Young", NAMES)
    a = group_metrics(pred, y, one.groups(ds), one.num_groups)
    b = group_metrics(pred, y, two.groups(ds), two.num_groups)
    assert a.correct.tolist() == [[2, 0, 0, 2]]
    assert b.correct.tolist() == [[1, 1, 0, 0, 0, 0, 1, 1]]
    assert b.total.tolist() == [1, 1, 1, 0, 0, 1, 1, 1]
    assert float(a.average[0]) == float(b.average[0]) == pytest.approx(4 / 6)
    assert float(a.worst_group[0]) == 0.0 and float(b.worst_group[0]) == 0.0
