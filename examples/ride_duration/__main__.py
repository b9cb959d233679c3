"""The whole ride-duration flow in one command, on the backend ``TRACKKIT_BACKEND`` chooses::

    python -m examples.ride_duration            # synthetic data, MLflow on sqlite:///mlflow.db
    python -m examples.ride_duration --data-dir ~/tlc --train 2021-01 --valid 2021-02 \\
        --test 2021-03 --score 2021-04            # real NYC TLC files

Stages: data, training (4 models), hyperparameter search, registry (register the best,
``staging``, evaluate on the test month, promote to ``production``), batch scoring, and a
check of the web service. ``--help`` lists the options; the RIDE_DURATION_* variables set the
defaults of the size options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trackkit
from examples.ride_duration import (
    EXPERIMENT,
    MODEL_NAME,
    PRODUCTION_URI,
    data,
    hints,
    registry,
    service,
)
from examples.ride_duration import score as scoring
from examples.ride_duration import search as searching
from examples.ride_duration import train as training

STAGES = 6


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"${name} must be a whole number, got {raw!r}") from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.ride_duration",
        description="The course's ride-duration workflow, tracked with trackkit.",
        epilog="The backend is chosen by TRACKKIT_BACKEND (default mlflow). Errors are one "
        "line; TRACKKIT_DEBUG=1 shows the traceback.",
    )
    where = parser.add_argument_group("data")
    where.add_argument(
        "--data-dir",
        type=Path,
        help="a folder of real TLC trip files (green_tripdata_2021-01.parquet, ...); "
        "without it, synthetic months are written to data/synthetic",
    )
    where.add_argument("--taxi", choices=data.TAXIS, default="green")
    where.add_argument("--train", default="2021-01", help="training month (YYYY-MM)")
    where.add_argument("--valid", default="2021-02", help="validation month")
    where.add_argument("--test", default="2021-03", help="test month, to evaluate staging")
    where.add_argument("--score", default="2021-04", help="month the batch job scores")
    size = parser.add_argument_group("size (defaults from RIDE_DURATION_* variables)")
    size.add_argument(
        "--rows",
        type=int,
        default=_env_int("RIDE_DURATION_ROWS", 20_000),
        help="synthetic rides per month (RIDE_DURATION_ROWS, default 20000)",
    )
    size.add_argument(
        "--models",
        default=os.environ.get("RIDE_DURATION_MODELS") or ",".join(training.MODEL_TYPES),
        help="comma-separated baseline models (RIDE_DURATION_MODELS, default all four)",
    )
    size.add_argument(
        "--trials",
        type=int,
        default=_env_int("RIDE_DURATION_TRIALS", 4),
        help="xgboost search trials (RIDE_DURATION_TRIALS, default 4)",
    )
    size.add_argument(
        "--rounds",
        type=int,
        default=_env_int("RIDE_DURATION_ROUNDS", 100),
        help="xgboost's maximum boosting rounds (RIDE_DURATION_ROUNDS, default 100)",
    )
    size.add_argument("--seed", type=int, default=42)
    names = parser.add_argument_group("names")
    names.add_argument("--experiment", default=os.environ.get("TRACKKIT_EXPERIMENT") or EXPERIMENT)
    names.add_argument("--model-name", default=MODEL_NAME)
    names.add_argument("--output-dir", type=Path, default=Path("output"))
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(training.MODEL_TYPES))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(training.MODEL_TYPES)}")
    for month in (args.train, args.valid, args.test, args.score):
        try:
            data.check_month(month)
        except data.DataError as e:
            parser.error(str(e))
    if args.rows < 100 or args.trials < 0 or args.rounds < 1:
        parser.error("--rows must be at least 100, --trials at least 0, --rounds at least 1")
    if not args.models and not args.trials:
        parser.error("nothing to train: give --models or --trials")
    return args


class Progress:
    """Prints one line per stage, with the time it took."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.stage = 0
        self._began = self.start

    def begin(self, title: str) -> None:
        self.stage += 1
        self._began = time.monotonic()
        print(f"[{self.stage}/{STAGES}] {title}", flush=True)

    def say(self, line: str) -> None:
        print(f"      {line}", flush=True)

    def done(self) -> None:
        print(f"      ({time.monotonic() - self._began:.1f} s)", flush=True)

    def total(self) -> float:
        return time.monotonic() - self.start


