"""The conformance suite: the behaviour every trackkit backend must show, checked for real.

A backend's tests subclass :class:`ConformanceSuite` and provide two pytest fixtures:

- ``tracker``: a :class:`trackkit.Tracker` on the backend, on a fresh store;
- ``reader``: a :class:`Reader` that reads what was written **through the backend's own SDK
  or files**, never through trackkit, so the suite checks what really reached the store.

::

    from trackkit.testing import ConformanceSuite

    class TestMyBackend(ConformanceSuite):
        @pytest.fixture
        def tracker(self, tmp_path):
            return trackkit.get_tracker("mine", root=tmp_path)

        @pytest.fixture
        def reader(self, tmp_path):
            return MyReader(tmp_path)

Tests of operations a backend declares it cannot do (its :class:`~trackkit.backend.Capabilities`)
check that they raise :class:`~trackkit.errors.UnsupportedOperation` instead.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from trackkit.errors import InvalidInput, NotFound, TrackkitWarning, UnsupportedOperation
from trackkit.normalize import LONG_VALUES_DIR

if TYPE_CHECKING:
    from trackkit.tracker import Run, Tracker


class Reader(Protocol):
    """Reads a run back through the backend's own SDK (not through trackkit)."""

    def params(self, run_id: str) -> dict[str, str]: ...

    def metric_points(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Every stored point of ``key`` as (step, value), in any order."""
        ...

    def tags(self, run_id: str) -> dict[str, str]:
        """The run's user tags (system tags of the backend may be left out)."""
        ...

    def status(self, run_id: str) -> str:
        """FINISHED, FAILED, KILLED or RUNNING."""
        ...

    def artifact_files(self, run_id: str) -> set[str]:
        """Every stored artifact file, as run-relative paths."""
        ...

    def artifact_text(self, run_id: str, path: str) -> str: ...

    def alias_version(self, name: str, alias: str) -> int | None:
        """Registry backends: the version ``alias`` points at, or None."""
        ...

    def model_versions(self, name: str) -> list[int]:
        """Registry backends: every version number of ``name``."""
        ...


def _fitted_pipeline() -> Any:
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    rows: list[dict[str, Any]] = [{"zone": str(i % 4), "distance": float(i)} for i in range(40)]
    target = [2.0 * r["distance"] + int(r["zone"]) for r in rows]
    return make_pipeline(DictVectorizer(), LinearRegression()).fit(rows, target), rows[:5]


class ConformanceSuite:
    """Subclass in a ``Test*`` class and provide the ``tracker`` and ``reader`` fixtures."""

    experiment = "conformance"

    def _run(self, tracker: Tracker, **kwargs: Any) -> Run:
        return tracker.start_run(experiment=self.experiment, **kwargs)

    # -- params -----------------------------------------------------------------------------
    def test_params_are_flattened_and_typed(self, tracker: Tracker, reader: Reader) -> None:
        config = {"model": {"alpha": 0.1, "layers": [64, 32]}, "seed": 7, "fast": True, "x": None}
        with self._run(tracker) as run:
            run.log_params(config)
            run.log_param("data.train", "a.parquet")
        assert reader.params(run.id) == {
            "model.alpha": "0.1",
            "model.layers": "[64, 32]",
            "seed": "7",
            "fast": "True",
            "x": "None",
            "data.train": "a.parquet",
        }
        assert config == {
            "model": {"alpha": 0.1, "layers": [64, 32]},
            "seed": 7,
            "fast": True,
            "x": None,
        }

    def test_params_are_immutable(self, tracker: Tracker, reader: Reader) -> None:
        with self._run(tracker) as run:
            run.log_param("alpha", 0.1)
            run.log_param("alpha", 0.1)  # the same value again is fine
            with pytest.raises(InvalidInput, match="alpha"):
                run.log_param("alpha", 0.2)
        assert reader.params(run.id) == {"alpha": "0.1"}

    def test_long_param_value_is_kept_whole_in_an_artifact(
        self, tracker: Tracker, reader: Reader
    ) -> None:
        limit = tracker.backend.limits.param_value_length
        if limit is None:
            pytest.skip("this backend has no param value limit")
        value = "x" * (limit + 100)
        with self._run(tracker) as run:
            run.log_param("prompt", value)
        stored = reader.params(run.id)["prompt"]
        assert len(stored) <= limit and "truncated" in stored
        assert reader.artifact_text(run.id, f"{LONG_VALUES_DIR}/params/prompt.txt") == value

    # -- metrics ----------------------------------------------------------------------------
    def test_steps_are_per_key_and_never_dropped(self, tracker: Tracker, reader: Reader) -> None:
        with self._run(tracker) as run:
            for value in (1.0, 2.0, 3.0):
                run.log_metric("auto", value)
            for step in (5, 3, 10, 1):  # out of order
                run.log_metric("shuffled", float(step), step=step)
            for i in range(4):
                run.log_metric("train.loss", 1.0 / (i + 1), step=i * 100)
            for i in range(2):
                run.log_metric("val.loss", 0.5 + i)  # its own counter: 0, 1
            run.log_metrics({"a": 1, "b": {"c": 2}}, step=7)
            run.log_metric("auto", 4.0)  # continues after the highest step: 3
        assert sorted(reader.metric_points(run.id, "auto")) == [
            (0, 1.0),
            (1, 2.0),
            (2, 3.0),
            (3, 4.0),
        ]
        assert sorted(reader.metric_points(run.id, "shuffled")) == [
            (1, 1.0),
            (3, 3.0),
            (5, 5.0),
            (10, 10.0),
        ]
        assert sorted(reader.metric_points(run.id, "train.loss")) == [
            (0, 1.0), (100, 0.5), (200, 1 / 3), (300, 0.25)
        ]  # fmt: skip
        assert sorted(reader.metric_points(run.id, "val.loss")) == [(0, 0.5), (1, 1.5)]
        assert reader.metric_points(run.id, "a") == [(7, 1.0)]
        assert reader.metric_points(run.id, "b.c") == [(7, 2.0)]

    def test_many_points_cross_batch_limits(self, tracker: Tracker, reader: Reader) -> None:
        count = tracker.backend.limits.batch_metrics * 2 + 17
        with self._run(tracker) as run:
            for i in range(count):
                run.log_metric("loss", float(i))
            run.log_params(
                {f"p{i}": i for i in range(tracker.backend.limits.batch_params_tags + 5)}
            )
        points = reader.metric_points(run.id, "loss")
        assert len(points) == count
        assert sorted(points) == [(i, float(i)) for i in range(count)]
        assert len(reader.params(run.id)) == tracker.backend.limits.batch_params_tags + 5

    def test_nan_and_infinities_are_kept(self, tracker: Tracker, reader: Reader) -> None:
        with self._run(tracker) as run:
            run.log_metric("nan", float("nan"))
            run.log_metric("inf", float("inf"))
            run.log_metric("flag", True)
        [(_, nan)] = reader.metric_points(run.id, "nan")
        assert math.isnan(nan)
        [(step, inf)] = reader.metric_points(run.id, "inf")
        # kept as infinity, or as the largest float where the store has no infinity (MLflow)
        assert step == 0 and (inf == math.inf or inf == sys.float_info.max)
        assert reader.metric_points(run.id, "flag") == [(0, 1.0)]

    # -- tags -------------------------------------------------------------------------------
    def test_tags_are_text_and_mutable(self, tracker: Tracker, reader: Reader) -> None:
        with self._run(tracker, tags={"developer": "ana"}) as run:
            run.set_tag("stage", "draft")
            run.set_tags({"stage": "final", "epochs": 3})
        tags = reader.tags(run.id)
        assert tags["developer"] == "ana"
        assert tags["stage"] == "final"
        assert tags["epochs"] == "3"

    def test_illegal_key_characters_are_renamed_and_reported(
        self, tracker: Tracker, reader: Reader
    ) -> None:
        if tracker.backend.limits.key_invalid_chars is None:
            pytest.skip("this backend accepts every character in names")
        with self._run(tracker) as run, pytest.warns(TrackkitWarning, match="renamed"):
            run.log_metric("acc@top5", 0.9)
            run.flush()
        assert reader.metric_points(run.id, "acc_top5") == [(0, 0.9)]
        assert '"acc@top5": "acc_top5"' in reader.artifact_text(
            run.id, "trackkit/renamed_keys.json"
        )

    # -- status -----------------------------------------------------------------------------
    def test_status_follows_the_context_manager(self, tracker: Tracker, reader: Reader) -> None:
        with self._run(tracker) as ok:
            ok.log_metric("m", 1)
        with pytest.raises(RuntimeError, match="boom"), self._run(tracker) as failed:
            failed.log_metric("m", 1)
            raise RuntimeError("boom")
        killed = self._run(tracker)
        killed.end("KILLED")
        assert reader.status(ok.id) == "FINISHED"
        assert reader.status(failed.id) == "FAILED"
        assert reader.metric_points(failed.id, "m") == [(0, 1.0)]  # flushed before failing
        assert reader.status(killed.id) == "KILLED"

    def test_resume_continues_steps_and_keeps_params(
        self, tracker: Tracker, reader: Reader
    ) -> None:
        if not tracker.backend.capabilities.resume:
            with pytest.raises(UnsupportedOperation):
                tracker.start_run(run_id="anything")
            return
        with self._run(tracker) as first:
            first.log_param("lr", 0.1)
            first.log_metric("loss", 1.0)
            first.log_metric("loss", 0.9)
        with tracker.start_run(run_id=first.id) as again:
            again.log_param("lr", 0.1)
            with pytest.raises(InvalidInput, match="lr"):
                again.log_param("lr", 0.5)
            again.log_metric("loss", 0.8)
        assert again.experiment == self.experiment
        assert sorted(reader.metric_points(first.id, "loss")) == [(0, 1.0), (1, 0.9), (2, 0.8)]
        assert reader.status(first.id) == "FINISHED"

    # -- artifacts --------------------------------------------------------------------------
    def test_artifacts_files_directories_and_helpers(
        self, tracker: Tracker, reader: Reader, tmp_path: Path
    ) -> None:
        if not tracker.backend.capabilities.artifacts:
            with self._run(tracker) as run, pytest.raises(UnsupportedOperation):
                run.log_text("x", "x.txt")
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import pandas as pd

        single = tmp_path / "notes.txt"
        single.write_text("hello")
        folder = tmp_path / "bundle"
        (folder / "inner").mkdir(parents=True)
        (folder / "a.txt").write_text("a")
        (folder / "inner" / "b.txt").write_text("b")
        figure, axes = plt.subplots()
        axes.plot([1, 2, 3])
        with self._run(tracker) as run:
            run.log_artifact(single)
            run.log_artifact(single, "docs")
            run.log_artifact(folder, "data")
            run.log_text("text body", "reports/summary.txt")
            run.log_dict({"a": 1, "b": [1, 2]}, "config.json")
            run.log_dict({"a": 1}, "config.yaml")
            run.log_figure(figure, "plots/curve.png")
            run.log_table(pd.DataFrame({"x": [1, 2]}), "tables/t.csv")
            run.log_table(pd.DataFrame({"x": [1, 2]}), "tables/t.parquet")
        plt.close(figure)
        files = reader.artifact_files(run.id)
        assert {
            "notes.txt",
            "docs/notes.txt",
            "data/bundle/a.txt",
            "data/bundle/inner/b.txt",
            "reports/summary.txt",
            "config.json",
            "config.yaml",
            "plots/curve.png",
            "tables/t.csv",
            "tables/t.parquet",
        } <= files
        assert reader.artifact_text(run.id, "reports/summary.txt") == "text body"
        assert reader.artifact_text(run.id, "data/bundle/inner/b.txt") == "b"
        assert '"b": [\n    1,\n    2\n  ]' in reader.artifact_text(run.id, "config.json")
        assert reader.artifact_text(run.id, "config.yaml") == "a: 1\n"
        assert reader.artifact_text(run.id, "tables/t.csv") == "x\n1\n2\n"

    def test_download_artifacts(self, tracker: Tracker, reader: Reader, tmp_path: Path) -> None:
        if not tracker.backend.capabilities.download_artifacts:
            with pytest.raises(UnsupportedOperation):
                tracker.download_artifacts("x", "y", tmp_path)
            return
        with self._run(tracker) as run:
            run.log_text("kept", "out/kept.txt")
        local = tracker.download_artifacts(run.id, "out/kept.txt", tmp_path / "dl")
        assert Path(local).read_text() == "kept"
        with pytest.raises(NotFound):
            tracker.download_artifacts(run.id, "out/missing.txt", tmp_path / "dl2")

    # -- models and registry ----------------------------------------------------------------
    def test_model_round_trip(self, tracker: Tracker, reader: Reader) -> None:
        pipeline, rows = _fitted_pipeline()
        if not tracker.backend.capabilities.models:
            with self._run(tracker) as run, pytest.raises(UnsupportedOperation):
                run.log_model(pipeline)
            return
        with self._run(tracker) as run:
            ref = run.log_model(pipeline, "model")
        assert ref.run_id == run.id and ref.flavor == "sklearn"
        loaded = tracker.load_model(ref)
        assert type(loaded) is type(pipeline)
        assert list(loaded.predict(rows)) == list(pipeline.predict(rows))

    def test_registry_aliases_and_load_by_alias(self, tracker: Tracker, reader: Reader) -> None:
        pipeline, rows = _fitted_pipeline()
        if not tracker.backend.capabilities.registry:
            with pytest.raises(UnsupportedOperation):
                tracker.list_model_versions("ride")
            return
        refs = []
        for _ in range(2):
            with self._run(tracker) as run:
                refs.append(run.log_model(pipeline))
        v1 = tracker.register_model(refs[0], "ride", description="first")
        v2 = tracker.register_model(refs[1], "ride")
        assert (v1.version, v2.version) == (1, 2)
        assert v1.description == "first" and v1.run_id == refs[0].run_id
        assert reader.model_versions("ride") == [1, 2]

        tracker.set_model_alias("ride", "staging", 1)
        tracker.set_model_alias("ride", "production", 1)
        tracker.set_model_alias("ride", "production", 2)  # moving an alias
        assert reader.alias_version("ride", "production") == 2
        assert reader.alias_version("ride", "staging") == 1
        assert tracker.get_model_version("ride", alias="production").version == 2
        assert tracker.get_model_version("ride", alias="latest").version == 2
        assert tracker.get_model_version("ride").version == 2
        assert tracker.get_model_version("ride", alias="v1").version == 1
        assert "staging" in tracker.get_model_version("ride", version=1).aliases

        updated = tracker.update_model_version("ride", 1, description="kept as fallback")
        assert updated.description == "kept as fallback"
        assert [v.version for v in tracker.list_model_versions("ride")] == [1, 2]

        for uri in ("models:/ride@production", "models:/ride/2", "models:/ride/latest"):
            assert list(tracker.load_model(uri).predict(rows)) == list(pipeline.predict(rows))
        assert tracker.load_model("ride", alias="staging") is not None

        tracker.delete_model_alias("ride", "staging")
        assert reader.alias_version("ride", "staging") is None
        with pytest.raises(NotFound):
            tracker.get_model_version("ride", alias="staging")
        with pytest.raises(NotFound):
            tracker.get_model_version("ride", version=99)
        with pytest.raises(NotFound):
            tracker.list_model_versions("no-such-model")
        with pytest.raises(InvalidInput, match="reserved"):
            tracker.set_model_alias("ride", "latest", 1)

    # -- search -----------------------------------------------------------------------------
    def test_search_runs_filters_and_orders(self, tracker: Tracker, reader: Reader) -> None:
        if not tracker.backend.capabilities.search_runs:
            with pytest.raises(UnsupportedOperation):
                tracker.search_runs(self.experiment)
            return
        for model, rmse in (("lasso", 7.1), ("ridge", 6.5), ("lasso", 6.2)):
            with self._run(tracker, tags={"developer": "ana"}) as run:
                run.log_params({"model": model})
                run.log_metric("rmse", rmse)
        found = tracker.search_runs(
            self.experiment,
            filter="metrics.rmse < 7 and params.model = 'lasso'",
            order_by=["metrics.rmse ASC"],
        )
        assert [(r.params["model"], r.metrics["rmse"]) for r in found] == [("lasso", 6.2)]
        ordered = tracker.search_runs(self.experiment, order_by="metrics.rmse DESC", max_results=2)
        assert [r.metrics["rmse"] for r in ordered] == [7.1, 6.5]
        assert ordered[0].status == "FINISHED" and ordered[0].tags["developer"] == "ana"
        assert ordered[0].experiment == self.experiment

    def test_search_sees_points_of_an_open_run(self, tracker: Tracker, reader: Reader) -> None:
        if not tracker.backend.capabilities.search_runs:
            pytest.skip("no search_runs on this backend")
        with self._run(tracker) as run:
            run.log_metric("rmse", 5.0)
            [info] = tracker.search_runs(self.experiment)
            assert info.metrics == {"rmse": 5.0} and info.status == "RUNNING"
