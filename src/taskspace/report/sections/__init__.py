"""The built-in report sections; importing this package registers them, in page order."""

from taskspace.report.sections import (
    affinity,
    agreement,
    discovery,
    embed,
    group,
    pretrain,
    robust,
    splits,
    spurious,
    sweep,
)

__all__ = [
    "affinity",
    "agreement",
    "discovery",
    "embed",
    "group",
    "pretrain",
    "robust",
    "splits",
    "spurious",
    "sweep",
]
