"""The course's ride-duration workflow on trackkit: data, tracked training, a hyperparameter
search, the model registry, batch scoring and a web service, on any backend.

Run the whole flow from the repository root with ``python -m examples.ride_duration``; see
``examples/ride_duration/README.md``.
"""

from __future__ import annotations

#: the registered model's name
MODEL_NAME = "ride-duration"
#: where the training and search runs go
EXPERIMENT = "ride-duration"
#: where the batch-scoring runs go (kept apart, so searching for the best model sees only
#: training runs)
SCORING_EXPERIMENT = f"{EXPERIMENT}-scoring"
#: the model the batch job and the web service use
PRODUCTION_URI = f"models:/{MODEL_NAME}@production"
