"""The course's hyperparameter search over xgboost, with hyperopt: one parent run for the
search and one run per trial under it.

``trackkit.integrations.hyperopt.tracked`` wraps the objective: each evaluation is a child run
of the search's run (MLflow nests them in its UI), or, on a backend without nested runs
(W&B, Neptune), a run in the same experiment tagged ``trackkit.search_run_id`` with the
search's run id. Each trial logs what a training run logs, so the registry step picks the
best of every run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import trackkit
from examples.ride_duration import EXPERIMENT
from examples.ride_duration.train import TrainingData, TrainResult, developer, train

#: name -> (kind, low, high): "int" is uniform on integers, "log" log-uniform on reals
SPACE: dict[str, tuple[str, float, float]] = {
    "max_depth": ("int", 4, 20),
    "learning_rate": ("log", 0.05, 0.5),
    "min_child_weight": ("log", 0.5, 10.0),
    "reg_alpha": ("log", 1e-3, 1.0),
    "reg_lambda": ("log", 1e-3, 1.0),
}
SEARCH_RUN_NAME = "xgboost-search"


def hyperopt_space(space: Mapping[str, tuple[str, float, float]] = SPACE) -> dict[str, Any]:
    """:data:`SPACE` in hyperopt's terms, as the course writes it (``hp.quniform``,
    ``hp.loguniform``)."""
    from hyperopt import hp

    found: dict[str, Any] = {}
    for name, (kind, low, high) in space.items():
        if kind == "int":
            found[name] = hp.quniform(name, low, high, 1)
        else:
            found[name] = hp.loguniform(name, math.log(low), math.log(high))
    return found


def readable(point: Mapping[str, Any]) -> dict[str, Any]:
    """A sampled point as xgboost params: integers where the space is integral, 3 digits else."""
    return {
        name: int(value) if SPACE[name][0] == "int" else float(f"{float(value):.3g}")
        for name, value in point.items()
    }


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
    """Train ``trials`` xgboost models on points hyperopt's TPE picks (same seed, same points).

    The trials are runs under one parent run named ``xgboost-search``; each returns its
    validation rmse to hyperopt as the loss.
    """
    import numpy as np
    from hyperopt import STATUS_OK, Trials, fmin, tpe

    from trackkit.integrations.hyperopt import tracked

    results: list[TrainResult] = []

    def objective(point: dict[str, Any]) -> dict[str, Any]:
        number = len(results)
        result = train(
            tracker,
            training,
            "xgboost",
            readable(point),
            experiment=experiment,
            rounds=rounds,
            seed=seed,
            tags={**(tags or {}), "search_trial": str(number)},
            run=trackkit.active_run(),  # the trial's run, which tracked() started
        )
        results.append(result)
        return {"loss": result.rmse, "status": STATUS_OK}

    # the module-level functions (and so tracked()) use this tracker during the search
    trackkit.set_tracker(tracker)
    try:
        # the parent holds the search's settings; the flow_id tag marks training runs only
        search_tags = {"developer": developer(), "search": "hyperopt-tpe"}
        with trackkit.start_run(experiment=experiment, name=SEARCH_RUN_NAME, tags=search_tags):
            trackkit.log_params(
                {"trials": trials, "seed": seed, "space": {k: list(v) for k, v in SPACE.items()}}
            )
            fmin(
                fn=tracked(objective, run_name=f"{SEARCH_RUN_NAME}-"),
                space=hyperopt_space(),
                algo=tpe.suggest,
                max_evals=trials,
                trials=Trials(),
                rstate=np.random.default_rng(seed),
                show_progressbar=False,
            )
            if results:
                trackkit.log_metric("best_rmse", min(r.rmse for r in results))
    finally:
        trackkit.set_tracker(None)
    return results
