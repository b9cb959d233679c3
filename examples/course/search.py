"""Course 2.3: the xgboost hyperparameter search with hyperopt, each trial a child run.

    python -m examples.course.search

The course's objective with ``mlflow`` replaced by ``trackkit``, wrapped by
``trackkit.integrations.hyperopt.tracked``: each evaluation runs in a child run of the
``xgboost-search`` run (MLflow nests them in its UI; W&B keeps the link as a group and a config
entry, Neptune as a field), holding the sampled params and the rmse. ``COURSE_TRIALS`` sets
the number of trials (default 5).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xgboost as xgb
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe
from hyperopt.pyll import scope
from sklearn.feature_extraction import DictVectorizer

import trackkit
from examples.course import EXPERIMENT
from examples.course.common import TARGET, TRAIN, VALID, env_int, read_dataframe, rmse, vectorize
from trackkit.integrations.hyperopt import tracked

SEARCH_SPACE = {
    "max_depth": scope.int(hp.quniform("max_depth", 4, 30, 1)),
    "learning_rate": hp.loguniform("learning_rate", -3, 0),
    "reg_alpha": hp.loguniform("reg_alpha", -5, -1),
    "reg_lambda": hp.loguniform("reg_lambda", -6, -1),
    "min_child_weight": hp.loguniform("min_child_weight", -1, math.log(3)),
    "objective": "reg:squarederror",
    "tree_method": "approx",
    "seed": 42,
}


def main(tracker: trackkit.Tracker | None = None) -> dict[str, Any]:
    if tracker is not None:
        trackkit.set_tracker(tracker)
    trackkit.set_experiment(EXPERIMENT)
    trials, rounds = env_int("COURSE_TRIALS", 5), env_int("COURSE_ROUNDS", 30)

    df_train, df_val = read_dataframe(TRAIN), read_dataframe(VALID)
    dv = DictVectorizer()
    X_train, X_val = vectorize(dv, df_train, fit=True), vectorize(dv, df_val)
    y_val = df_val[TARGET].values
    train = xgb.DMatrix(X_train, label=df_train[TARGET].values)
    valid = xgb.DMatrix(X_val, label=y_val)

    def objective(params: dict[str, Any]) -> dict[str, Any]:
        # the course opens `with mlflow.start_run():` here; tracked() opens the trial's run
        trackkit.set_tag("model", "xgboost")
        booster = xgb.train(
            params=params,
            dtrain=train,
            num_boost_round=rounds,
            evals=[(valid, "validation")],
            early_stopping_rounds=5,
            verbose_eval=False,
        )
        score = rmse(y_val, booster.predict(valid))
        trackkit.log_metric("rmse", score)
        return {"loss": score, "status": STATUS_OK}

    with trackkit.start_run(name="xgboost-search") as search:
        trackkit.set_tag("search", "hyperopt-tpe")
        trackkit.log_params({"trials": trials, "max_rounds": rounds})
        found = Trials()
        best = fmin(
            fn=tracked(objective, metric="loss", run_name="trial-"),
            space=SEARCH_SPACE,
            algo=tpe.suggest,
            max_evals=trials,
            trials=found,
            rstate=np.random.default_rng(42),
            show_progressbar=False,
        )
        trackkit.log_metric("best_rmse", min(found.losses()))
    print(f"xgboost search: run {search.id}, {trials} trials as its child runs")
    print(f"best: { {name: round(float(value), 4) for name, value in best.items()} }")
    return {"search": search.id, "trials": trials, "best_rmse": min(found.losses())}


if __name__ == "__main__":
    main()
