"""The course's own code (MLOps Zoomcamp, sections 2.2 to 4.3) written with trackkit.

One script per topic, each run from the repository root as ``python -m examples.course.<name>``,
on the backend ``TRACKKIT_BACKEND`` chooses: ``tracking``, ``autolog``, ``model_logging``,
``search``, ``registry``, ``stage_loading``, ``batch_scoring``; ``python -m examples.course``
runs them all in that order. See ``examples/course/README.md``.
"""

from __future__ import annotations

#: the course's experiment and registered model
EXPERIMENT = "nyc-taxi-experiment"
MODEL_NAME = "nyc-taxi-regressor"
#: where the batch-scoring runs go, apart from the training runs the registry searches
SCORING_EXPERIMENT = "nyc-taxi-scoring"
#: the scripts in the order the course takes them (and ``python -m examples.course`` runs them)
SCRIPTS = (
    "tracking",
    "autolog",
    "model_logging",
    "search",
    "registry",
    "stage_loading",
    "batch_scoring",
)
