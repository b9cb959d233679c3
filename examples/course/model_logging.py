"""Course 2.4: logging models so they can be loaded back, with their signature.

    python -m examples.course.model_logging

Three linear models as scikit-learn pipelines (the vectorizer and the regressor, so they take
the ride dicts) with an input example, from which their signature is inferred; the course's
xgboost booster with its best params (``mlflow.xgboost.log_model(booster, "models_mlflow")``);
the course's pickled ``(dv, model)`` pair as any picklable object; and the vectorizer as the
``preprocessor`` artifact the registry section downloads.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import xgboost as xgb
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import Lasso, LinearRegression, Ridge
from sklearn.pipeline import make_pipeline

import trackkit
from examples.course import EXPERIMENT
from examples.course.common import (
    TARGET,
    TRAIN,
    VALID,
    developer,
    env_int,
    month_path,
    read_dataframe,
    rmse,
    to_dicts,
    vectorize,
)
from examples.ride_duration.train import int32_indices

#: the course's best xgboost params (found by the search)
BEST_PARAMS = {
    "learning_rate": 0.09585355369315604,
    "max_depth": 30,
    "min_child_weight": 1.060597050922164,
    "objective": "reg:squarederror",
    "reg_alpha": 0.018060244040060163,
    "reg_lambda": 0.011658731377413597,
    "seed": 42,
    "tree_method": "approx",
}
LINEAR = {
    "linear_regression": LinearRegression,
    "lasso": lambda: Lasso(alpha=0.001),
    "ridge": lambda: Ridge(alpha=1.0),
}


def main(tracker: trackkit.Tracker | None = None) -> dict[str, Any]:
    if tracker is not None:
        trackkit.set_tracker(tracker)
    trackkit.set_experiment(EXPERIMENT)
    rounds = env_int("COURSE_ROUNDS", 30)

    df_train, df_val = read_dataframe(TRAIN), read_dataframe(VALID)
    train_dicts, val_dicts = to_dicts(df_train), to_dicts(df_val)
    y_train, y_val = df_train[TARGET].values, df_val[TARGET].values
    Path("models").mkdir(exist_ok=True)
    runs: dict[str, str] = {}

    for model_type, make in LINEAR.items():
        with trackkit.start_run(name=model_type) as run:
            trackkit.set_tags({"developer": developer(), "model": model_type})
            trackkit.log_params(
                {
                    "train-data-path": str(month_path(TRAIN)),
                    "valid-data-path": str(month_path(VALID)),
                }
            )
            pipeline = make_pipeline(DictVectorizer(), int32_indices(), make())
            pipeline.fit(train_dicts, y_train)
            trackkit.log_metric("rmse", rmse(y_val, pipeline.predict(val_dicts)))
            dv = pipeline.steps[0][1]
            with open("models/preprocessor.b", "wb") as f_out:
                pickle.dump(dv, f_out)
            trackkit.log_artifact("models/preprocessor.b", "preprocessor")
            # the signature (PU_DO: string, trip_distance: double -> a double) comes from
            # the input example
            ref = trackkit.log_model(pipeline, "model", input_example=val_dicts[:5])
            # the model's URI as the backend names it, which the registry section registers
            # (MLflow 3: the logged model's models:/m-...; Neptune: runs:/<run_id>/model;
            # W&B: the model artifact's wandb-artifact:///...)
            trackkit.set_tag("model_uri", ref.uri)
        runs[model_type] = run.id
        print(f"{model_type}: run {run.id}, model runs:/{run.id}/model")

    dv = DictVectorizer()
    X_train, X_val = vectorize(dv, df_train, fit=True), vectorize(dv, df_val)
    with trackkit.start_run(name="xgboost") as run:
        trackkit.set_tags({"developer": developer(), "model": "xgboost"})
        trackkit.log_params(BEST_PARAMS)
        booster = xgb.train(
            BEST_PARAMS,
            dtrain=xgb.DMatrix(X_train, label=y_train),
            num_boost_round=rounds,
            evals=[(xgb.DMatrix(X_val, label=y_val), "validation")],
            early_stopping_rounds=5,
            verbose_eval=False,
        )
        y_pred = booster.predict(xgb.DMatrix(X_val))
        trackkit.log_metric("rmse", rmse(y_val, y_pred))
        with open("models/preprocessor.b", "wb") as f_out:
            pickle.dump(dv, f_out)
        trackkit.log_artifact("models/preprocessor.b", "preprocessor")
        trackkit.log_model(booster, "models_mlflow", input_example=X_val[:5])
        # 4.2's pickled pair: any picklable object is a model, loaded back equal
        trackkit.log_model((dv, booster), "model_pair")
    runs["xgboost"] = run.id
    print(f"xgboost: run {run.id}, models runs:/{run.id}/models_mlflow and .../model_pair")
    return {"runs": runs}


if __name__ == "__main__":
    main()
