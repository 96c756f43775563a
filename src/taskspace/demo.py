"""``taskspace demo``: the main job on the built-in digits data.

Runs ``taskspace agreement`` for human 5-vs-5 tasks and random tasks with the MLP learner
and prints the human-vs-random comparison (the paper's basic observation: a learner agrees
with itself on human labellings and not on random ones).
"""

from __future__ import annotations

from dataclasses import dataclass

from taskspace.agreement.run import AgreementConfig
from taskspace.agreement.run import main as agreement_main


@dataclass
class DemoConfig:
    """Options of ``taskspace demo``."""

    num_tasks: int = 16
    pairs: int = 1
    seed: int = 0
    out: str = "runs/demo"
    progress: bool = True


def main(cfg: DemoConfig) -> int:
    print("== agreement score on digits: human 5-vs-5 tasks vs random labellings (mlp) ==")
    return agreement_main(AgreementConfig(
        data="digits", model="mlp", tasks="human,random", num_tasks=cfg.num_tasks,
        pairs=cfg.pairs, seed=cfg.seed, out=f"{cfg.out}/agreement", progress=cfg.progress,
    ))
