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
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from trackkit.errors import InvalidInput, NotFound, TrackkitWarning, UnsupportedOperation
from trackkit.normalize import LONG_VALUES_DIR
from trackkit.search import epoch_ms

if TYPE_CHECKING:
    from collections.abc import Mapping

    from trackkit.entities import RunInfo
    from trackkit.run import Run
    from trackkit.tracker import Tracker


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

    def parent_id(self, run_id: str) -> str | None:
        """Backends with ``nested_runs``: the parent run id stored natively, or None."""
        ...


#: why the model and registry checks skip where scikit-learn is not installed
SKLEARN_MISSING = (
    "scikit-learn is not installed: the model and registry checks log a fitted scikit-learn "
    "pipeline (pip install 'trackkit[ml]')"
)


def _fitted_pipeline() -> Any:
    """A small fitted pipeline and rows to predict; skips the calling test without scikit-learn."""
    pytest.importorskip("sklearn", reason=SKLEARN_MISSING)
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    rows: list[dict[str, Any]] = [{"zone": str(i % 4), "distance": float(i)} for i in range(40)]
    target = [2.0 * r["distance"] + int(r["zone"]) for r in rows]
    return make_pipeline(DictVectorizer(), LinearRegression()).fit(rows, target), rows[:5]


# -- the filter table: one grammar, the same answer on every backend ------------------------------
#: the runs the filter table searches, started in this order (so with distinct start times);
#: every key, value and status a case below relies on
FILTER_RUNS: tuple[dict[str, Any], ...] = (
    {
        "name": "lasso-1",
        "params": {
            "model": "lasso",
            "alpha": 0.1,
            "opt.lr": 0.01,
            "fast": False,
            "path": "C:\\data",
        },
        "metrics": {"rmse": 7.1, "r2": 0.5},
        "tags": {"dev": "ana", "note": "it's"},
        "status": "FINISHED",
    },
    {
        "name": "ridge-1",
        "params": {"model": "ridge", "alpha": 1.5, "data-set": "taxi"},
        "metrics": {"rmse": 6.5, "r2": 0.62},
        "tags": {"dev": "bo", "note": 'say "hi"'},
        "status": "FAILED",
    },
    {
        "name": "lasso-2",
        "params": {"model": "Lasso", "alpha": 0.5, "opt.lr": 0.1},
        "metrics": {"rmse": 6.2, "r2": math.nan},
        "tags": {"dev": "Ana"},
        "status": "KILLED",
    },
    {
        "name": "xgb-1",
        "params": {"model": "xgboost", "depth": 7, "fast": True},
        "metrics": {"rmse": 6.5, "r2": 0.71},
        "tags": {"dev": "ana", "stage": "prod"},
        "status": "FINISHED",
    },
    {"name": "empty-1", "params": {}, "metrics": {"loss": 1.0}, "tags": {}, "status": "FINISHED"},
)


@dataclass(frozen=True)
class FilterCase:
    """One search of the filter table: the run names expected in order, or the exact error.

    ``{id:<name>}`` and ``{start:<name>}`` in ``filter`` stand for that run's id and its start
    time in milliseconds (see :func:`case_text`).
    """

    filter: str | None
    expected: tuple[str, ...] = ()
    order_by: tuple[str, ...] = ()
    max_results: int = 100
    error: str | None = None


def _ok(filter: str | None, *expected: str, order_by: tuple[str, ...] = (), max_results: int = 100) -> FilterCase:  # fmt: skip
    return FilterCase(filter, expected, order_by, max_results)


def _bad(filter: str, problem: str) -> FilterCase:
    return FilterCase(filter, error=f"search filter {filter!r}: {problem}")


def _bad_order(item: str, problem: str) -> FilterCase:
    return FilterCase(None, order_by=(item,), error=f"order_by item {item!r}: {problem}")


_NEWEST_FIRST = ("empty-1", "xgb-1", "lasso-2", "ridge-1", "lasso-1")
_NOT_AN_ATTRIBUTE = (
    "is not an attribute (use run_id, run_name, status, parent_id, start_time, end_time); "
    "name other keys as metrics.<key>, params.<key> or tags.<key>"
)