def run_flow(args: argparse.Namespace, tracker: trackkit.Tracker) -> dict[str, Any]:
    """Run every stage with ``tracker``; print progress and return what the summary shows."""
    progress = Progress()
    flow_id = uuid.uuid4().hex[:8]
    tags = {"flow_id": flow_id}

    progress.begin("data")
    months = {"train": args.train, "valid": args.valid, "test": args.test, "score": args.score}
    if args.data_dir is None:
        data_dir = Path("data") / "synthetic"
        data.write_synthetic_months(
            data_dir, sorted(set(months.values())), args.rows, taxi=args.taxi, seed=args.seed
        )
        origin = f"synthetic {args.taxi} taxi rides, {args.rows:,} a month (seed {args.seed})"
    else:
        data_dir = args.data_dir
        origin = f"NYC TLC {args.taxi} taxi files"
    paths = {role: data.find_month(data_dir, args.taxi, m) for role, m in months.items()}
    progress.say(f"{origin} in {data_dir}")
    ready = training.TrainingData.load(
        paths["train"],
        paths["valid"],
        synthetic=args.data_dir is None,
        seed=args.seed if args.data_dir is None else None,
    )
    for role, rows in (("train", ready.y_train), ("valid", ready.y_valid)):
        progress.say(f"{role}: {paths[role].name}, {len(rows):,} rides of 1 to 60 minutes")
    progress.done()

    progress.begin(f"training: {', '.join(args.models) or 'no baseline'} in '{args.experiment}'")
    results = []
    for model_type in args.models:
        result = training.train(
            tracker,
            ready,
            model_type,
            experiment=args.experiment,
            rounds=args.rounds,
            seed=args.seed,
            tags=tags,
        )
        results.append(result)
        progress.say(f"{model_type:<18} rmse {result.rmse:6.3f}  mae {result.mae:6.3f}")
    progress.done()

    progress.begin(f"hyperparameter search: {args.trials} xgboost trials")
    found = searching.search(
        tracker,
        ready,
        args.trials,
        experiment=args.experiment,
        rounds=args.rounds,
        seed=args.seed,
        tags=tags,
    )
    for result in found:
        progress.say(f"{result.run_name:<18} rmse {result.rmse:6.3f}  mae {result.mae:6.3f}")
    results.extend(found)
    progress.done()

    progress.begin(f"registry: best run -> {args.model_name}, staging, test, production")
    outcome = registry.run_registry(
        tracker,
        paths["test"],
        experiment=args.experiment,
        name=args.model_name,
        filter=f"tags.flow_id = '{flow_id}'",
    )
    version = outcome.version.version
    progress.say(
        f"best run {outcome.best.name} (rmse {outcome.best.metrics['rmse']:.3f}) "
        f"registered as version {version}, alias staging"
    )
    progress.say(
        f"test month {args.test}: staging v{version} rmse {outcome.staging.rmse:.3f}"
        + (
            f", production v{outcome.previous.version} rmse {outcome.previous_evaluation.rmse:.3f}"
            if outcome.previous and outcome.previous_evaluation
            else ""
        )
    )
    progress.say(
        f"production -> v{outcome.aliases['production']}"
        + (" (promoted)" if outcome.promoted else " (kept: staging did worse)")
    )
    progress.done()

    progress.begin(
        f"batch scoring: {paths['score'].name} with models:/{args.model_name}@production"
    )
    scored = scoring.score(
        tracker,
        paths["score"],
        args.output_dir,
        model_uri=f"models:/{args.model_name}@production",
        experiment=f"{args.experiment}-scoring",
    )
    progress.say(
        f"{scored.rides:,} predictions by v{scored.version.version} -> {scored.output} "
        f"(rmse {scored.rmse:.3f}), logged in run {scored.run_id}"
    )
    progress.done()

    progress.begin("web service: POST /predict (in-process check of the gunicorn app)")
    app = service.create_app(tracker, f"models:/{args.model_name}@production")
    answer = app.test_client().post("/predict", json=service.EXAMPLE)
    if answer.status_code != 200:
        raise SystemExit(f"the web service answered {answer.status_code}: {answer.get_data(True)}")
    progress.say(f"{service.EXAMPLE} -> {answer.get_json()}")
    progress.done()

    return {
        "flow_id": flow_id,
        "origin": f"{origin} in {data_dir}",
        "runs": results,
        "registry": outcome,
        "scored": scored,
        "answer": answer.get_json(),
        "seconds": progress.total(),
    }


