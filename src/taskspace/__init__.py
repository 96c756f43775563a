"""taskspace: study the space of tasks (labellings) over a fixed set of images.

Capabilities: agreement score (AS) of any labelling for any learner, task discovery by
AS meta-optimisation, adversarial train/test splits. See README.md for the quick start.
"""

from taskspace.errors import TaskspaceError

__version__ = "0.1.0"
__all__ = ["TaskspaceError", "__version__"]
