"""Nested configs: dotted keys, group selectors, YAML files, renamed keys, help, sweeps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from taskspace.cli import main as cli
from taskspace.commands.agreement import AgreementConfig
from taskspace.config import (
    apply_overrides,
    build_config,
    describe,
    flatten,
    load_config,
    option,
    sweep_points,
    to_dict,
)
from taskspace.errors import TaskspaceError
from taskspace.io import write_yaml


def test_dotted_keys_selectors_and_types() -> None:
    cfg = build_config(
        AgreementConfig,
        [
            "data=cifar10",
            "data.root=/x",
            "model=convnet",
            "model.kwargs={widths: [16, 32], pool: flatten}",
            "recipe=reference",
            "recipe.lr=2e-3",
            "launch=local",
            "launch.parallel=3",
            "pairs=2",
        ],
    )
    assert (cfg.data.name, cfg.data.root, cfg.model.name) == ("cifar10", "/x", "convnet")
    assert cfg.model.kwargs == {"widths": [16, 32], "pool": "flatten"}
    assert (cfg.recipe.preset, cfg.recipe.lr, cfg.launch.kind, cfg.launch.parallel) == (
        "reference",
        2e-3,
        "local",
        3,
    )
    recipe = cfg.recipe.resolve()
    assert (recipe.lr, recipe.batch_size, recipe.epochs) == (2e-3, 512, 100)


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["colour=blue"], "unknown option 'colour'"),
        (["sed=1"], "did you mean 'seed'"),
        (["pairs=two"], "pairs must be an integer, got 'two'"),
        (["recipe.lr=fast"], "recipe.lr must be a number"),
        (["root=/data"], "option 'root' is now 'data.root'"),
        (["epochs=3"], "option 'epochs' is now 'recipe.epochs'"),
        (["model_kwargs={widths: [4]}"], "now 'model.kwargs'"),
        (["pairs"], "expected key=value"),
    ],
)
def test_mistakes_are_one_clear_line(tokens: list[str], message: str) -> None:
    with pytest.raises(TaskspaceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config(AgreementConfig, tokens)


def test_yaml_files_nest_and_later_tokens_win(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    write_yaml(
        path, {"recipe": {"preset": "proxy", "steps": 7}, "model": "convnet", "num_tasks": 3}
    )
    cfg = build_config(AgreementConfig, [str(path), "num_tasks=4"])
    assert (cfg.recipe.preset, cfg.recipe.steps, cfg.model.name, cfg.num_tasks) == (
        "proxy",
        7,
        "convnet",
        4,
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: [1, 2\n")
    with pytest.raises(TaskspaceError, match="not valid YAML"):
        build_config(AgreementConfig, [str(bad)])


def test_round_trip_and_old_flat_run_configs(tmp_path: Path) -> None:
    cfg = build_config(AgreementConfig, ["model=convnet", "recipe.epochs=2", "seed=5"])
    path = tmp_path / "config.yaml"
    write_yaml(path, to_dict(cfg))
    assert load_config(AgreementConfig, path) == cfg
    # a run directory written before options were nested still reads
    write_yaml(
        path,
        {
            "data": "digits",
            "root": None,
            "model": "convnet",
            "epochs": 2.0,
            "seed": 5,
            "tasks_per_job": 4,
            "launch": "inprocess",
        },
    )
    old = load_config(AgreementConfig, path)
    assert (old.model.name, old.recipe.epochs, old.seed, old.launch.per_job) == (
        "convnet",
        2.0,
        5,
        4,
    )
    assert flatten(apply_overrides(cfg, {"recipe.lr": 0.5}))["recipe.lr"] == 0.5


def test_help_has_a_line_per_option(capsys: pytest.CaptureFixture) -> None:
    text = describe(AgreementConfig)
    assert "recipe.lr=None  learning rate" in text
    assert "model.name='mlp'" in text and "(or model=...)" in text
    assert cli(["agreement", "--help"]) == 0
    assert "data.image_size=None" in capsys.readouterr().out


def test_sweep_grammar_expands_the_grid() -> None:
    fixed, points = sweep_points(
        ["recipe.lr=1e-4,1e-3", "seed=0,1,2", "num_tasks=1", "x.yaml", "targets=[0,11]"]
    )
    assert fixed == ["num_tasks=1", "x.yaml", "targets=[0,11]"]
    assert len(points) == 6 and points[0] == ["recipe.lr=0.0001", "seed=0"]
    assert points[-1] == ["recipe.lr=0.001", "seed=2"]
    assert sweep_points(["seed=range(0,3)"])[1] == [["seed=0"], ["seed=1"], ["seed=2"]]
    assert sweep_points(["a=1"]) == (["a=1"], [[]])


@dataclass
class _Method:
    name: str = option("erm", "method")
    lam: float = option(1.0, "strength")


@dataclass
class _JTT(_Method):
    name: str = option("jtt", "method")
    lambda_up: int = option(50, "upsampling factor")


@dataclass
class _Toy:
    RENAMED: ClassVar[dict[str, str]] = {"strength": "method.lam"}
    method: _Method = option(
        factory=_Method, selector="name", help="method group", choices={"erm": _Method, "jtt": _JTT}
    )
    n: list[int] | None = option(None, "a list")


def test_method_groups_lists_and_renames_on_a_toy_schema(tmp_path: Path) -> None:
    cfg = build_config(_Toy, ["method=jtt", "method.lam=50", "method.lambda_up=20", "n=0,11"])
    assert isinstance(cfg.method, _JTT)
    assert (cfg.method.lam, cfg.method.lambda_up, cfg.n) == (50.0, 20, [0, 11])
    assert build_config(_Toy, []).method == _Method()
    with pytest.raises(TaskspaceError, match="lambda_up"):  # erm has no lambda_up
        build_config(_Toy, ["method.lambda_up=20"])
    with pytest.raises(TaskspaceError, match="unknown method 'dro'; choose one of erm, jtt"):
        build_config(_Toy, ["method=dro"])
    with pytest.raises(TaskspaceError, match="'strength' is now 'method.lam'"):
        build_config(_Toy, ["strength=3"])
    path = tmp_path / "c.yaml"
    write_yaml(path, to_dict(cfg))
    assert load_config(_Toy, path) == cfg