def print_summary(
    args: argparse.Namespace, tracker: trackkit.Tracker, done: dict[str, Any]
) -> None:
    outcome: registry.RegistryResult = done["registry"]
    scored: scoring.ScoreResult = done["scored"]
    runs = done["runs"]
    aliases = []
    for alias, number in sorted(outcome.aliases.items()):
        note = ""
        if alias == "production" and not outcome.promoted:
            note = " (kept: staging did worse on the test month)"
        elif alias == "production":
            note = f" (was v{outcome.previous.version})" if outcome.previous else " (new)"
        aliases.append(f"{alias} -> v{number}{note}")
    lines = [
        ("backend", repr(tracker)),
        ("data", done["origin"]),
        (
            "runs",
            f"{len(runs)} training runs in '{args.experiment}' ({len(args.models)} models, "
            f"{args.trials} search trial{'' if args.trials == 1 else 's'}; "
            f"tag flow_id={done['flow_id']}), 1 scoring run",
        ),
        (
            "best run",
            f"{outcome.best.name}: validation rmse {outcome.best.metrics['rmse']:.3f}, "
            f"mae {outcome.best.metrics['mae']:.3f}",
        ),
        (
            "registered",
            f"{args.model_name} version {outcome.version.version} "
            f"(versions kept: {', '.join(map(str, outcome.versions))})",
        ),
        ("test rmse", f"{outcome.staging.rmse:.3f} on {args.test}"),
        ("aliases", ", ".join(aliases)),
        ("predictions", f"{scored.output} ({scored.rides:,} rides, v{scored.version.version})"),
        ("web service", f"answered {done['answer']}"),
        ("took", f"{done['seconds']:.0f} s"),
    ]
    print()
    print("Summary")
    for label, text in lines:
        print(f"  {label + ':':<13}{text}")
    print()
    print("Look at the runs and the registered model:")
    for hint in hints.look_hints(tracker, args.experiment):
        print(f"  {hint}")
    print("Serve the production model (from this directory; Ctrl-C stops it):")
    serving = hints.serve_hints(tracker, f"models:/{args.model_name}@production", PRODUCTION_URI)
    for hint in serving:
        print(f"  {hint}")
    if not serving[0].startswith("#"):
        print(
            "  curl -s -X POST 127.0.0.1:9696/predict -H 'Content-Type: application/json' "
            f"-d '{json.dumps(service.EXAMPLE)}'"
        )


def main(
    argv: Sequence[str] | None = None, tracker: trackkit.Tracker | None = None
) -> dict[str, Any]:
    """Run the flow; ``tracker`` defaults to ``trackkit.get_tracker()``."""
    args = parse_args(argv)
    own = tracker is None
    tracker = tracker or trackkit.get_tracker()
    try:
        done = run_flow(args, tracker)
        print_summary(args, tracker, done)
    except data.DataError as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        if own:
            tracker.close()
    return done


def cli(argv: Sequence[str] | None = None) -> int:
    """``python -m examples.ride_duration``: the flow, with trackkit's errors as short messages.

    A trackkit error (an unknown or uninstalled backend, missing credentials, bad input) is
    printed as one line, plus the install command when a package is missing, and the exit
    status is 2 for a setting to change, 1 otherwise. ``TRACKKIT_DEBUG=1`` shows the traceback.
    """
    try:
        main(argv)
    except trackkit.TrackkitError as e:
        if os.environ.get("TRACKKIT_DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
            raise
        for line in hints.error_lines(e):
            print(line, file=sys.stderr)
        usage = (trackkit.UnknownBackendError, trackkit.InvalidInput)
        return 2 if isinstance(e, usage) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(sys.argv[1:]))