#: the filter table: run by :meth:`ConformanceSuite.test_filter_table` on every backend
# fmt: off
FILTER_CASES: tuple[FilterCase, ...] = (
    # no filter: newest first
    _ok(None, *_NEWEST_FIRST),
    _ok("   ", *_NEWEST_FIRST),
    # metrics: numbers; NaN matches only !=, a missing metric nothing
    _ok("metrics.rmse < 7", "xgb-1", "lasso-2", "ridge-1"),
    _ok("metrics.rmse <= 6.5", "xgb-1", "lasso-2", "ridge-1"),
    _ok("metrics.rmse = 6.5", "xgb-1", "ridge-1"),
    _ok("metrics.rmse != 6.5", "lasso-2", "lasso-1"),
    _ok("metrics.rmse > 6.2 and metrics.rmse < 7.1", "xgb-1", "ridge-1"),
    _ok("metrics.rmse >= 62e-1", "xgb-1", "lasso-2", "ridge-1", "lasso-1"),
    _ok("metrics.r2 != 0.5", "xgb-1", "lasso-2", "ridge-1"),
    _ok("metrics.r2 > 0", "xgb-1", "ridge-1", "lasso-1"),
    _ok("metrics.loss > -1", "empty-1"),
    _ok("metrics.`rmse` < 6.3", "lasso-2"),
    _ok("metric.rmse <> 6.5 AND metrics.rmse > .5", "lasso-2", "lasso-1"),
    # params: text, compared as text whatever type was logged
    _ok("params.model = 'lasso'", "lasso-1"),
    _ok('params.model = "lasso"', "lasso-1"),
    _ok("params.model != 'lasso'", "xgb-1", "lasso-2", "ridge-1"),
    _ok("params.model LIKE '%sso'", "lasso-2", "lasso-1"),
    _ok("params.model LIKE '_idge'", "ridge-1"),
    _ok("params.model ILIKE 'LASSO'", "lasso-2", "lasso-1"),
    _ok("params.model IN ('ridge', 'xgboost')", "xgb-1", "ridge-1"),
    _ok("params.model NOT IN ('ridge', 'xgboost')", "lasso-2", "lasso-1"),
    _ok("params.alpha = '0.1'", "lasso-1"),
    _ok("params.alpha = '1.5'", "ridge-1"),
    _ok("params.depth = '7'", "xgb-1"),
    _ok("params.fast = 'True'", "xgb-1"),
    _ok("param.fast = 'False'", "lasso-1"),
    _ok("params.opt.lr = '0.01'", "lasso-1"),
    _ok("parameters.`opt.lr` = '0.1'", "lasso-2"),
    _ok("params.`data-set` = 'taxi'", "ridge-1"),
    _ok("params.path = 'C:\\data'", "lasso-1"),
    _ok("params.alpha IS NULL", "empty-1", "xgb-1"),
    _ok("params.alpha is not null", "lasso-2", "ridge-1", "lasso-1"),
    # tags, and quotes inside values
    _ok("tags.dev = 'ana'", "xgb-1", "lasso-1"),
    _ok("tags.dev ILIKE 'ana'", "xgb-1", "lasso-2", "lasso-1"),
    _ok("tags.dev IN ('bo', 'Ana')", "lasso-2", "ridge-1"),
    _ok("tags.note = 'it''s'", "lasso-1"),
    _ok("tags.note = \"it's\"", "lasso-1"),
    _ok("tags.note = 'say \"hi\"'", "ridge-1"),
    _ok('tags.note = "say \\"hi\\""', "ridge-1"),
    _ok("tags.dev IS NULL", "empty-1"),
    _ok("tag.stage = 'prod' and tags.dev = 'ana'", "xgb-1"),
    # attributes
    _ok("attributes.status = 'FAILED'", "ridge-1"),
    _ok("status != 'FINISHED'", "lasso-2", "ridge-1"),
    _ok("attributes.status IN ('KILLED', 'FAILED')", "lasso-2", "ridge-1"),
    _ok("attr.status LIKE 'FIN%'", "empty-1", "xgb-1", "lasso-1"),
    _ok("attributes.run_name = 'lasso-2'", "lasso-2"),
    _ok("run_name LIKE 'lasso-%'", "lasso-2", "lasso-1"),
    _ok("attributes.`Run Name` ILIKE 'RIDGE-1'", "ridge-1"),
    _ok("attributes.run_id = '{id:xgb-1}'", "xgb-1"),
    _ok("run.run_id IN ('{id:xgb-1}', '{id:lasso-1}')", "xgb-1", "lasso-1"),
    _ok("attributes.run_id NOT IN ('{id:xgb-1}')", "empty-1", "lasso-2", "ridge-1", "lasso-1"),
    _ok("attributes.start_time >= {start:lasso-2}", "empty-1", "xgb-1", "lasso-2"),
    _ok("created < {start:ridge-1}", "lasso-1"),
    _ok("attributes.end_time > 0 and params.model = 'ridge'", "ridge-1"),
    # several conditions
    _ok("metrics.rmse < 7 AND params.model LIKE '%o%' and tags.dev = 'ana'", "xgb-1"),
    _ok("params.model = 'lasso' and metrics.rmse < 7"),
    # order_by: ties newest first, NaN then missing values last in both directions
    _ok(None, "lasso-2", "xgb-1", "ridge-1", "lasso-1", "empty-1", order_by=("metrics.rmse",)),
    _ok(None, "lasso-1", "xgb-1", "ridge-1", "lasso-2", "empty-1", order_by=("metrics.rmse DESC",)),
    _ok(None, "lasso-2", "ridge-1", "xgb-1", "lasso-1", "empty-1", order_by=("metrics.rmse ASC", "attributes.run_name")),
    _ok(None, "xgb-1", "ridge-1", "lasso-1", "lasso-2", "empty-1", order_by=("metrics.r2 DESC",)),
    _ok(None, "lasso-1", "ridge-1", "xgb-1", "lasso-2", "empty-1", order_by=("metrics.r2 asc",)),
    _ok(None, "lasso-2", "lasso-1", "ridge-1", "xgb-1", "empty-1", order_by=("params.model",)),
    _ok(None, "ridge-1", "xgb-1", "lasso-1", "lasso-2", "empty-1", order_by=("tags.dev DESC",)),
    _ok(None, "lasso-1", "ridge-1", "lasso-2", "xgb-1", "empty-1", order_by=("attributes.start_time ASC",)),
    _ok(None, "empty-1", "lasso-1", "lasso-2", "ridge-1", "xgb-1", order_by=("run_name",)),
    _ok(None, "ridge-1", "empty-1", "xgb-1", "lasso-1", "lasso-2", order_by=("attributes.status",)),
    _ok(None, *_NEWEST_FIRST, order_by=("params.missing DESC",)),
    # max_results cuts after sorting, ties included
    _ok(None, "empty-1", "xgb-1", max_results=2),
    _ok("metrics.rmse > 0", "lasso-1", "xgb-1", order_by=("metrics.rmse DESC",), max_results=2),
    _ok("tags.dev != 'bo'", "lasso-2", "xgb-1", order_by=("metrics.rmse",), max_results=2),
    # refused the same way everywhere
    _bad("metrics.rmse < '7'", "metrics.rmse compares with a number, got '7'"),
    _bad(
        "attributes.experiment = 'x'",
        "attributes.experiment is not searched or ordered by: "
        "pass the experiment names to search_runs(experiment=...)",
    ),
    _bad("params.alpha = 0.1", "params.alpha compares with a quoted string, got 0.1"),
    _bad("params.model < 'm'", "params.model takes =, !=, LIKE, ILIKE, IN, NOT IN, IS NULL, IS NOT NULL; not <"),
    _bad("metrics.rmse LIKE '6%'", "metrics.rmse takes =, !=, <, <=, >, >=; not LIKE"),
    _bad("metrics.rmse IS NULL", "metrics.rmse takes =, !=, <, <=, >, >=; not IS NULL"),
    _bad("model = 'lasso'", f"'model' {_NOT_AN_ATTRIBUTE}"),
    _bad("Params.model = 'lasso'", "unknown entity 'Params' in 'Params.model': use metrics.<key>, params.<key>, tags.<key> or attributes.<name>"),
    _bad("params.model = 'a' OR params.model = 'b'", "conditions are joined with AND, got 'OR'"),
    _bad("params.model = 'lasso", "a quote is never closed in \"'lasso\""),
    _bad("metrics.rmse <", "ends too early: expected a value for metrics.rmse <"),
    _bad("params.model IN ()", "params.model IN takes at least one quoted string"),
    _bad("params.data-set = 'taxi'", "cannot read \"-set = 'taxi'\": a key with characters other than letters, digits, '_' and '.' goes in backticks, e.g. params.`data-set`"),
    _bad_order("metrics.rmse UP", "expected ASC or DESC after the name, got 'UP'"),
    _bad_order("rmse", f"'rmse' {_NOT_AN_ATTRIBUTE}"),
    _bad_order(
        "attributes.experiment",
        "attributes.experiment is not searched or ordered by: "
        "pass the experiment names to search_runs(experiment=...)",
    ),
)
# fmt: on

