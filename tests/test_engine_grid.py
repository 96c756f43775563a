"""Per-model learning rates and weight decays: a hyper-parameter grid in one batched fit
gives the models that one fit per grid point gives."""

from __future__ import annotations

import pytest
import torch

from taskspace.engine import Recipe, fit_many
from taskspace.errors import TaskspaceError

GRID = [(lr, wd) for lr in (0.02, 0.08) for wd in (0.0, 0.05)]


def labels_for(digits, m: int) -> torch.Tensor:  # noqa: ANN001
    return (digits.classes >= 5).long().expand(m, -1).clone()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("batched", [True, False])
def test_grid_in_one_fit_equals_one_fit_per_point(digits, optimizer: str, batched: bool) -> None:  # noqa: ANN001
    recipe = Recipe(optimizer=optimizer, lr=0.05, momentum=0.9, batch_size=64, steps=15)
    if optimizer == "adam":
        recipe = recipe.replace(lr=1e-3)
        grid = [(lr / 40, wd) for lr, wd in GRID]
    else:
        grid = GRID
    kw = {"model_kwargs": {"widths": (16,)}, "batched": batched}
    seeds = [s for _ in grid for s in (0, 1)]
    together = fit_many(
        "mlp",
        digits,
        labels_for(digits, len(seeds)),
        recipe,
        seeds=seeds,
        lrs=[lr for lr, _ in grid for _ in (0, 1)],
        weight_decays=[wd for _, wd in grid for _ in (0, 1)],
        **kw,
    )
    for i, (lr, wd) in enumerate(grid):
        alone = fit_many(
            "mlp",
            digits,
            labels_for(digits, 2),
            recipe.replace(lr=lr, weight_decay=wd),
            seeds=[0, 1],
            **kw,
        )
        for k, v in alone.params.items():
            torch.testing.assert_close(
                together.params[k][2 * i : 2 * i + 2], v, rtol=1e-4, atol=1e-6
            )
    # the grid points really differ
    key = next(iter(together.params))
    assert not torch.allclose(together.params[key][0], together.params[key][2])


def test_equal_values_take_the_plain_path_bit_for_bit(digits) -> None:  # noqa: ANN001
    recipe = Recipe(lr=0.05, momentum=0.9, weight_decay=0.01, batch_size=64, steps=10)
    kw = {"model_kwargs": {"widths": (16,)}, "seeds": [0, 1, 2]}
    plain = fit_many("mlp", digits, labels_for(digits, 3), recipe, **kw)
    same = fit_many(
        "mlp", digits, labels_for(digits, 3), recipe, lrs=[0.05] * 3, weight_decays=[0.01] * 3, **kw
    )
    for k in plain.params:
        assert torch.equal(plain.params[k], same.params[k])


def test_bad_per_model_values_are_one_line(digits) -> None:  # noqa: ANN001
    recipe = Recipe(batch_size=64, steps=2)
    with pytest.raises(TaskspaceError, match="lrs: got 2 values for 3 models"):
        fit_many("mlp", digits, labels_for(digits, 3), recipe, lrs=[0.1, 0.2])
    with pytest.raises(TaskspaceError, match="weight_decays must be >= 0"):
        fit_many("mlp", digits, labels_for(digits, 2), recipe, weight_decays=[0.1, -1])
