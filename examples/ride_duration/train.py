"""Tracked training: DictVectorizer + a linear model or xgboost, one run per model.

Each run logs, as the course does: the data paths and hyperparameters (nested params), a
``developer`` tag, rmse and mae on the validation month, the fitted DictVectorizer as the
artifact ``preprocessor/preprocessor.b``; and the whole scikit-learn pipeline (vectorizer +
model) with ``log_model``. xgboost runs also log their learning curves per boosting round.
"""

from __future__ import annotations

import contextlib
import getpass
import pickle
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import Lasso, LinearRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

import trackkit
from examples.ride_duration import EXPERIMENT, data

MODEL_TYPES = ("linear_regression", "lasso", "ridge", "xgboost")
#: the course's first runs
BASELINES: dict[str, dict[str, Any]] = {
    "linear_regression": {},
    "lasso": {"alpha": 0.1},
    "ridge": {"alpha": 1.0},
    "xgboost": {
        "learning_rate": 0.3,
        "max_depth": 6,
        "min_child_weight": 1.0,
        "reg_alpha": 0.0,
        "reg_lambda": 1.0,
    },
}
EARLY_STOPPING_ROUNDS = 10
#: the tag holding the model URI that log_model returned, so a later step (or process) can
#: register it from search results alone
MODEL_URI_TAG = "model_uri"


def int32_indices() -> FunctionTransformer:
    """A pipeline step that gives DictVectorizer's output 32-bit sparse indices.

    With scikit-learn 1.9 and scipy 1.17, DictVectorizer emits int64 indices, which Lasso's
    coordinate descent refuses ("Only sparse matrices with 32-bit integer indices are
    accepted"). Converting to CSC, the layout coordinate descent works on anyway, gives int32
    indices whenever they fit, and keeps the matrix sparse. The step is made of library
    objects only, so the pickled pipeline loads without this module.
    """
    return FunctionTransformer(scipy.sparse.csc_matrix, accept_sparse=True)


def make_model(model_type: str, params: Mapping[str, Any], rounds: int, seed: int) -> Any:
    """An unfitted regressor of ``model_type`` with ``params``."""
    if model_type == "linear_regression":
        return LinearRegression(**params)
    if model_type == "lasso":
        return Lasso(**params)
    if model_type == "ridge":
        return Ridge(**params)
    if model_type == "xgboost":
        import xgboost

        return xgboost.XGBRegressor(
            n_estimators=rounds,
            early_stopping_rounds=EARLY_STOPPING_ROUNDS,
            objective="reg:squarederror",
            eval_metric="rmse",
            # "hist", xgboost's default, builds a histogram of every one of the thousands of
            # one-hot PU_DO columns at each node: tens of times slower than "approx" here.
            tree_method="approx",
            random_state=seed,
            # one thread: on this sparse input a round is too small to share, and two threads
            # were several times slower than one on a busy 2-core machine
            n_jobs=1,
            **params,
        )
    raise ValueError(f"unknown model type {model_type!r}; choose from {MODEL_TYPES}")


