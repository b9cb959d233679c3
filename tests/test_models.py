"""Any picklable Python model, with its signature and input example; the course's stage URIs.

On MLflow, read back through MLflow's own API (``mlflow.pyfunc.load_model``,
``mlflow.models.get_model_info``); on W&B offline and Neptune offline through the trackkit
model package their stores hold.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trackkit
from trackkit import models
from trackkit import tracker as tracker_module
from trackkit.errors import InvalidInput, TrackkitWarning

pytest.importorskip("sklearn")

from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LinearRegression

ROWS = [{"PU_DO": f"{i % 4}_{i % 3}", "trip_distance": float(i % 7) + 0.5} for i in range(40)]
TARGET = [3.0 * r["trip_distance"] + len(r["PU_DO"]) for r in ROWS]


class DurationModel:
    """A user's own model class: a vectorizer and a regressor behind one predict."""

    def __init__(self, dv: Any, model: Any) -> None:
        self.dv, self.model = dv, model

    def predict(self, rows: Any) -> Any:
        return self.model.predict(self.dv.transform(rows))


def _pair() -> tuple[DictVectorizer, LinearRegression]:
    dv = DictVectorizer()
    return dv, LinearRegression().fit(dv.fit_transform(ROWS), TARGET)


@pytest.fixture
def mlflow_tracker_closed(mlflow_tracker: trackkit.Tracker) -> Iterator[trackkit.Tracker]:
    yield mlflow_tracker
    mlflow_tracker.close()


@pytest.fixture(autouse=True)
def _stage_warning_again() -> None:
    tracker_module._stage_warned = False  # the once-per-process warning, per test


# -- signatures -----------------------------------------------------------------------------
def test_signatures_are_inferred_as_mlflow_infers_them() -> None:
    mlflow_models = pytest.importorskip("mlflow.models")
    pd = pytest.importorskip("pandas")
    sparse = pytest.importorskip("scipy.sparse")
    examples = [
        ROWS[:3],
        pd.DataFrame(ROWS[:3]),
        np.ones((3, 4)),
        sparse.csr_matrix(np.ones((3, 4))),
        {"a": 1.0, "b": "x"},
    ]
    for example in examples:
        ours = models.infer_signature(example, output=np.array([1.0, 2.0]))
        theirs = mlflow_models.infer_signature(example, np.array([1.0, 2.0]))
        assert ours.to_mlflow_dict() == theirs.to_dict(), type(example)


def test_signature_inputs_are_checked() -> None:
    with pytest.raises(InvalidInput, match="cannot infer a signature"):
        models.infer_signature(object())
    with pytest.raises(InvalidInput, match="signature must be"):
        models.as_signature(42)
    with pytest.raises(InvalidInput, match="'inputs'"):
        models.as_signature({"outputs": []})
    assert models.as_signature({"inputs": [{"type": "double", "name": "x"}]}).input_names == ["x"]


def test_input_examples_round_trip() -> None:
    pd = pytest.importorskip("pandas")
    sparse = pytest.importorskip("scipy.sparse")
    frame = pd.DataFrame(ROWS[:3])
    assert models.decode_example(models.encode_example(frame)).equals(frame)
    array = np.arange(6.0).reshape(2, 3)
    assert np.array_equal(models.decode_example(models.encode_example(array)), array)
    matrix = sparse.csr_matrix(array)
    assert (models.decode_example(models.encode_example(matrix)) != matrix).nnz == 0
    assert models.decode_example(models.encode_example(ROWS[:2])) == ROWS[:2]
    with pytest.raises(InvalidInput, match="input_example must be"):
        models.encode_example({"f": object()})


# -- MLflow: pickled objects as pyfunc models, signatures stored natively ----------------------------
def test_the_course_pair_logs_and_loads_back(mlflow_tracker_closed: trackkit.Tracker) -> None:
    tracker = mlflow_tracker_closed
    dv, lr = _pair()
    with tracker.start_run() as run:
        ref = run.log_model((dv, lr), "model")
    assert ref.flavor == "python" and ref.signature is None
    loaded_dv, loaded_lr = tracker.load_model(ref)
    X = loaded_dv.transform(ROWS[:5])
    assert list(loaded_lr.predict(X)) == list(lr.predict(dv.transform(ROWS[:5])))
    plain = {"weights": [1.5, 2.5], "name": "baseline"}
    with tracker.start_run() as run:
        ref = run.log_model(plain, "model")
    assert tracker.load_model(ref) == plain


