"""``taskspace demo``: the main job on the built-in digits data, in three stages.

1. ``agreement``: AS of human 5-vs-5 tasks vs random labellings with the reference MLP (a
   learner agrees with itself on human labellings, not on random ones).
2. ``discover``: task discovery on digits, then AS by kind under one protocol: discovered
   vs human vs random (the paper's central plot, ``discover/as_by_kind.png``).
3. ``split``: adversarial train/test splits from 4 reference targets x 4 discovered tasks,
   trained on adversarial and on random splits of the same sizes: the headline table.

Stages 1 and 2 write run directories under ``out`` and resume when rerun; ``stages=``
selects stages (the split stage needs the discovery run).
"""

from __future__ import annotations

from dataclasses import dataclass

from taskspace.agreement.run import AgreementConfig, format_summary
from taskspace.agreement.run import main as agreement_main
from taskspace.errors import TaskspaceError

STAGES = ("agreement", "discover", "split")


@dataclass
class DemoConfig:
    """Options of ``taskspace demo``."""

    num_tasks: int = 16
    pairs: int = 1
    seed: int = 0
    stages: str = "agreement,discover,split"
    out: str = "runs/demo"
    progress: bool = True


def main(cfg: DemoConfig) -> int:
    stages = [s.strip() for s in cfg.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise TaskspaceError(f"unknown demo stage(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(STAGES)}")
    if "agreement" in stages:
        print("== 1. agreement score on digits: human 5-vs-5 tasks vs random labellings ==")
        agreement_main(AgreementConfig(
            data="digits", model="mlp", tasks="human,random", num_tasks=cfg.num_tasks,
            pairs=cfg.pairs, seed=cfg.seed, out=f"{cfg.out}/agreement",
            progress=cfg.progress,
        ))
    if "discover" in stages or "split" in stages:
        from taskspace.discovery import discovery_demo_rows

        print("\n== 2. task discovery on digits: discovered vs human vs random tasks ==")
        summary = discovery_demo_rows(out=f"{cfg.out}/discover", num_tasks=cfg.num_tasks,
                                      progress=cfg.progress, seed=cfg.seed)
        print(format_summary(summary))
        print(f"run directory: {cfg.out}/discover (plot: as_by_kind.png)")
    if "split" in stages:
        _split_stage(cfg)
    return 0


def _split_stage(cfg: DemoConfig) -> None:
    from taskspace.data import load_dataset
    from taskspace.splits import format_headline, headline_table
    from taskspace.tasks import human_tasks, load_tasks
    from taskspace.tasks.builders import REFERENCE_TARGETS

    print("\n== 3. adversarial splits on digits: 4 targets x 4 discovered tasks ==")
    ds = load_dataset("digits", progress=False)
    humans = human_tasks(ds.classes, ds.num_classes, include_original=False)
    targets = humans.select(list(REFERENCE_TARGETS[:4]))
    discovered = load_tasks(f"{cfg.out}/discover/tasks.npz")
    found = discovered.select(list(range(min(4, len(discovered)))))
    rows = headline_table(ds, targets, found, model="mlp", recipe="fast", seed=cfg.seed,
                          progress=cfg.progress)
    print(format_headline(rows))
