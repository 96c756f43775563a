"""The engine: train many models of one architecture at once, and predict with them."""

from taskspace.engine.fit import Ensemble, accuracy, fit_many, init_models, predict_many
from taskspace.engine.recipe import PRESETS, Recipe, get_recipe

__all__ = ["PRESETS", "Ensemble", "Recipe", "accuracy", "fit_many", "get_recipe", "init_models",
           "predict_many"]
