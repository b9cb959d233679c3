"""Course 2.5: the model registry, as the course drives it with ``MlflowClient``.

    python -m examples.course.registry

Find the best runs of ``model_logging`` (run it first), register the best one's model, list the
registered models and their versions, move the new version to ``Staging`` and annotate it.
The course's stages work as they are: a stage is the alias of its lower-cased name
(``Staging`` -> ``staging``), and the first use warns once, naming that alias.
"""

from __future__ import annotations

from typing import Any

import trackkit
from examples.course import EXPERIMENT, MODEL_NAME
from trackkit.errors import UnsupportedOperation

#: the course's "specify model performance condition" (rmse in minutes)
RMSE_THRESHOLD = 12.0


def main(tracker: trackkit.Tracker | None = None) -> dict[str, Any]:
    if tracker is not None:
        trackkit.set_tracker(tracker)
    client = trackkit.get_default_tracker()  # the course's MlflowClient

    runs = client.search_runs(
        EXPERIMENT,
        filter=f"metrics.rmse < {RMSE_THRESHOLD} and tags.model_uri LIKE '%'",
        order_by=["metrics.rmse ASC"],
        max_results=5,
        output_format="list",
    )
    if not runs:
        raise SystemExit(
            f"no run of {EXPERIMENT!r} with a model and rmse < {RMSE_THRESHOLD}: "
            "run `python -m examples.course.model_logging` first"
        )
    for run in runs:
        print(f"run id: {run.id}, rmse: {run.metrics['rmse']:.4f}")

    # register the model (the course: model_uri = f"runs:/{run_id}/model")
    best = runs[0]
    model_uri = best.tags["model_uri"]
    version = trackkit.register_model(model_uri, MODEL_NAME)
    client.update_registered_model(MODEL_NAME, "NYC green-taxi ride duration, in minutes")

    try:
        for model in client.list_registered_models():
            print(f"registered model: {model.name}, latest version {model.latest_version}")
    except UnsupportedOperation as e:  # a registry that cannot list its models
        print(f"(list_registered_models: {e})")
    for each in client.list_model_versions(MODEL_NAME):
        print(f"version: {each.version}, aliases: {', '.join(each.aliases) or '-'}")

    # transition the model to Staging, and annotate it
    new_stage = "Staging"
    client.transition_model_version_stage(
        name=MODEL_NAME,
        version=version.version,
        stage=new_stage,
        archive_existing_versions=False,
    )
    client.update_model_version(
        name=MODEL_NAME,
        version=version.version,
        description=f"The model version {version.version} was transitioned to {new_stage}",
    )
    client.set_model_version_tag(MODEL_NAME, version.version, "model", best.tags.get("model", ""))
    staged = client.get_model_version(MODEL_NAME, stage=new_stage)
    print(f"{MODEL_NAME} version {staged.version} is in {new_stage} ({', '.join(staged.aliases)})")
    return {"best_run": best.id, "version": staged.version, "aliases": list(staged.aliases)}


if __name__ == "__main__":
    main()
