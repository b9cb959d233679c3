"""The web service: POST a ride, get its predicted duration and the model that answered.

The production model is loaded through trackkit once, when the app is created; serve it with
gunicorn from the repository root::

    gunicorn --bind 127.0.0.1:9696 examples.ride_duration.service:app

    curl -s -X POST 127.0.0.1:9696/predict -H 'Content-Type: application/json' \\
        -d '{"PULocationID": 74, "DOLocationID": 75, "trip_distance": 1.8}'
    {"backend": "mlflow", "duration": 8.91, "model_name": "ride-duration", "model_version": 1}

Environment: ``TRACKKIT_BACKEND`` and the backend's own settings (e.g. ``MLFLOW_TRACKING_URI``)
choose where the model comes from; ``RIDE_DURATION_MODEL_URI`` which model (default
``models:/ride-duration@production``). Every answer names the backend and the version, and
the service says on stderr, when it starts, which model it serves from where. A promotion
takes effect when the service restarts.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

import trackkit
from examples.ride_duration import PRODUCTION_URI, data, registry

if TYPE_CHECKING:
    from flask import Response

EXAMPLE = {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 1.8}


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def create_app(tracker: trackkit.Tracker | None = None, model_uri: str | None = None) -> Flask:
    """The Flask app, serving the model ``model_uri`` loaded through ``tracker``.

    Args:
        tracker: default ``trackkit.get_tracker()`` (the backend from ``TRACKKIT_BACKEND``).
        model_uri: default ``$RIDE_DURATION_MODEL_URI``, else ``models:/ride-duration@production``.

    Raises:
        RuntimeError: the model cannot be found (the message says how to make one).
    """
    uri = model_uri or os.environ.get("RIDE_DURATION_MODEL_URI") or PRODUCTION_URI
    tracker = tracker or trackkit.get_tracker()
    try:
        model, version = registry.load_registered(tracker, uri)
    except trackkit.NotFound as e:
        raise RuntimeError(
            f"no model at {uri} on {tracker!r}: run `python -m examples.ride_duration` first, "
            f"or point RIDE_DURATION_MODEL_URI at a registered model ({e})"
        ) from e

    app = Flask("ride-duration")
    app.config["model_version"] = version
    app.config["tracker"] = repr(tracker)
    backend = tracker.backend_name

    @app.post("/predict")
    def predict() -> Any:
        ride = request.get_json(silent=True)
        if not isinstance(ride, dict):
            return _error(
                400,
                "send one ride as a JSON object with Content-Type: application/json, e.g. "
                f"{json.dumps(EXAMPLE)}",
            )
        try:
            features = data.prepare_features(ride)
        except data.DataError as e:
            return _error(400, str(e))
        duration = float(model.predict([features])[0])
        return jsonify(
            backend=backend,
            duration=round(duration, 2),
            model_name=version.name,
            model_version=version.version,
        )

    @app.get("/health")
    def health() -> Any:
        return jsonify(
            status="ok", backend=backend, model_name=version.name, model_version=version.version
        )

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Any:  # JSON, not HTML, for 404, 405...
        return _error(e.code or 500, f"{e.name}: {e.description}")

    return app


def __getattr__(name: str) -> Any:
    # `app` is created on first access (gunicorn's `service:app`), so importing this module
    # loads no model.
    if name == "app":
        globals()["app"] = application = create_app()
        version = application.config["model_version"]
        print(
            f"ride-duration service: {version.name} version {version.version} "
            f"from {application.config['tracker']}",
            file=sys.stderr,
            flush=True,
        )
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # local development only; use gunicorn to serve
    create_app().run(host="127.0.0.1", port=9696, debug=True)
