"""trackkit's conformance suite on the example backend.

The reader opens the run directories with ``json`` and ``pathlib`` only, never through
trackkit, so the suite checks what really reached the files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit.testing import ConformanceSuite


class FileReader:
    """Reads the example backend's files directly."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _run_dir(self, run_id: str) -> Path:
        [found] = [meta.parent for meta in self.root.glob(f"*/{run_id}/meta.json")]
        return found

    def _json(self, run_id: str, name: str) -> Any:
        # Python's json reads the NaN, Infinity and -Infinity the backend writes.
        return json.loads((self._run_dir(run_id) / name).read_text(encoding="utf-8"))

    def params(self, run_id: str) -> dict[str, str]:
        return dict(self._json(run_id, "params.json"))

    def metric_points(self, run_id: str, key: str) -> list[tuple[int, float]]:
        text = (self._run_dir(run_id) / "metrics.jsonl").read_text(encoding="utf-8")
        points = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [(p["step"], float(p["value"])) for p in points if p["key"] == key]

    def tags(self, run_id: str) -> dict[str, str]:
        return dict(self._json(run_id, "tags.json"))

    def status(self, run_id: str) -> str:
        return str(self._json(run_id, "meta.json")["status"])

    def artifact_files(self, run_id: str) -> set[str]:
        base = self._run_dir(run_id) / "artifacts"
        return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}

    def artifact_text(self, run_id: str, path: str) -> str:
        return (self._run_dir(run_id) / "artifacts" / path).read_text(encoding="utf-8")

    def alias_version(self, name: str, alias: str) -> int | None:
        raise AssertionError("the example backend has no model registry")

    def model_versions(self, name: str) -> list[int]:
        raise AssertionError("the example backend has no model registry")


class TestExampleBackend(ConformanceSuite):
    @pytest.fixture
    def tracker(self, tmp_path: Path) -> trackkit.Tracker:
        return trackkit.get_tracker("example", root=tmp_path / "runs")

    @pytest.fixture
    def reader(self, tmp_path: Path) -> FileReader:
        return FileReader(tmp_path / "runs")


# -- what the suite does not cover: the file layout itself -------------------------------------
def test_runs_are_plain_files_in_the_documented_layout(tmp_path: Path) -> None:
    tracker = trackkit.get_tracker("example", root=tmp_path / "runs")
    with tracker.start_run(experiment="demo", name="first") as run:
        run.log_params({"model": {"alpha": 0.1}})
        run.log_metric("rmse", 6.4, step=3)
        run.log_metric("nan", float("nan"))
        run.log_metric("neg", -math.inf)
        run.set_tag("developer", "ana")
    run_dir = tmp_path / "runs" / "demo" / run.id
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "artifacts",
        "meta.json",
        "metrics.jsonl",
        "params.json",
        "tags.json",
    ]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert (meta["name"], meta["status"], meta["experiment"]) == ("first", "FINISHED", "demo")
    assert json.loads((run_dir / "params.json").read_text()) == {"model.alpha": "0.1"}
    assert json.loads((run_dir / "tags.json").read_text()) == {"developer": "ana"}
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    points = {p["key"]: p for p in map(json.loads, lines)}
    assert set(points["rmse"]) == {"key", "value", "step", "timestamp"}
    assert (points["rmse"]["value"], points["rmse"]["step"]) == (6.4, 3)
    assert math.isnan(points["nan"]["value"]) and points["neg"]["value"] == -math.inf


def test_experiment_names_that_are_not_file_names_stay_inside_the_root(tmp_path: Path) -> None:
    tracker = trackkit.get_tracker("example", root=tmp_path / "runs")
    for experiment in ("team/project", "..", "a%b"):
        with tracker.start_run(experiment=experiment) as run:
            run.log_metric("m", 1.0)
        [meta] = (tmp_path / "runs").glob(f"*/{run.id}/meta.json")
        assert meta.parent.parent.parent == tmp_path / "runs"
        assert json.loads(meta.read_text())["experiment"] == experiment
        with tracker.start_run(run_id=run.id) as again:
            assert again.experiment == experiment


def test_resuming_in_another_experiment_or_an_unknown_run_is_refused(tmp_path: Path) -> None:
    tracker = trackkit.get_tracker("example", root=tmp_path / "runs")
    with tracker.start_run(experiment="a") as run:
        pass
    with pytest.raises(trackkit.InvalidInput, match="belongs to experiment 'a'"):
        tracker.start_run(experiment="b", run_id=run.id)
    for unknown in ("no-such-run", "../a", "*"):
        with pytest.raises(trackkit.NotFound):
            tracker.start_run(run_id=unknown)


def test_registry_and_search_answer_unsupported(tmp_path: Path) -> None:
    tracker = trackkit.get_tracker("example", root=tmp_path / "runs")
    with pytest.raises(trackkit.UnsupportedOperation, match="example backend"):
        tracker.register_model("runs:/x/model", "m")
    with pytest.raises(trackkit.UnsupportedOperation, match="example backend"):
        tracker.search_runs("demo")


def test_default_root_is_resolved_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tracker = trackkit.get_tracker("example")
    assert tracker.backend.root == tmp_path / "trackkit-example-runs"  # type: ignore[attr-defined]
    with pytest.raises(trackkit.InvalidInput, match="rejected its options"):
        trackkit.get_tracker("example", rooot=tmp_path)
