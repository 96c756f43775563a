"""The engine: train many models of one architecture at once, and predict with them.

``fit_many`` is the front door; samplers, objectives and hooks are the parts a training
method swaps (see :mod:`taskspace.engine.fit`).
"""

from taskspace.engine.batches import Batch, FitData
from taskspace.engine.ensemble import Ensemble
from taskspace.engine.fit import fit_many, init_models
from taskspace.engine.hooks import Checkpoint, Evaluate, Hook, Log
from taskspace.engine.metrics import Accuracy, Metric, WorstGroupAccuracy
from taskspace.engine.objectives import (
    LBTW,
    CrossEntropy,
    GroupDRO,
    MultiTask,
    Objective,
    SharedParams,
    StaticWeights,
    TaskWeighting,
    check_task_weights,
)
from taskspace.engine.predict import accuracy, predict_many
from taskspace.engine.recipe import PRESETS, Recipe, get_recipe
from taskspace.engine.samplers import (
    GroupBalanced,
    IndexLists,
    Permutation,
    Sampler,
    WeightedWithReplacement,
)

__all__ = [
    "PRESETS",
    "Accuracy",
    "Batch",
    "Checkpoint",
    "CrossEntropy",
    "Ensemble",
    "Evaluate",
    "FitData",
    "GroupBalanced",
    "GroupDRO",
    "Hook",
    "IndexLists",
    "LBTW",
    "Log",
    "Metric",
    "MultiTask",
    "Objective",
    "Permutation",
    "Recipe",
    "Sampler",
    "SharedParams",
    "StaticWeights",
    "TaskWeighting",
    "WeightedWithReplacement",
    "WorstGroupAccuracy",
    "accuracy",
    "check_task_weights",
    "fit_many",
    "get_recipe",
    "init_models",
    "predict_many",
]