def test_an_object_with_predict_is_an_mlflow_pyfunc_model(
    mlflow_tracker_closed: trackkit.Tracker, mlflow_client: Any
) -> None:
    mlflow = pytest.importorskip("mlflow")
    tracker = mlflow_tracker_closed
    model = DurationModel(*_pair())
    with tracker.start_run() as run:
        ref = run.log_model(model, "model", input_example=ROWS[:3])
    assert ref.signature is not None and ref.signature.input_names == ["PU_DO", "trip_distance"]
    assert ref.input_example == ROWS[:3]
    info = mlflow.models.get_model_info(ref.uri)
    assert info.signature.inputs.input_names() == ["PU_DO", "trip_distance"]
    assert info.signature.outputs.to_dict() == [
        {"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": (-1,)}}
    ]
    assert info.saved_input_example_info is not None
    pyfunc = mlflow.pyfunc.load_model(ref.uri)
    assert list(pyfunc.predict(ROWS[:5])) == list(model.predict(ROWS[:5]))
    loaded = tracker.load_model(ref)
    assert type(loaded) is DurationModel
    assert list(loaded.predict(ROWS[:5])) == list(model.predict(ROWS[:5]))
    package = tracker.load_model_package(ref)
    assert package.signature == ref.signature and package.flavor == "python"
    assert package.input_example == ROWS[:3]


def test_a_given_signature_is_stored_natively(
    mlflow_tracker_closed: trackkit.Tracker,
) -> None:
    mlflow = pytest.importorskip("mlflow")
    from mlflow.models import infer_signature

    tracker = mlflow_tracker_closed
    dv, lr = _pair()
    X = dv.transform(ROWS)
    signature = infer_signature(X, lr.predict(X))  # MLflow's own ModelSignature
    with tracker.start_run() as run:
        ref = run.log_model(lr, "model", signature=signature)
    assert ref.flavor == "sklearn"
    stored = mlflow.models.get_model_info(ref.uri).signature
    assert stored.to_dict() == signature.to_dict()
    assert tracker.load_model_package(ref).signature == ref.signature


def test_unpicklable_objects_are_refused(mlflow_tracker_closed: trackkit.Tracker) -> None:
    with mlflow_tracker_closed.start_run() as run, pytest.raises(InvalidInput, match="pickled"):
        run.log_model(lambda rows: rows, "model")


# -- stage URIs -----------------------------------------------------------------------------------
def _register_two(tracker: trackkit.Tracker) -> Any:
    dv, lr = _pair()
    model = DurationModel(dv, lr)
    refs = []
    for _ in range(2):
        with tracker.start_run() as run:
            refs.append(run.log_model(model, "model"))
    for ref in refs:
        tracker.register_model(ref, "ride")
    return model


def check_stages(tracker: trackkit.Tracker, alias_version: Any) -> None:
    """The course's stage calls on any registry backend; ``alias_version`` reads natively."""
    model = _register_two(tracker)
    with pytest.warns(TrackkitWarning, match="alias 'staging'") as warned:
        version = tracker.transition_model_version_stage("ride", 1, "Staging")
    assert len(warned) == 1 and "models:/<name>@staging" in str(warned[0].message)
    assert version.version == 1 and "staging" in version.aliases
    assert alias_version("ride", "staging") == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: no second warning
        tracker.transition_model_version_stage("ride", 1, "Production")
        tracker.transition_model_version_stage(
            "ride", 2, "production", archive_existing_versions=True
        )
        assert alias_version("ride", "production") == 2
        assert alias_version("ride", "archived") == 1
        for uri in (
            "models:/ride/Production",
            "models:/ride/PRODUCTION",
            "models:/ride/production",
        ):
            loaded = tracker.load_model(uri)
            assert list(loaded.predict(ROWS[:3])) == list(model.predict(ROWS[:3]))
        assert tracker.get_model_version("ride", stage="Staging").version == 1
        assert tracker.get_model_version("ride", stage="archived").version == 1
        assert tracker.get_model_version("ride", version="Production").version == 2
        tracker.transition_model_version_stage("ride", 1, "None")
        assert alias_version("ride", "staging") is None
        assert alias_version("ride", "archived") is None
    with pytest.raises(InvalidInput, match="stage must be one of"):
        tracker.transition_model_version_stage("ride", 1, "QA")
    with pytest.raises(InvalidInput, match="one of version, alias or stage"):
        tracker.get_model_version("ride", version=1, stage="Production")


