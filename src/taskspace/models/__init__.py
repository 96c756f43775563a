"""Model zoo: every learner and backbone is built by name through :func:`create_model`.

Registered names: ``mlp``, ``resnet18``, ``resnet50``, ``vit4`` (the reference architectures)
and ``convnet`` (a small fast CNN); ``tv:<name>`` builds a torchvision model when torchvision
is installed. Every model is a :class:`Classifier` with ``features``, ``feature_dim`` and
``head``, and works under ``torch.vmap`` with stacked parameters and under double backward.
"""

from taskspace.models import convnet, mlp, resnet, vit  # noqa: F401  (register the models)
from taskspace.models.classifier import Classifier
from taskspace.models.factory import create_model
from taskspace.models.registry import list_models, register_model

__all__ = ["Classifier", "create_model", "list_models", "register_model"]