def scores(actual: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Root mean squared error and mean absolute error, in minutes."""
    errors = np.asarray(predicted, dtype=float) - np.asarray(actual, dtype=float)
    return float(np.sqrt(np.mean(errors**2))), float(np.mean(np.abs(errors)))


def developer() -> str:
    """The ``developer`` tag: who ran the training (the login name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"


@dataclass
class TrainingData:
    """The training and validation months, read once and shared by every run."""

    train_path: Path
    valid_path: Path
    train_dicts: list[dict[str, Any]]
    valid_dicts: list[dict[str, Any]]
    y_train: np.ndarray
    y_valid: np.ndarray
    synthetic: bool = False
    seed: int | None = None

    @classmethod
    def load(
        cls, train_path: Path, valid_path: Path, synthetic: bool = False, seed: int | None = None
    ) -> TrainingData:
        train, valid = data.read_dataframe(train_path), data.read_dataframe(valid_path)
        return cls(
            train_path=Path(train_path),
            valid_path=Path(valid_path),
            train_dicts=data.to_dicts(train),
            valid_dicts=data.to_dicts(valid),
            y_train=train[data.TARGET].to_numpy(),
            y_valid=valid[data.TARGET].to_numpy(),
            synthetic=synthetic,
            seed=seed,
        )

    def params(self) -> dict[str, Any]:
        """The data part of a run's params (nested: logged as ``data.train_path``...)."""
        described: dict[str, Any] = {
            "train_path": str(self.train_path),
            "valid_path": str(self.valid_path),
            "train_rows": len(self.y_train),
            "valid_rows": len(self.y_valid),
            "synthetic": self.synthetic,
        }
        if self.synthetic:
            described["seed"] = self.seed
        return described


@dataclass(frozen=True)
class TrainResult:
    """What one training run produced."""

    run_id: str
    run_name: str
    model_type: str
    rmse: float
    mae: float
    model: trackkit.ModelRef


def train(
    tracker: trackkit.Tracker,
    training: TrainingData,
    model_type: str,
    params: Mapping[str, Any] | None = None,
    *,
    experiment: str = EXPERIMENT,
    rounds: int = 100,
    seed: int = 42,
    tags: Mapping[str, str] | None = None,
    name: str | None = None,
    run: trackkit.Run | None = None,
) -> TrainResult:
    """Train one model in one tracked run and return its validation scores.

    Args:
        tracker: where to track.
        training: the training and validation months.
        model_type: one of :data:`MODEL_TYPES`.
        params: hyperparameters (default: the course's, :data:`BASELINES`).
        experiment: the experiment the run goes to.
        rounds: xgboost's maximum boosting rounds (it stops early on the validation month).
        seed: xgboost's random seed.
        tags: extra run tags.
        name: the run name (default: the model type).
        run: log into this open run (a search trial's) instead of starting one; it is left
            open for its owner to end.
    """
    params = dict(BASELINES[model_type] if params is None else params)
    run_tags = {"developer": developer(), "model_type": model_type, **(tags or {})}
    started = (
        contextlib.nullcontext(run)
        if run is not None
        else tracker.start_run(experiment=experiment, name=name or model_type, tags=run_tags)
    )
    with started as run:
        if started is not run:  # a search trial's run gets the tags a run of its own gets
            run.set_tags(run_tags)
        model_params: dict[str, Any] = {"type": model_type, **params}
        if model_type == "xgboost":
            model_params.update(
                max_rounds=rounds, early_stopping_rounds=EARLY_STOPPING_ROUNDS, seed=seed
            )
        run.log_params(
            {
                "data": training.params(),
                "features": {"categorical": data.CATEGORICAL, "numerical": data.NUMERICAL},
                "model": model_params,
            }
        )

        vectorizer = DictVectorizer()
        x_train = vectorizer.fit_transform(training.train_dicts)
        x_valid = vectorizer.transform(training.valid_dicts)
        steps: list[tuple[str, Any]] = [("vectorizer", vectorizer)]
        if model_type == "lasso":
            cast = int32_indices()
            x_train, x_valid = cast.fit_transform(x_train), cast.transform(x_valid)
            steps.append(("int32_indices", cast))

        model = make_model(model_type, params, rounds, seed)
        if model_type == "xgboost":
            model.fit(
                x_train,
                training.y_train,
                eval_set=[(x_train, training.y_train), (x_valid, training.y_valid)],
                verbose=False,
            )
            curves = model.evals_result()
            train_curve = curves["validation_0"]["rmse"]
            valid_curve = curves["validation_1"]["rmse"]
            for step, (train_rmse, valid_rmse) in enumerate(
                zip(train_curve, valid_curve, strict=True)
            ):
                run.log_metrics(
                    {"round/train_rmse": train_rmse, "round/valid_rmse": valid_rmse}, step=step
                )
            run.log_metric("best_iteration", model.best_iteration)
        else:
            model.fit(x_train, training.y_train)
        pipeline = Pipeline([*steps, ("model", model)])

        predicted = pipeline.predict(training.valid_dicts)
        rmse, mae = scores(training.y_valid, predicted)
        run.log_metrics({"rmse": rmse, "mae": mae})

        # The course's way: the fitted vectorizer as a file of the run...
        with tempfile.TemporaryDirectory(prefix="ride-duration-") as tmp:
            preprocessor = Path(tmp) / "preprocessor.b"
            with open(preprocessor, "wb") as f_out:
                pickle.dump(vectorizer, f_out)
            run.log_artifact(preprocessor, "preprocessor")
        # ...and the whole pipeline as a model, which the registry, the batch job and the web
        # service load back in one call.
        ref = run.log_model(pipeline, "model")
        run.set_tag(MODEL_URI_TAG, ref.uri)
    return TrainResult(run.id, run.name, model_type, rmse, mae, ref)
