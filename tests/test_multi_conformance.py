"""The conformance suite on a two-backend tracker: MLflow (sqlite store) and W&B (offline).

Every run the suite reads back is read from each backend with that backend's own reader
(MLflow's ``MlflowClient``; W&B's ``wandb leet inspect``, see ``tests/wandb_reader.py``), and
the two must agree: the same params, metric points, tags, status, artifact files and texts,
parents, registered versions and aliases.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import trackkit
from trackkit.multi import MultiTracker
from trackkit.testing import ConformanceSuite

pytest.importorskip("mlflow")
pytest.importorskip("wandb")

from test_conformance_mlflow import MLflowReader
from wandb_reader import FAST, WANDB_VARIABLES, WandbReader

T = TypeVar("T")


@pytest.fixture(autouse=True)
def _wandb_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in WANDB_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def _same_point(a: tuple[int, float], b: tuple[int, float]) -> bool:
    """Equal points; MLflow keeps infinity as the largest float, W&B as infinity."""

    def norm(value: float) -> float:
        return math.copysign(math.inf, value) if abs(value) == sys.float_info.max else value

    x, y = norm(a[1]), norm(b[1])
    return a[0] == b[0] and (x == y or (math.isnan(x) and math.isnan(y)))


class BothReader:
    """Reads a run from MLflow and from W&B, each with its own reader; both must agree.

    The suite passes the primary's (MLflow's) run ids; the tracker says each backend's id.
    """

    def __init__(self, tracker: MultiTracker, mlflow: MLflowReader, wandb: WandbReader) -> None:
        self.tracker, self.mlflow, self.wandb = tracker, mlflow, wandb

    def _both(self, run_id: str, read: Callable[[Any, str], T], what: str) -> T:
        ids = self.tracker.run_ids(run_id)
        assert set(ids) == {"mlflow", "wandb"}, f"run {run_id} is not a run of the tracker"
        first, second = read(self.mlflow, ids["mlflow"]), read(self.wandb, ids["wandb"])
        assert first == second, f"{what} of run {run_id}: MLflow has {first!r}, W&B {second!r}"
        return first

    def params(self, run_id: str) -> dict[str, str]:
        return self._both(run_id, lambda r, i: r.params(i), "params")

    def metric_points(self, run_id: str, key: str) -> list[tuple[int, float]]:
        ids = self.tracker.run_ids(run_id)
        first = sorted(self.mlflow.metric_points(ids["mlflow"], key))
        second = sorted(self.wandb.metric_points(ids["wandb"], key))
        assert len(first) == len(second) and all(
            _same_point(a, b) for a, b in zip(first, second, strict=True)
        ), f"points of {key!r}: MLflow has {first[:20]!r}..., W&B {second[:20]!r}..."
        return first

    def tags(self, run_id: str) -> dict[str, str]:
        return self._both(run_id, lambda r, i: r.tags(i), "tags")

    def status(self, run_id: str) -> str:
        return self._both(run_id, lambda r, i: r.status(i), "status")

    def artifact_files(self, run_id: str) -> set[str]:
        return self._both(run_id, lambda r, i: r.artifact_files(i), "artifact files")

    def artifact_text(self, run_id: str, path: str) -> str:
        return self._both(run_id, lambda r, i: r.artifact_text(i, path), f"artifact {path}")

    def alias_version(self, name: str, alias: str) -> int | None:
        first, second = (
            self.mlflow.alias_version(name, alias),
            self.wandb.alias_version(name, alias),
        )
        assert first == second, f"{name}@{alias}: MLflow v{first}, W&B v{second}"
        return first

    def model_versions(self, name: str) -> list[int]:
        first, second = self.mlflow.model_versions(name), self.wandb.model_versions(name)
        assert first == second, f"versions of {name}: MLflow {first}, W&B {second}"
        return first

    def parent_id(self, run_id: str) -> str | None:
        ids = self.tracker.run_ids(run_id)
        first = self.mlflow.parent_id(ids["mlflow"])
        second = self.wandb.parent_id(ids["wandb"])
        expected = None if first is None else self.tracker.run_ids(first).get("wandb")
        assert second == expected, f"parent of {run_id}: MLflow {first}, W&B {second}"
        return first


class TestMLflowAndWandb(ConformanceSuite):
    @pytest.fixture
    def tracker(self, sqlite_uri: str, tmp_path: Path) -> Iterator[MultiTracker]:
        tracker = trackkit.get_tracker(
            ["mlflow", "wandb"],
            mlflow={"tracking_uri": sqlite_uri},
            wandb={"mode": "offline", "dir": tmp_path / "w", "settings": FAST},
        )
        assert isinstance(tracker, MultiTracker)
        yield tracker
        tracker.close()

    @pytest.fixture
    def reader(self, tracker: MultiTracker, sqlite_uri: str, tmp_path: Path) -> BothReader:
        return BothReader(tracker, MLflowReader(sqlite_uri, tmp_path), WandbReader(tmp_path / "w"))

    # W&B keeps neither a run's given start time nor a registered model's own tags: the pair
    # does these on MLflow and reports W&B's skip once, as the issue asks.
    SKIPPED_ON_WANDB = "not done on the wandb backend"

    def test_run_times(self, tracker: MultiTracker) -> None:  # type: ignore[override]
        with pytest.warns(trackkit.TrackkitWarning, match=self.SKIPPED_ON_WANDB):
            super().test_run_times(tracker)

    def test_registered_models_read_back_whole(self, tracker: MultiTracker, reader: Any) -> None:  # type: ignore[override]
        with pytest.warns(trackkit.TrackkitWarning, match=self.SKIPPED_ON_WANDB):
            super().test_registered_models_read_back_whole(tracker, reader)