#: the runs the parent-link cases search, in start order: (name, parent name or None)
PARENT_RUNS: tuple[tuple[str, str | None], ...] = (
    ("search", None),
    ("trial-0", "search"),
    ("trial-1", "search"),
    ("fold-0", "trial-0"),
    ("other", None),
)
#: searches on ``attributes.parent_id``: run by :meth:`ConformanceSuite.test_nested_runs` on
#: backends that declare ``nested_runs`` (the others refuse a parent)
# fmt: off
PARENT_FILTER_CASES: tuple[FilterCase, ...] = (
    _ok("attributes.parent_id = '{id:search}'", "trial-1", "trial-0"),
    _ok("parent_id = '{id:trial-0}'", "fold-0"),
    _ok("attributes.parent_id IN ('{id:search}', '{id:trial-0}')", "fold-0", "trial-1", "trial-0"),
    _ok("attributes.parent_id != '{id:search}'", "fold-0"),
    _ok("attributes.parent_id LIKE '%'", "fold-0", "trial-1", "trial-0"),
    _ok("attributes.parent_id = '{id:search}' and run_name = 'trial-0'", "trial-0"),
    _ok("attributes.parent_id = 'no-such-run'"),
)
# fmt: on

_PLACEHOLDER = re.compile(r"\{(id|start):([\w-]+)\}")