def test_stage_uris_on_mlflow(mlflow_tracker_closed: trackkit.Tracker, mlflow_client: Any) -> None:
    def alias_version(name: str, alias: str) -> int | None:
        aliases = mlflow_client.get_registered_model(name).aliases
        return int(aliases[alias]) if alias in aliases else None

    check_stages(mlflow_tracker_closed, alias_version)
    # MLflow's own loader resolves the alias trackkit set for the stage
    mlflow = pytest.importorskip("mlflow")
    pyfunc = mlflow.pyfunc.load_model("models:/ride@production")
    assert len(pyfunc.predict(ROWS[:2])) == 2


def test_stage_uris_on_neptune_offline(tmp_path: Path) -> None:
    pytest.importorskip("neptune")
    from test_conformance_neptune import NeptuneOfflineReader

    tracker = trackkit.get_tracker(
        "neptune", mode="offline", data_dir=tmp_path / ".neptune", registry_path=tmp_path / "r.db"
    )
    reader = NeptuneOfflineReader(tmp_path / ".neptune", tmp_path / "r.db")
    check_stages(tracker, reader.alias_version)
    tracker.close()


# -- W&B offline and Neptune offline: the package keeps signature and example ---------------------
def _package_checks(tracker: trackkit.Tracker) -> None:
    model = DurationModel(*_pair())
    with tracker.start_run(experiment="models") as run:
        ref = run.log_model(model, "model", input_example=ROWS[:2])
        pair_ref = run.log_model(_pair(), "pair")
    loaded = tracker.load_model(ref)
    assert list(loaded.predict(ROWS[:4])) == list(model.predict(ROWS[:4]))
    package = tracker.load_model_package(ref)
    assert package.flavor == "python"
    assert package.signature == ref.signature
    assert package.signature is not None
    assert package.signature.input_names == ["PU_DO", "trip_distance"]
    assert package.input_example == ROWS[:2]
    dv, lr = tracker.load_model(pair_ref)
    assert len(lr.predict(dv.transform(ROWS[:2]))) == 2


def test_packages_on_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    if "wandb" not in trackkit.available_backends():
        pytest.skip("the wandb backend is not registered in this environment")
    from wandb_reader import FAST, WANDB_VARIABLES

    for variable in WANDB_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = trackkit.get_tracker("wandb", mode="offline", dir=tmp_path / "w", settings=FAST)
    _package_checks(tracker)
    # what W&B's artifact holds: the package with the signature in its metadata file
    [meta] = [p for p in (tmp_path / "w").rglob(models.METADATA_FILE) if "model-" in str(p)][:1]
    assert "signature" in json.loads(meta.read_text())
    tracker.close()


def test_packages_on_neptune_offline(tmp_path: Path) -> None:
    pytest.importorskip("neptune")
    from test_conformance_neptune import NeptuneOfflineReader

    tracker = trackkit.get_tracker(
        "neptune", mode="offline", data_dir=tmp_path / ".neptune", registry_path=tmp_path / "r.db"
    )
    with tracker.start_run(experiment="models") as run:
        run.log_model(DurationModel(*_pair()), "model", input_example=ROWS[:2])
    reader = NeptuneOfflineReader(tmp_path / ".neptune", tmp_path / "r.db")
    info = json.loads(reader.artifact_text(run.id, f"model/{models.METADATA_FILE}"))
    assert info["flavor"] == "python"
    assert [c["name"] for c in info["signature"]["inputs"]] == ["PU_DO", "trip_distance"]
    example = json.loads(reader.artifact_text(run.id, f"model/{models.EXAMPLE_FILE}"))
    assert models.decode_example(example) == ROWS[:2]
    tracker.close()


def test_packages_on_neptune_debug() -> None:
    pytest.importorskip("neptune")
    tracker = trackkit.get_tracker("neptune", mode="debug")
    _package_checks(tracker)
    tracker.close()
