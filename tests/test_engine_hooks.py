"""Hooks and saved state: evaluation with best-model selection, checkpoints that resume to
exactly the uninterrupted result, logging, and Ensemble save/load."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from taskspace.engine import (
    Accuracy,
    Checkpoint,
    Ensemble,
    Evaluate,
    GroupDRO,
    Hook,
    Log,
    MultiTask,
    Recipe,
    WeightedWithReplacement,
    WorstGroupAccuracy,
    fit_many,
    predict_many,
)
from taskspace.engine.state import flatten_state, load_state, save_state, unflatten_state
from taskspace.errors import TaskspaceError
from test_engine import SMALL, _labels, _max_rel


def _groups(digits, labels: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    return 2 * labels + (digits.classes >= 5).long()


def test_evaluate_keeps_the_best_model_by_worst_group_accuracy(digits):
    labels = _labels(digits, 2)
    groups = _groups(digits, labels)
    val = digits.split("heldout")
    metrics = {"acc": Accuracy(labels), "wga": WorstGroupAccuracy(labels, groups)}
    recipe = Recipe(optimizer="sgd", lr=0.2, momentum=0.9, epochs=4, batch_size=64)
    hooks = {
        b: Evaluate(
            {"val": val, "train": digits.split("train")[:200]}, metrics, select=("val", "wga")
        )
        for b in (True, False)
    }
    ens = {
        b: fit_many(
            "mlp",
            digits,
            labels,
            recipe,
            seeds=[1, 2],
            batched=b,
            hooks=[hooks[b]],
            model_kwargs=SMALL,
        )
        for b in (True, False)
    }
    rows = hooks[True].history
    assert len(rows) == 2 * 4 * 2 * 2  # models x epochs x sets x metrics
    assert sorted({r["epoch"] for r in rows if r["model"] == 0}) == pytest.approx(
        [1, 2, 3, 4], abs=0.1
    )
    for r, s in zip(rows, hooks[False].history):
        assert (r["model"], r["step"], r["set"], r["metric"]) == (
            s["model"],
            s["step"],
            s["set"],
            s["metric"],
        )
        assert r["value"] == pytest.approx(s["value"], abs=0.02)
    wga = WorstGroupAccuracy(labels, groups)(predict_many(ens[True], digits, val), val, [0, 1])
    for m in range(2):
        best, step = hooks[True].best[m]
        ours = [
            r["value"]
            for r in rows
            if r["model"] == m and r["set"] == "val" and r["metric"] == "wga"
        ]
        assert best == max(ours) and float(wga[m]) == pytest.approx(best, abs=1e-6)
        assert (
            best
            <= min(
                r["value"]
                for r in rows
                if r["model"] == m
                and r["set"] == "val"
                and r["metric"] == "acc"
                and r["step"] == step
            )
            + 1e-9
        )


class Crash(Hook):
    """Test double: stops the fit (like a killed job) after step ``step`` of ``chunk``."""

    def __init__(self, chunk: int, step: int) -> None:
        self.chunk, self.step = chunk, step

    def on_step_end(self, ctx) -> None:  # noqa: ANN001
        if (ctx.chunk, ctx.step) == (self.chunk, self.step):
            raise KeyboardInterrupt


class CountSteps(Hook):
    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, ctx) -> None:  # noqa: ANN001
        self.steps += 1


def _resumable_fit(digits, batched: bool, hooks: list[Hook]) -> Ensemble:  # noqa: ANN001
    """Three models in two chunks: momentum, weight decay, augmentation, a weighted
    sampler, Group DRO's state and an evaluation hook that keeps the best models."""
    labels = _labels(digits, 3)
    g = torch.Generator().manual_seed(0)
    recipe = Recipe(
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-3,
        epochs=1,
        batch_size=64,
        augment=True,
        crop_padding=1,
        schedule="cosine",
    )
    return fit_many(
        "mlp",
        digits,
        labels,
        recipe,
        seeds=[1, 2, 3],
        order_seeds=[0, 0, 1],
        groups=_groups(digits, labels),
        objective=GroupDRO(eta=0.3),
        sampler=WeightedWithReplacement(torch.rand(len(digits), generator=g), 640),
        chunk_size=2,
        batched=batched,
        hooks=hooks,
        model_kwargs=SMALL,
    )


def _evaluate(digits) -> Evaluate:  # noqa: ANN001
    labels = _labels(digits, 3)
    return Evaluate(
        {"val": digits.split("heldout")}, {"acc": Accuracy(labels)}, every=4, select=("val", "acc")
    )