def case_text(filter: str | None, runs: Mapping[str, RunInfo]) -> str | None:
    """``filter`` with ``{id:<name>}`` and ``{start:<name>}`` replaced from ``runs`` (by name)."""
    if filter is None:
        return None

    def value(match: re.Match[str]) -> str:
        run = runs[match[2]]
        if match[1] == "id":
            return run.id
        started = epoch_ms(run.start_time)
        assert started is not None, f"run {match[2]} has no start time"
        return str(started)

    return _PLACEHOLDER.sub(value, filter)


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
        if not tracker.backend.capabilities.registry:  # checked without scikit-learn
            with pytest.raises(UnsupportedOperation):
                tracker.list_model_versions("ride")
            return
        pipeline, rows = _fitted_pipeline()
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

    def test_filter_table(self, tracker: Tracker, reader: Reader) -> None:
        """Every case of FILTER_CASES: the same runs in the same order, or the same error."""
        if not tracker.backend.capabilities.search_runs:
            with pytest.raises(UnsupportedOperation):
                tracker.search_runs(self.experiment, filter="metrics.rmse < 7")
            return
        for spec in FILTER_RUNS:
            run = self._run(tracker, name=spec["name"], tags=spec["tags"])
            run.log_params(spec["params"])
            run.log_metrics(spec["metrics"])
            run.end(spec["status"])
        runs = {r.name: r for r in tracker.search_runs(self.experiment)}
        assert sorted(runs) == sorted(spec["name"] for spec in FILTER_RUNS)
        failures = []
        for case in FILTER_CASES:
            text = case_text(case.filter, runs)
            shown = f"filter={text!r} order_by={list(case.order_by)} max_results={case.max_results}"
            try:
                found = tracker.search_runs(
                    self.experiment,
                    filter=text,
                    order_by=list(case.order_by),
                    max_results=case.max_results,
                )
            except InvalidInput as e:
                if str(e) != case.error:
                    failures.append(f"{shown}: raised {e}, expected {case.error or case.expected}")
                continue
            names = tuple(r.name for r in found)
            if case.error is not None:
                failures.append(f"{shown}: returned {names}, expected {case.error}")
            elif names != case.expected:
                failures.append(f"{shown}: returned {names}, expected {case.expected}")
        assert not failures, f"{len(failures)} of {len(FILTER_CASES)} cases failed:\n" + "\n".join(
            failures
        )

    # -- nested runs ------------------------------------------------------------------------
    def test_a_parent_is_refused_without_nested_runs(self, tracker: Tracker) -> None:
        if tracker.backend.capabilities.nested_runs:
            pytest.skip("this backend declares nested_runs: test_nested_runs checks them")
        with self._run(tracker) as parent, pytest.raises(UnsupportedOperation, match="parent"):
            self._run(tracker, parent=parent)

    def test_nested_runs(self, tracker: Tracker, reader: Reader) -> None:
        """Children know their parent (natively, and in RunInfo.parent_id); the parent-link
        filter cases give the same answer as on every other backend with nested runs."""
        if not tracker.backend.capabilities.nested_runs:
            pytest.skip(
                f"the {tracker.backend.name} backend does not declare nested_runs: "
                "test_a_parent_is_refused_without_nested_runs checks its answer"
            )
        started: dict[str, Run] = {}
        for name, parent in PARENT_RUNS:
            run = self._run(tracker, name=name, parent=started[parent] if parent else None)
            run.log_metric("loss", 1.0)
            run.end()
            started[name] = run
        for name, parent in PARENT_RUNS:
            expected = started[parent].id if parent else None
            assert reader.parent_id(started[name].id) == expected, name
            assert tracker.get_run(started[name].id).parent_id == expected, name
        if not tracker.backend.capabilities.search_runs:
            return
        runs = {r.name: r for r in tracker.search_runs(self.experiment)}
        failures = []
        for case in PARENT_FILTER_CASES:
            text = case_text(case.filter, runs)
            names = tuple(r.name for r in tracker.search_runs(self.experiment, filter=text))
            if names != case.expected:
                failures.append(f"filter={text!r}: returned {names}, expected {case.expected}")
        assert not failures, "\n".join(failures)

    def test_search_sees_points_of_an_open_run(self, tracker: Tracker, reader: Reader) -> None:
        if not tracker.backend.capabilities.search_runs:
            pytest.skip("no search_runs on this backend")
        with self._run(tracker) as run:
            run.log_metric("rmse", 5.0)
            [info] = tracker.search_runs(self.experiment)
            assert info.metrics == {"rmse": 5.0} and info.status == "RUNNING"

    # -- reading back: what `trackkit runs`/`history` and a copier read ---------------------
    def _skip_unless(self, tracker: Tracker, capability: str) -> None:
        if not getattr(tracker.backend.capabilities, capability):
            pytest.skip(
                f"the {tracker.backend.name} backend does not declare {capability}: its calls "
                "raise UnsupportedOperation (test_read_side_is_refused_where_not_declared)"
            )

    def test_read_side_is_refused_where_not_declared(self, tracker: Tracker) -> None:
        declared = tracker.backend.capabilities
        calls = {
            "metric_history": lambda: tracker.get_metric_history("x", "loss"),
            "list_artifacts": lambda: tracker.list_artifacts("x"),
            "list_experiments": tracker.list_experiments,
        }
        refused = [name for name in calls if not getattr(declared, name)]
        if not refused:
            pytest.skip(f"the {tracker.backend.name} backend declares the whole read side")
        for name in refused:
            with pytest.raises(UnsupportedOperation, match=tracker.backend.name):
                calls[name]()

    def test_runs_read_back_whole(self, tracker: Tracker, reader: Reader) -> None:
        """get_run and search_runs give params, tags, status, times, parent and url: all a
        copier needs of a run but its metric points and artifacts."""
        self._skip_unless(tracker, "search_runs")
        nested = tracker.backend.capabilities.nested_runs
        with self._run(tracker, name="parent", tags={"team": "ride"}) as parent:
            parent.log_params({"alpha": 0.5, "model": "lasso"})
            parent.log_metric("rmse", 6.5)
        child = self._run(tracker, name="child", parent=parent if nested else None)
        child.log_metric("rmse", 7.0)
        child.end("FAILED")
        runs = {r.name: r for r in tracker.search_runs(self.experiment)}
        for run in (parent, child):
            info = tracker.get_run(run.id)
            found = runs[run.name]
            assert (found.id, found.params, found.tags) == (info.id, info.params, info.tags)
            assert info.params == reader.params(run.id)
            assert info.status == reader.status(run.id)
            assert {k: v for k, v in info.tags.items() if k in reader.tags(run.id)} == {
                k: v for k, v in reader.tags(run.id).items() if k in info.tags
            }
            assert info.start_time is not None and info.start_time.tzinfo is not None
            assert info.end_time is not None and info.start_time <= info.end_time
            assert info.experiment == self.experiment
            assert info.url == run.url == found.url
            if info.url is not None:  # an address without credentials in it
                assert re.match(r"https?://[^/@]+(/|$)", info.url), info.url
        assert runs["parent"].params == {"alpha": "0.5", "model": "lasso"}
        assert runs["parent"].tags["team"] == "ride"
        assert (runs["parent"].status, runs["child"].status) == ("FINISHED", "FAILED")
        assert runs["child"].parent_id == (parent.id if nested else None)
        assert runs["parent"].parent_id is None

    def test_a_run_says_where_to_see_it(self, tracker: Tracker) -> None:
        with self._run(tracker) as run:
            run.log_metric("m", 1.0)
        shown = run.describe()
        assert run.id in shown
        if run.url is not None:
            assert run.url in shown
        assert "password" not in shown.lower() and "api_key" not in shown.lower()

    def test_search_runs_as_a_frame(self, tracker: Tracker) -> None:
        """The DataFrame has mlflow.search_runs's layout on every backend, rows in order."""
        self._skip_unless(tracker, "search_runs")
        pd = pytest.importorskip("pandas", reason="output_format='pandas' needs pandas")
        from trackkit.frames import EXTRA_COLUMNS, INFO_COLUMNS

        for rmse, model in ((6.5, "lasso"), (6.2, "ridge"), (None, "xgb")):
            with self._run(tracker, name=f"{model}-run", tags={"dev": "ana"}) as run:
                run.log_param("model", model)
                if rmse is not None:
                    run.log_metric("rmse", rmse)
        none = "params.model = 'none'"
        empty = tracker.search_runs(self.experiment, filter=none, output_format="pandas")
        assert list(empty.columns) == [*INFO_COLUMNS, *EXTRA_COLUMNS] and len(empty) == 0
        listed = tracker.search_runs(self.experiment, order_by="metrics.rmse")
        frame = tracker.search_runs(
            self.experiment, order_by="metrics.rmse", output_format="pandas"
        )
        columns = list(frame.columns)
        assert columns[:6] == list(INFO_COLUMNS) and columns[-3:] == list(EXTRA_COLUMNS)
        assert {"metrics.rmse", "params.model", "tags.dev"} <= set(columns)
        assert all(c.split(".")[0] in ("metrics", "params", "tags") for c in columns[6:-3])
        assert list(frame["run_id"]) == [r.id for r in listed]
        assert list(frame["run_name"]) == ["ridge-run", "lasso-run", "xgb-run"]
        assert list(frame["params.model"]) == ["ridge", "lasso", "xgb"]
        assert frame["metrics.rmse"].dtype == "float64"
        values = list(frame["metrics.rmse"])
        assert values[:2] == [6.2, 6.5] and math.isnan(values[2])
        assert set(frame["status"]) == {"FINISHED"}
        assert set(frame["backend"]) == {tracker.backend.name}
        assert list(frame["tags.dev"]) == ["ana"] * 3
        assert frame["parent_id"].isna().all()
        assert frame["parent_id"].dtype == frame["run_name"].dtype  # text, though empty
        for column in ("start_time", "end_time"):
            assert pd.api.types.is_datetime64_any_dtype(frame[column]), frame[column].dtype
            assert str(frame[column].dt.tz) == "UTC"
        for row, info in zip(frame.itertuples(index=False), listed, strict=True):
            assert row.start_time.value // 1_000_000 == epoch_ms(info.start_time)

    def test_metric_history(self, tracker: Tracker, reader: Reader) -> None:
        """Every point, in step order, with its step, value and timestamp."""
        self._skip_unless(tracker, "metric_history")
        base = 1_700_000_000_000
        with self._run(tracker) as run:
            for step in (0, 1, 2, 5, 3, 4):  # out of order, as a resumed loop may log them
                run.log_metric("loss", 1.0 / (step + 1), step=step, timestamp=base + step)
            run.log_metric("acc", 0.5)
        history = tracker.get_metric_history(run.id, "loss")
        assert [p.step for p in history] == [0, 1, 2, 3, 4, 5]
        assert [p.value for p in history] == [1.0 / (s + 1) for s in range(6)]
        assert [p.timestamp for p in history] == [base + s for s in range(6)]
        assert sorted(reader.metric_points(run.id, "loss")) == [(p.step, p.value) for p in history]
        with pytest.raises(NotFound, match="acc"):
            tracker.get_metric_history(run.id, "no-such-metric")
        both = tracker.get_metric_histories(run.id, output_format="dict")
        assert list(both[run.id]) == ["acc", "loss"] and both[run.id]["loss"] == history

    def test_metric_histories_of_a_run_at_once(self, tracker: Tracker, reader: Reader) -> None:
        """``Backend.get_metric_histories``, what a copier reads a run's metrics with: every
        point of each key asked for, as ``get_metric_history`` gives them."""
        self._skip_unless(tracker, "metric_history")
        base = 1_700_000_000_000
        with self._run(tracker) as run:
            for step in (3, 0, 2, 1):
                run.log_metric("loss", 1.0 / (step + 1), step=step, timestamp=base + step)
            run.log_metric("loss", 0.75, step=0, timestamp=base + 99)  # two points at step 0
            run.log_metric("acc", math.nan, step=4, timestamp=base)
            run.log_metric("other", 1.0)
        backend = tracker.backend
        found = backend.get_metric_histories(run.id, ["loss", "acc", "missing"])
        assert set(found) == {"loss", "acc", "missing"} and found["missing"] == []
        assert sorted(found["loss"]) == sorted(backend.get_metric_history(run.id, "loss"))
        assert sorted((p.step, p.value) for p in found["loss"]) == sorted(
            reader.metric_points(run.id, "loss")
        )
        assert sorted((p.step, p.timestamp) for p in found["loss"]) == [
            (0, base), (0, base + 99), (1, base + 1), (2, base + 2), (3, base + 3)
        ]  # fmt: skip
        [(step, value, stamp)] = found["acc"]
        assert (step, stamp) == (4, base) and math.isnan(value)
        with pytest.raises(NotFound):
            backend.get_metric_histories("no-such-run", ["loss"])

    def test_metric_histories_as_a_frame(self, tracker: Tracker) -> None:
        self._skip_unless(tracker, "metric_history")
        pytest.importorskip("pandas", reason="output_format='pandas' needs pandas")
        from trackkit.frames import HISTORY_COLUMNS

        runs = []
        for name, steps in (("a", 3), ("b", 2)):
            with self._run(tracker, name=name) as run:
                for step in range(steps):
                    run.log_metric("loss", float(step), step=step)
                run.log_metric("other", 1.0)
            runs.append(run)
        frame = tracker.get_metric_histories([r.id for r in runs], "loss")
        assert list(frame.columns) == list(HISTORY_COLUMNS)
        assert list(frame["run_name"]) == ["a", "a", "a", "b", "b"]
        assert list(frame["step"]) == [0, 1, 2, 0, 1] and frame["step"].dtype == "int64"
        assert list(frame["value"]) == [0.0, 1.0, 2.0, 0.0, 1.0]
        assert set(frame["key"]) == {"loss"} and str(frame["timestamp"].dt.tz) == "UTC"
        with pytest.raises(NotFound, match="nope"):
            tracker.get_metric_histories([r.id for r in runs], ["loss", "nope"])

    def test_list_and_download_artifacts(self, tracker: Tracker, tmp_path: Path) -> None:
        self._skip_unless(tracker, "list_artifacts")
        with self._run(tracker) as run:
            run.log_text("hello", "notes.txt")
            run.log_text("a" * 10, "data/a.txt")
            run.log_text("bb", "data/inner/b.txt")
        top = tracker.list_artifacts(run.id)
        assert [(e.path, e.is_dir) for e in top if e.path in ("data", "notes.txt")] == [
            ("data", True),
            ("notes.txt", False),
        ]
        files = {e.path: e.size for e in tracker.list_artifacts(run.id, recursive=True)}
        assert files["notes.txt"] == 5 and files["data/a.txt"] == 10
        assert files["data/inner/b.txt"] == 2 and files["data/inner"] is None
        assert [e.path for e in tracker.list_artifacts(run.id, "data/inner")] == [
            "data/inner/b.txt"
        ]
        assert tracker.list_artifacts(run.id, "no/such/dir") == []
        if tracker.backend.capabilities.download_artifacts:
            local = tracker.download_artifacts(run.id, "data", tmp_path / "copy")
            assert (Path(local) / "inner" / "b.txt").read_bytes() == b"bb"

    def test_artifacts_download_byte_identical(
        self, tracker: Tracker, reader: Reader, tmp_path: Path
    ) -> None:
        """What a copier reads: every file listed with its size, and downloaded byte for byte
        (binary content, a file in a nested directory, an empty file)."""
        self._skip_unless(tracker, "list_artifacts")
        self._skip_unless(tracker, "download_artifacts")
        folder = tmp_path / "blobs"
        (folder / "inner").mkdir(parents=True)
        contents = {
            "blobs/all-bytes.bin": bytes(range(256)) * 33,
            "blobs/inner/crlf.txt": b"line\r\nnext\r\n\x00end",
            "blobs/empty.bin": b"",
        }
        for path, content in contents.items():
            (tmp_path / path).write_bytes(content)
        with self._run(tracker) as run:
            run.log_artifact(folder, "data")
        stored = {f"data/{p}" for p in contents}
        assert stored <= reader.artifact_files(run.id)
        listed = {e.path: e for e in tracker.list_artifacts(run.id, recursive=True)}
        for path, content in contents.items():
            entry = listed[f"data/{path}"]
            assert not entry.is_dir and entry.size in (len(content), None), entry
            local = tracker.download_artifacts(run.id, f"data/{path}", tmp_path / "dl" / path)
            assert Path(local).read_bytes() == content, path

    def test_list_experiments(self, tracker: Tracker) -> None:
        self._skip_unless(tracker, "list_experiments")
        for experiment in (self.experiment, f"{self.experiment}-other"):
            with tracker.start_run(experiment=experiment) as run:
                run.log_metric("m", 1.0)
        names = tracker.list_experiments()
        assert {self.experiment, f"{self.experiment}-other"} <= set(names)
        assert names == sorted(names)

    def test_list_models_of_a_run(self, tracker: Tracker) -> None:
        """``Backend.list_models``: the models a run logged (what a copier copies as models),
        each with a URI that loads it; none for a run without models."""
        from trackkit.backend import Backend

        backend = tracker.backend
        if not backend.capabilities.models:
            pytest.skip(f"the {backend.name} backend stores no models")
        if type(backend).list_models is Backend.list_models:
            self._skip_unless(tracker, "list_artifacts")  # what the default finds them with
        pipeline, rows = _fitted_pipeline()
        with self._run(tracker) as run:
            run.log_text("not a model", "notes/readme.txt")
            ref = run.log_model(pipeline, "model")
        with self._run(tracker) as plain:
            plain.log_text("no model here", "notes/readme.txt")
        [found] = backend.list_models(run.id)
        assert (found.name, found.run_id, found.backend) == ("model", run.id, backend.name)
        loaded = tracker.load_model(found.uri)
        assert list(loaded.predict(rows)) == list(pipeline.predict(rows))
        assert tracker.load_model(ref.uri) is not None
        assert backend.list_models(plain.id) == []

    def test_run_times(self, tracker: Tracker) -> None:
        """A run started and ended at given times keeps them (``run_times``); elsewhere a
        start time is refused."""
        from datetime import datetime, timezone

        from trackkit.backend import end_run

        started, ended = 1_600_000_000_123, 1_600_000_360_456
        if not tracker.backend.capabilities.run_times:
            with pytest.raises(UnsupportedOperation, match="start_time"):
                self._run(tracker, start_time=started)
            return
        with self._run(tracker, start_time=started) as run:
            run.log_metric("m", 1.0)
        end_run(tracker.backend, run.id, "FAILED", end_time=ended)
        info = tracker.get_run(run.id)
        assert epoch_ms(info.start_time) == started and epoch_ms(info.end_time) == ended
        assert info.status == "FAILED"
        moment = datetime(2021, 5, 4, 3, 2, 1, 7000, tzinfo=timezone.utc)
        with self._run(tracker, start_time=moment) as other:
            other.log_metric("m", 1.0)
        assert tracker.get_run(other.id).start_time == moment
        with pytest.raises(InvalidInput, match="start_time"):
            self._run(tracker, start_time=-5)

    def _skip_unless_models_are_listed(self, tracker: Tracker) -> None:
        """Skip unless the backend has a registry whose models it can list (itself, or through
        the core-owned offline registry)."""
        if not tracker.backend.capabilities.registry:
            pytest.skip(f"the {tracker.backend.name} backend has no registry")
        if (
            not tracker.backend.capabilities.list_registered_models
            and tracker.backend.offline_registry() is None
        ):
            self._skip_unless(tracker, "list_registered_models")

    def test_registered_models_read_back_whole(self, tracker: Tracker, reader: Reader) -> None:
        """What a copier reads of the registry: every model with its description, aliases,
        latest version and tags; each version with its run, description and tags."""
        self._skip_unless_models_are_listed(tracker)
        pipeline, _ = _fitted_pipeline()
        with self._run(tracker) as run:
            ref = run.log_model(pipeline)
        first = tracker.register_model(ref, "ride-whole", description="first")
        second = tracker.register_model(ref, "ride-whole")
        tracker.update_registered_model("ride-whole", "the ride model")
        tracker.set_model_version_tag("ride-whole", second.version, "reviewed", "yes")
        tracker.set_model_alias("ride-whole", "champion", second.version)
        if tracker.backend.capabilities.registered_model_tags:
            tracker.set_registered_model_tag("ride-whole", "team", "rides")
            tracker.set_registered_model_tag("ride-whole", "team", "pricing")  # changed
            tracker.set_registered_model_tag("ride-whole", "owner", "ana")
            tags = {"owner": "ana", "team": "pricing"}
        else:
            with pytest.raises(UnsupportedOperation, match="set_registered_model_tag"):
                tracker.set_registered_model_tag("ride-whole", "team", "rides")
            tags = {}
        [model] = [m for m in tracker.list_registered_models() if m.name == "ride-whole"]
        assert model.description == "the ride model"
        assert model.aliases == {"champion": second.version}
        assert model.latest_version == second.version
        assert model.tags == tags
        assert reader.model_versions("ride-whole") == [first.version, second.version]
        assert reader.alias_version("ride-whole", "champion") == second.version
        versions = tracker.list_model_versions("ride-whole")
        assert [(v.version, v.run_id, v.description) for v in versions] == [
            (first.version, run.id, "first"),
            (second.version, run.id, None),
        ]
        assert versions[1].tags.get("reviewed") == "yes" and versions[1].aliases == ("champion",)
        if tracker.backend.capabilities.registered_model_tags:
            with pytest.raises(NotFound):
                tracker.set_registered_model_tag("no-such-model", "team", "rides")

    def test_list_registered_models(self, tracker: Tracker, reader: Reader) -> None:
        """Registered models with their aliases and latest versions (offline registries too)."""
        self._skip_unless_models_are_listed(tracker)
        pipeline, _ = _fitted_pipeline()
        refs = []
        for _ in range(2):
            with self._run(tracker) as run:
                refs.append(run.log_model(pipeline))
        tracker.register_model(refs[0], "ride-listed", description="first")
        tracker.register_model(refs[1], "ride-listed")
        tracker.register_model(refs[0], "another-listed")
        tracker.set_model_alias("ride-listed", "production", 1)
        listed = {m.name: m for m in tracker.list_registered_models()}
        names = [n for n in listed if n.endswith("-listed")]
        assert names == ["another-listed", "ride-listed"]
        ride = listed["ride-listed"]
        assert ride.latest_version == 2 and ride.aliases == {"production": 1}
        assert reader.alias_version("ride-listed", "production") == 1
        assert listed["another-listed"].latest_version == 1
        assert listed["another-listed"].aliases == {}
        versions = tracker.list_model_versions("ride-listed")
        assert [(v.version, v.description) for v in versions] == [(1, "first"), (2, None)]
