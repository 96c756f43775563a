"""The ``taskspace`` command: ``taskspace <command> [-m] key=value ... [config.yaml ...]``.

Dispatch only. Each command is a module of :mod:`taskspace.commands` with a config
dataclass and ``main(cfg) -> int``, listed in :data:`COMMANDS`. ``-m`` / ``--multirun``
turns comma-separated values into a sweep (one run per point, see
:mod:`taskspace.runs.sweep`). User mistakes (:class:`TaskspaceError`) print one line on
stderr and exit with status 2.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

from taskspace.config import build_config, describe, sweep_points
from taskspace.errors import TaskspaceError
from taskspace.report.page import build_report
from taskspace.runs import LaunchOptions, best_point, run_sweep

#: command -> (module, config class, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "agreement": (
        "taskspace.commands.agreement",
        "AgreementConfig",
        "agreement score of human, random or table tasks",
    ),
    "demo": (
        "taskspace.commands.demo",
        "DemoConfig",
        "the main job on digits: AS, task discovery, adversarial splits",
    ),
    "affinity": (
        "taskspace.commands.affinity",
        "AffinityConfig",
        "which tasks help which: TAG lookahead, gradient cosine (CS) or HOA pair training",
    ),
    "discover": (
        "taskspace.commands.discover",
        "DiscoverConfig",
        "task discovery: meta-train a task encoder, write the tasks it finds",
    ),
    "embed": (
        "taskspace.commands.embed",
        "EmbedConfig",
        "Task2Vec: task embeddings from a probe's Fisher, distances, nearest tasks",
    ),
    "group": (
        "taskspace.commands.group",
        "GroupConfig",
        "exact network selection: at most B task groups from an affinity matrix",
    ),
    "mtl": (
        "taskspace.commands.mtl",
        "MtlConfig",
        "several groupings in one network (static weights, LBTW) vs one network each",
    ),
    "pretrain": (
        "taskspace.commands.pretrain",
        "PretrainConfig",
        "SimCLR backbone for regulated discovery (discover backbone=...)",
    ),
    "report": (
        "taskspace.commands.report",
        "ReportConfig",
        "one HTML page (report.html) for one or several run directories",
    ),
    "robust": (
        "taskspace.commands.robust",
        "RobustConfig",
        "group-robust training: ERM, JTT, RWY, RWG, SUBY, SUBG, Group DRO",
    ),
    "spurious": (
        "taskspace.commands.spurious",
        "SpuriousConfig",
        "spurious-correlation identification: per-attribute models, delta matrix, clusters",
    ),
    "split": (
        "taskspace.commands.split",
        "SplitConfig",
        "adversarial train/test splits from discovered (or given) tasks",
    ),
    "split-eval": (
        "taskspace.commands.split_eval",
        "SplitEvalConfig",
        "train on adversarial and random splits: the headline table",
    ),
}

MULTIRUN = ("-m", "--multirun")
#: The sweep's own options (how points fan out), given as ``sweep.<key>=...``.
SWEEP_PREFIX = "sweep."


def usage() -> str:
    lines = ["usage: taskspace <command> [-m] [key=value ...] [config.yaml ...]", "", "commands:"]
    lines += [f"  {name:<12} {spec[2]}" for name, spec in COMMANDS.items()]
    lines += [
        "",
        "taskspace <command> --help lists a command's options and defaults.",
        "-m sweeps: taskspace agreement -m recipe.lr=1e-4,1e-3 seed=0,1,2 "
        "(sweep.launch=local sweep.parallel=2 fan the points out)",
    ]
    return "\n".join(lines)


def _command(name: str) -> tuple[Any, type]:
    module_name, cls_name, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    return module, getattr(module, cls_name)


def run_tokens(name: str, tokens: list[str]) -> int:
    """Build command ``name``'s config from ``tokens`` and run it (a sweep point's job)."""
    module, cls = _command(name)
    positional = getattr(cls, "POSITIONAL", None)
    plain = [t for t in tokens if "=" not in t and not t.endswith((".yaml", ".yml"))]
    cfg: Any = build_config(cls, [t for t in tokens if t not in plain] if positional else tokens)
    if positional:
        setattr(cfg, positional, plain)
    return int(module.main(cfg) or 0)


def _check_tokens(name: str) -> Any:
    _, cls = _command(name)
    return lambda tokens: build_config(cls, tokens)


def _sweep(name: str, tokens: list[str]) -> int:
    own = [t for t in tokens if t.startswith(SWEEP_PREFIX)]
    rest = [t for t in tokens if not t.startswith(SWEEP_PREFIX)]
    launch = build_config(
        LaunchOptions, [t[len(SWEEP_PREFIX) :].replace("launch=", "kind=", 1) for t in own]
    )
    fixed, points = sweep_points(rest)
    out = next((t.split("=", 1)[1] for t in fixed if t.startswith("out=")), None)
    folder = run_sweep(name, fixed, points, run_tokens, _check_tokens(name), launch, out)
    print(f"sweep of {len(points)} points: {folder / 'sweep.csv'}")
    metric = getattr(_command(name)[0], "SWEEP_SELECT", None)
    best = best_point(folder, metric) if metric else None
    if metric and best is not None:
        cols = list(best)  # point, the swept options, finished, run_dir, metrics
        chosen = " ".join(f"{k}={best[k]}" for k in cols[1 : cols.index("finished")])
        print(f"best point by {metric} ({best[metric]}): {chosen} ({best['run_dir']})")
    report = next((t.split("=", 1)[1] for t in fixed if t.startswith("report=")), "true")
    if report.strip().lower() not in ("false", "0", "no", "off"):
        print(f"report: {build_report([folder])}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, tokens = args[0], args[1:]
    if name not in COMMANDS:
        print(f"taskspace: error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if "-h" in tokens or "--help" in tokens:
        module, cls = _command(name)
        doc = (module.__doc__ or COMMANDS[name][2]).strip()
        print(
            f"usage: taskspace {name} [-m] [key=value ...] [config.yaml ...]\n\n{doc}\n\n"
            f"options (key=default):\n{describe(cls)}"
        )
        return 0
    multirun = any(t in MULTIRUN for t in tokens)
    tokens = [t for t in tokens if t not in MULTIRUN]
    try:
        return _sweep(name, tokens) if multirun else run_tokens(name, tokens)
    except TaskspaceError as err:
        print(f"taskspace {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"taskspace {name}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
