"""Course 2.5: test the Staging model on new data, then promote it to Production.

    python -m examples.course.stage_loading

The course's ``test_model``: load ``models:/<name>/Staging`` and score it on the test month;
download the run's ``preprocessor`` artifact, as the course does; then move the version to
``Production``, archiving the one that was there (``archive_existing_versions=True``), and
load it back by its stage URI. Run ``registry`` first.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import trackkit
from examples.course import MODEL_NAME
from examples.course.common import TARGET, TEST, read_dataframe, rmse, to_dicts


def test_model(stage: str, X_test: Any, y_test: Any, name: str = MODEL_NAME) -> dict[str, float]:
    model = trackkit.load_model(f"models:/{name}/{stage}")
    y_pred = model.predict(X_test)
    return {"rmse": rmse(y_test, y_pred)}


def main(tracker: trackkit.Tracker | None = None) -> dict[str, Any]:
    if tracker is not None:
        trackkit.set_tracker(tracker)
    client = trackkit.get_default_tracker()

    staged = client.get_model_version(MODEL_NAME, stage="Staging")
    assert staged.run_id is not None, "a version registered from a run"
    # load the fitted vectorizer of the version's run, as the course does
    path = client.download_artifacts(staged.run_id, "preprocessor", dst="downloaded")
    with open(Path(path) / "preprocessor.b", "rb") as f_in:
        dv = pickle.load(f_in)
    print(f"preprocessor of run {staged.run_id}: {len(dv.feature_names_)} features")

    df = read_dataframe(TEST)
    X_test, y_test = to_dicts(df), df[TARGET].values  # the model is the whole pipeline
    staging_score = test_model("Staging", X_test, y_test)
    print(f"Staging (version {staged.version}): {staging_score}")

    # we are happy with the model in Staging: promote it to Production
    version = client.transition_model_version_stage(
        name=MODEL_NAME,
        version=staged.version,
        stage="Production",
        archive_existing_versions=True,
    )
    production_score = test_model("Production", X_test, y_test)
    print(
        f"Production (version {version.version}, {', '.join(version.aliases)}): {production_score}"
    )
    return {
        "version": version.version,
        "staging_rmse": staging_score["rmse"],
        "production_rmse": production_score["rmse"],
        "features": len(dv.feature_names_),
    }


if __name__ == "__main__":
    main()
