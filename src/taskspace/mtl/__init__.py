"""Which tasks to train together: task weighting, TAG / CS / HOA affinities, network
selection, and the grouping pipeline (affinity -> selection -> group training)."""

from taskspace.mtl.affinity import AffinityResult, GradientCosine, TagAffinity, task_affinity
from taskspace.mtl.hoa import HoaResult, fit_groups, hoa_affinity
from taskspace.mtl.pipeline import GroupingResult, group_tasks
from taskspace.mtl.planted import load_planted
from taskspace.mtl.selection import (
    Selection,
    evaluate_grouping,
    original_enumeration_count,
    parse_grouping,
    select_groups,
    select_groups_all,
)
from taskspace.mtl.weighting import (
    WEIGHTINGS,
    EqualWeights,
    GradNorm,
    PCGrad,
    UncertaintyWeighting,
    make_weighting,
)

__all__ = [
    "WEIGHTINGS",
    "AffinityResult",
    "EqualWeights",
    "GradNorm",
    "GradientCosine",
    "GroupingResult",
    "HoaResult",
    "PCGrad",
    "Selection",
    "TagAffinity",
    "UncertaintyWeighting",
    "evaluate_grouping",
    "fit_groups",
    "group_tasks",
    "hoa_affinity",
    "load_planted",
    "make_weighting",
    "original_enumeration_count",
    "parse_grouping",
    "select_groups",
    "select_groups_all",
    "task_affinity",
]