@pytest.mark.parametrize("batched", [True, False])
def test_fit_resumed_from_a_checkpoint_equals_an_uninterrupted_fit(digits, tmp_path, batched):
    ev = _evaluate(digits)
    whole = _resumable_fit(digits, batched, [ev])
    for crash in (Crash(0, 7), Crash(1, 6)):  # inside the first chunk, then the second
        path = tmp_path / f"fit-{crash.chunk}.safetensors"
        with pytest.raises(KeyboardInterrupt):
            _resumable_fit(digits, batched, [_evaluate(digits), crash, Checkpoint(path, 5)])
        saved = load_state(path)
        assert (saved["chunk"], saved["step"]) == (crash.chunk, 5)
        ev2, count = _evaluate(digits), CountSteps()
        resumed = _resumable_fit(digits, batched, [ev2, count, Checkpoint(path, 5)])
        for k in whole.params:
            assert torch.equal(whole.params[k], resumed.params[k]), k
        for k in whole.buffers:
            assert torch.equal(whole.buffers[k], resumed.buffers[k]), k
        assert torch.equal(whole.objective_state["q"], resumed.objective_state["q"])
        assert ev2.history == ev.history and ev2.best == ev.best
        assert count.steps == (10 - 5) + (10 if crash.chunk == 0 else 0)  # 10 steps a chunk
        again = CountSteps()  # a finished fit: nothing left to train
        done = _resumable_fit(digits, batched, [_evaluate(digits), again, Checkpoint(path, 5)])
        assert again.steps == 0 and torch.equal(
            done.params["head.weight"], whole.params["head.weight"]
        )


def test_checkpoint_of_another_fit_is_refused(digits, tmp_path):
    path = tmp_path / "fit.safetensors"
    recipe = Recipe(optimizer="sgd", lr=0.05, steps=3, batch_size=64)
    fit_many(
        "mlp", digits, _labels(digits, 1), recipe, hooks=[Checkpoint(path, 2)], model_kwargs=SMALL
    )
    with pytest.raises(TaskspaceError, match="other arguments"):
        fit_many(
            "mlp",
            digits,
            _labels(digits, 2)[1:],
            recipe,
            hooks=[Checkpoint(path, 2)],
            model_kwargs=SMALL,
        )


def test_log_hook_reports_losses(digits, caplog):
    recipe = Recipe(optimizer="sgd", lr=0.05, steps=4, batch_size=64)
    with caplog.at_level(logging.INFO, logger="taskspace.engine"):
        fit_many(
            "mlp",
            digits,
            _labels(digits, 2),
            recipe,
            hooks=[Log(every=2)],
            mlp_step=False,
            model_kwargs=SMALL,
        )
    lines = [r.getMessage() for r in caplog.records]
    assert "chunk 0 step 4/4 loss" in lines[1] and len(lines) == 3


def test_ensemble_save_load_round_trips_predictions(digits, tmp_path):
    labels = torch.stack([_labels(digits, 2).T] * 2)  # [2, N, 2]: two heads each
    ens = fit_many(
        "convnet",
        digits,
        labels,
        Recipe(steps=3, batch_size=32),
        seeds=0,
        objective=MultiTask(),
        model_kwargs={"widths": (8, 16)},
    )
    sidecar = ens.save(tmp_path / "stage1")
    meta = json.loads(sidecar.read_text())
    assert meta["model_name"] == "convnet" and meta["num_tasks"] == 2
    back = Ensemble.load(tmp_path / "stage1.safetensors")
    assert (back.num_outputs, back.num_tasks, back.model_kwargs) == (4, 2, {"widths": (8, 16)})
    idx = digits.split("test")[:100]
    assert torch.equal(predict_many(back, digits, idx), predict_many(ens, digits, idx))
    assert _max_rel(back.params, ens.params) == 0
    assert torch.equal(back.objective_state["task_weights"], ens.objective_state["task_weights"])
    with pytest.raises(TaskspaceError, match="no saved ensemble"):
        Ensemble.load(tmp_path / "missing")


def test_state_files_round_trip_nested_state(tmp_path):
    tree = {
        "opt": {0: {"step": torch.tensor(3.0), "buf": torch.ones(2, 3)}},
        "seen": torch.tensor([True, False]),
        "betas": (0.9, 0.99),
        "lr": 0.1,
        "rows": [{"a": None, "b": "x"}],
        "gen": torch.Generator().get_state(),
    }
    skeleton, tensors = flatten_state(tree)
    assert json.loads(json.dumps(skeleton)) == skeleton
    for back in (
        unflatten_state(skeleton, tensors),
        load_state(save_state(tmp_path / "s.safetensors", tree)),
    ):
        assert back["betas"] == (0.9, 0.99) and back["rows"] == tree["rows"]
        assert list(back["opt"]) == [0] and torch.equal(back["opt"][0]["buf"], torch.ones(2, 3))
        assert torch.equal(back["seen"], tree["seen"]) and torch.equal(back["gen"], tree["gen"])
