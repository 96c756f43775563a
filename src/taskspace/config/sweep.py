"""Sweep grammar: ``key=a,b,c`` (and Hydra's ``range(...)``, ``choice(...)``) expanded to
the grid of points, through Hydra's override parser.

Only used after ``-m`` / ``--multirun``: without it a comma is part of a value (a list).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from taskspace.errors import TaskspaceError

__all__ = ["sweep_points"]


def sweep_points(tokens: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Split ``tokens`` into fixed tokens and the grid of swept ``key=value`` tokens.

    Returns ``(fixed, points)``: ``points`` is the Cartesian product of every swept key's
    values, in the order given (the last key varies fastest); one empty point when nothing
    is swept. YAML files stay fixed tokens.
    """
    fixed: list[str] = []
    axes: list[list[str]] = []
    parser = OverridesParser.create()
    for tok in tokens:
        if "=" not in tok:
            fixed.append(tok)
            continue
        try:
            (ov,) = parser.parse_overrides([tok])
        except HydraException as err:
            first = str(err).strip().splitlines()
            raise TaskspaceError(
                f"cannot parse sweep {tok!r}: {first[0] if first else err}"
            ) from None
        if not ov.is_sweep_override():
            fixed.append(tok)
            continue
        key = ov.get_key_element()
        values = list(ov.sweep_string_iterator())
        if not values:
            raise TaskspaceError(f"sweep {tok!r} has no values")
        axes.append([f"{key}={v}" for v in values])
    return fixed, [list(p) for p in itertools.product(*axes)]
