"""trackkit quickstart: track a small sweep, register the best model, promote it, load it back.

Runs on the default backend (MLflow on ``sqlite:///mlflow.db`` in the current directory, no
server) in a few seconds, with a synthetic dataset built in code::

    python examples/quickstart.py

Environment:
    TRACKKIT_BACKEND     the backend (default ``mlflow``)
    TRACKKIT_EXPERIMENT  the experiment (default ``quickstart``)
    MLFLOW_TRACKING_URI  another MLflow store or server (default ``sqlite:///mlflow.db``)

Each run of the script registers one more version of ``quickstart-model`` and moves its
``staging`` and ``production`` aliases to it.
"""

from __future__ import annotations

import math
import os
import random
import uuid

from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

import trackkit

EXPERIMENT = os.environ.get("TRACKKIT_EXPERIMENT") or "quickstart"
MODEL_NAME = "quickstart-model"
ALPHAS = [0.1, 3.0, 30.0]
SEED = 7
BASE_PRICE = {"paris": 120.0, "lyon": 60.0, "nice": 90.0}  # thousands, by city


def make_data(n: int, seed: int) -> tuple[list[dict[str, object]], list[float]]:
    """Flat prices: a categorical ``city`` and a numeric ``area_m2`` feature, plus noise."""
    rng = random.Random(seed)
    rows, prices = [], []
    for _ in range(n):
        city = rng.choice(sorted(BASE_PRICE))
        area = round(rng.uniform(20.0, 120.0), 1)
        rows.append({"city": city, "area_m2": area})
        prices.append(BASE_PRICE[city] + 4.0 * area + rng.gauss(0.0, 25.0))
    return rows, prices


def rmse(model: object, rows: list[dict[str, object]], targets: list[float]) -> float:
    predictions = model.predict(rows)  # type: ignore[attr-defined]
    return math.sqrt(
        sum((p - t) ** 2 for p, t in zip(predictions, targets, strict=True)) / len(targets)
    )


def main() -> None:
    tracker = trackkit.get_tracker()  # backend from TRACKKIT_BACKEND, default mlflow
    train_x, train_y = make_data(240, SEED)
    valid_x, valid_y = make_data(80, SEED + 1)
    developer = os.environ.get("USER") or "quickstart"
    sweep = uuid.uuid4().hex[:8]  # tags this script's runs, to pick the best among them
    refs: dict[str, trackkit.ModelRef] = {}  # run id -> the model logged in that run

    # 1. One run per alpha: nested params, tags, metrics (one at steps), a config, the model.
    for alpha in ALPHAS:
        config = {
            "model": {"type": "ridge", "alpha": alpha},
            "data": {
                "n_train": len(train_x),
                "n_valid": len(valid_x),
                "seed": SEED,
                "features": ["city", "area_m2"],
            },
        }
        with tracker.start_run(
            experiment=EXPERIMENT,
            name=f"ridge-alpha-{alpha}",
            tags={"developer": developer, "sweep": sweep},
        ) as run:
            run.log_params(config)  # stored flat: model.type, model.alpha, data.n_train, ...
            run.log_dict(config, "config.json")

            # A learning curve: validation error after training on more and more rows.
            for step, n_rows in enumerate(range(40, len(train_x) + 1, 40)):
                partial = make_pipeline(DictVectorizer(), Ridge(alpha=alpha))
                partial.fit(train_x[:n_rows], train_y[:n_rows])
                run.log_metric("valid_rmse_curve", rmse(partial, valid_x, valid_y), step=step)

            pipe = make_pipeline(DictVectorizer(), Ridge(alpha=alpha)).fit(train_x, train_y)
            score = rmse(pipe, valid_x, valid_y)
            run.log_metrics({"rmse": score, "train_rmse": rmse(pipe, train_x, train_y)})
            refs[run.id] = run.log_model(pipe)
        print(f"run {run.name}: rmse={score:.2f}")

    # 2. Find the best run of this sweep and register its model as a new version.
    best = tracker.search_runs(
        EXPERIMENT,
        filter=f"tags.sweep = '{sweep}'",
        order_by=["metrics.rmse ASC"],
        max_results=1,
    )[0]
    version = tracker.register_model(
        refs[best.id],
        MODEL_NAME,
        description=(
            f"ridge alpha={best.params['model.alpha']}, validation rmse={best.metrics['rmse']:.2f}"
        ),
    )

    # 3. Promote with aliases: staging first, then production once the checks pass.
    tracker.set_model_alias(MODEL_NAME, "staging", version.version)
    try:
        previous = tracker.get_model_version(MODEL_NAME, alias="production").version
    except trackkit.NotFound:  # the first run of this script: no production version yet
        previous = None
    staged = tracker.load_model(f"models:/{MODEL_NAME}@staging")
    if abs(rmse(staged, valid_x, valid_y) - best.metrics["rmse"]) > 1e-6:
        raise SystemExit("the staged model does not reproduce its logged rmse; not promoted")
    tracker.set_model_alias(MODEL_NAME, "production", version.version)

    # 4. Load what production serves now and predict one row.
    model = tracker.load_model(f"models:/{MODEL_NAME}@production")
    row = {"city": "lyon", "area_m2": 65.0}
    price = float(model.predict([row])[0])

    was = f" (was v{previous})" if previous is not None else " (new)"
    print()
    print(f"backend:     {tracker!r}")
    print(f"experiment:  {EXPERIMENT} ({len(ALPHAS)} runs in sweep {sweep})")
    print(f"best run:    {best.name} (rmse={best.metrics['rmse']:.2f})")
    print(f"registered:  {MODEL_NAME} version {version.version}")
    print(f"aliases:     staging -> v{version.version}, production -> v{version.version}{was}")
    print(f"prediction:  {row} -> {price:.1f}")
    if tracker.backend_name == "mlflow" and not os.environ.get("MLFLOW_TRACKING_URI"):
        print()
        print("See the runs and the registered model in MLflow's UI:")
        print("  mlflow ui --backend-store-uri sqlite:///mlflow.db")


if __name__ == "__main__":
    main()
