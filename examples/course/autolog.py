"""Course 2.3: autologging. Each fit logs its params, metrics and model by itself.

    python -m examples.course.autolog

``trackkit.autolog()`` replaces ``mlflow.autolog()`` / ``mlflow.xgboost.autolog()`` and does the
same on every backend: xgboost's validation rmse at each round (the round is the step), the
training params, and the booster with its signature.
"""

from __future__ import annotations

from typing import Any

import xgboost as xgb
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LinearRegression, Ridge

import trackkit
from examples.course import EXPERIMENT
from examples.course.common import TARGET, TRAIN, VALID, env_int, read_dataframe, vectorize

PARAMS = {
    "learning_rate": 0.3,
    "max_depth": 6,
    "min_child_weight": 1.0,
    "objective": "reg:squarederror",
    "tree_method": "approx",
    "seed": 42,
}


def main(tracker: trackkit.Tracker | None = None) -> dict[str, Any]:
    if tracker is not None:
        trackkit.set_tracker(tracker)
    trackkit.set_experiment(EXPERIMENT)
    rounds = env_int("COURSE_ROUNDS", 30)

    df_train, df_val = read_dataframe(TRAIN), read_dataframe(VALID)
    dv = DictVectorizer()
    X_train, X_val = vectorize(dv, df_train, fit=True), vectorize(dv, df_val)
    y_train, y_val = df_train[TARGET].values, df_val[TARGET].values

    trackkit.autolog()
    try:
        train = xgb.DMatrix(X_train, label=y_train)
        valid = xgb.DMatrix(X_val, label=y_val)
        with trackkit.start_run(name="xgboost-autolog") as xgb_run:
            trackkit.set_tag("model", "xgboost")
            xgb.train(
                PARAMS,
                dtrain=train,
                num_boost_round=rounds,
                evals=[(valid, "validation")],
                early_stopping_rounds=5,
                verbose_eval=False,
            )

        # no active run: the fit starts a run of its own and ends it, as MLflow's autolog does
        LinearRegression().fit(X_train, y_train)
        own = trackkit.last_active_run()

        # a run of the Tracker API is the active run inside its `with` block
        with trackkit.get_default_tracker().start_run(
            experiment=EXPERIMENT, name="ridge-autolog"
        ) as ridge_run:
            Ridge(alpha=1.0).fit(X_train, y_train)
    finally:
        trackkit.autolog(disable=True)

    assert own is not None
    print(f"xgboost, autologged: run {xgb_run.id} ({rounds} rounds at most)")
    print(f"linear regression, in a run autolog started: run {own.id}")
    print(f"ridge, autologged into `with tracker.start_run()`: run {ridge_run.id}")
    return {"xgboost": xgb_run.id, "linear": own.id, "ridge": ridge_run.id, "rounds": rounds}


if __name__ == "__main__":
    main()
