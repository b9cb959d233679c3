"""Course 2.2-2.4: a tracked Lasso run, the course's way, and the model as a plain artifact.

    python -m examples.course.tracking

``mlflow.set_tracking_uri("sqlite:///mlflow.db")`` needs no line here: it is trackkit's MLflow
default, and ``TRACKKIT_BACKEND`` (or ``MLFLOW_TRACKING_URI``) chooses another store. The rest
is the course's code with ``mlflow`` replaced by ``trackkit``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import Lasso

import trackkit
from examples.course import EXPERIMENT
from examples.course.common import (
    TARGET,
    TRAIN,
    VALID,
    developer,
    month_path,
    read_dataframe,
    rmse,
    vectorize,
)


def main(tracker: trackkit.Tracker | None = None) -> dict[str, Any]:
    if tracker is not None:
        trackkit.set_tracker(tracker)
    trackkit.set_experiment(EXPERIMENT)

    df_train, df_val = read_dataframe(TRAIN), read_dataframe(VALID)
    dv = DictVectorizer()
    X_train, X_val = vectorize(dv, df_train, fit=True), vectorize(dv, df_val)
    y_train, y_val = df_train[TARGET].values, df_val[TARGET].values

    runs = {}
    for alpha in (0.1, 0.01):  # 2.3: two runs to compare in the UI
        with trackkit.start_run() as run:
            trackkit.set_tag("developer", developer())  # useful in a large team
            trackkit.set_tag("model", "lasso")
            trackkit.log_param("train-data-path", str(month_path(TRAIN)))
            trackkit.log_param("valid-data-path", str(month_path(VALID)))
            trackkit.log_param("alpha", alpha)

            lr = Lasso(alpha=alpha)
            lr.fit(X_train, y_train)

            y_pred = lr.predict(X_val)
            trackkit.log_metric("rmse", rmse(y_val, y_pred))

            # 2.4, option 1: the model as just another artifact of the run
            Path("models").mkdir(exist_ok=True)
            with open("models/lin_reg.bin", "wb") as f_out:
                pickle.dump((dv, lr), f_out)
            trackkit.log_artifact("models/lin_reg.bin", "model_pickle")
        runs[alpha] = run.id
        print(f"lasso alpha={alpha}: run {run.id}, rmse {rmse(y_val, y_pred):.3f}")
    return {"runs": runs}


if __name__ == "__main__":
    main()
