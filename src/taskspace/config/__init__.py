"""Configs: nested dataclass schemas parsed, merged and type-checked by OmegaConf, with
dotted overrides, YAML files, help lines and sweeps (Hydra's override grammar)."""

from taskspace.config.parse import (
    apply_overrides,
    build_config,
    describe,
    flatten,
    leaf_fields,
    load_config,
    option,
    to_dict,
)
from taskspace.config.sweep import sweep_points

__all__ = [
    "apply_overrides",
    "build_config",
    "describe",
    "flatten",
    "leaf_fields",
    "load_config",
    "option",
    "sweep_points",
    "to_dict",
]
