"""The built-in report sections; importing this package registers them, in page order."""

from taskspace.report.sections import (
    agreement,
    discovery,
    pretrain,
    robust,
    splits,
    spurious,
    sweep,
)

__all__ = ["agreement", "discovery", "pretrain", "robust", "splits", "spurious", "sweep"]
