"""A small hyperparameter search over xgboost, the course's hyperopt space: one run per trial,
all in the training experiment, so the registry step can pick the best of every run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import trackkit
from examples.ride_duration import EXPERIMENT
from examples.ride_duration.train import TrainingData, TrainResult, train

#: name -> (kind, low, high): "int" is uniform on integers, "log" log-uniform on reals
SPACE: dict[str, tuple[str, float, float]] = {
    "max_depth": ("int", 4, 20),
    "learning_rate": ("log", 0.05, 0.5),
    "min_child_weight": ("log", 0.5, 10.0),
    "reg_alpha": ("log", 1e-3, 1.0),
    "reg_lambda": ("log", 1e-3, 1.0),
}


def sample(
    rng: random.Random, space: Mapping[str, tuple[str, float, float]] = SPACE
) -> dict[str, Any]:
    """One point of ``space``, rounded so the logged params read well."""
    point: dict[str, Any] = {}
    for name, (kind, low, high) in space.items():
        if kind == "int":
            point[name] = rng.randint(int(low), int(high))
        else:
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
            point[name] = float(f"{value:.3g}")
    return point


def search(
    tracker: trackkit.Tracker,
    training: TrainingData,
    trials: int,
    *,
    experiment: str = EXPERIMENT,
    rounds: int = 100,
    seed: int = 42,
    tags: Mapping[str, str] | None = None,
) -> list[TrainResult]:
    """Train ``trials`` xgboost models on random points of :data:`SPACE` (same seed, same points)."""
    rng = random.Random(seed)
    results = []
    for trial in range(trials):
        params = sample(rng)
        results.append(
            train(
                tracker,
                training,
                "xgboost",
                params,
                experiment=experiment,
                rounds=rounds,
                seed=seed,
                tags={**(tags or {}), "search_trial": str(trial)},
                name=f"xgboost-search-{trial}",
            )
        )
    return results
