"""The smallest installable trackkit backend: each run is a directory of plain files.

Layout under the ``root`` option (default ``./trackkit-example-runs``)::

    <root>/<experiment>/<run_id>/
        meta.json        {"id", "name", "experiment", "status", "start_time", "end_time"}
        params.json      {"key": "text value", ...}
        tags.json        {"key": "text value", ...}
        metrics.jsonl    one point a line: {"key", "value", "step", "timestamp"}
        artifacts/       copied files and directories

Python's ``json`` writes NaN and infinities as ``NaN``/``Infinity``/``-Infinity`` (not strict
JSON) and reads them back, so every float survives. ``<experiment>`` is the experiment name,
percent-encoded where it is not a plain file name.

The backend declares what it does in ``capabilities``; trackkit answers the rest (the model
registry, ``search_runs``) with :class:`trackkit.UnsupportedOperation`. Models work through
:class:`trackkit.backend.Backend`'s default: a trackkit model package stored as an artifact.

Use it with ``trackkit.get_tracker("example", root="runs")`` once this package is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trackkit
from trackkit.backend import Backend, Capabilities, Limits
from trackkit.entities import Metric, ParamValue, RunHandle
from trackkit.errors import InvalidInput, NotFound
from trackkit.normalize import value_text

__all__ = ["DEFAULT_ROOT", "ExampleBackend", "trackkit_register_backends"]

DEFAULT_ROOT = "./trackkit-example-runs"


def _dir_name(experiment: str) -> str:
    """The experiment's directory name: the name itself when it is a plain file name."""
    encoded = quote(experiment, safe=" -_.,+=@()[]{}")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def _write_json(path: Path, data: Any) -> None:
    """Replace ``path`` atomically, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


class ExampleBackend(Backend):
    """Runs as directories of JSON files; no SDK needed.

    Args:
        root: the directory holding every experiment (default ``./trackkit-example-runs``,
            made absolute, so a later ``chdir`` does not move it).
    """

    name = "example"
    capabilities = Capabilities(
        artifacts=True,
        models=True,
        registry=False,
        search_runs=False,
        resume=True,
        download_artifacts=True,
    )
    # Files take any key and any value length; only the batch sizes are the core's defaults.
    limits = Limits()

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root if root is not None else DEFAULT_ROOT).resolve()
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"example ({self.root})"

    # -- locating runs --------------------------------------------------------------------------
    def _run_dir(self, run_id: str) -> Path:
        if run_id == Path(run_id).name and run_id not in (".", "..") and self.root.is_dir():
            for experiment in self.root.iterdir():
                if (experiment / run_id / "meta.json").is_file():
                    return experiment / run_id
        raise NotFound(f"no run {run_id!r} under {self.root}")

    def _artifact(self, run_id: str, path: str | None) -> Path:
        """The run's artifact ``path`` (the artifacts directory itself for None or "")."""
        base = self._run_dir(run_id) / "artifacts"
        target = (base / path).resolve() if path else base.resolve()
        if target != base.resolve() and base.resolve() not in target.parents:
            raise InvalidInput(f"artifact path {path!r} leaves run {run_id}")
        return target

    # -- runs ---------------------------------------------------------------------------------
    def start_run(self, experiment: str | None, name: str | None, run_id: str | None) -> RunHandle:
        if run_id is not None:
            return self._resume(experiment, run_id)
        assert experiment is not None  # the core passes None only when resuming
        new_id = uuid.uuid4().hex
        run_dir = self.root / _dir_name(experiment) / new_id
        (run_dir / "artifacts").mkdir(parents=True)
        run_name = name or f"run-{new_id[:8]}"
        meta = {
            "id": new_id,
            "name": run_name,
            "experiment": experiment,
            "status": "RUNNING",
            "start_time": int(time.time() * 1000),
            "end_time": None,
        }
        _write_json(run_dir / "params.json", {})
        _write_json(run_dir / "tags.json", {})
        (run_dir / "metrics.jsonl").touch()
        _write_json(run_dir / "meta.json", meta)  # last: a run exists once its meta does
        return RunHandle(id=new_id, name=run_name, experiment=experiment)

    def _resume(self, experiment: str | None, run_id: str) -> RunHandle:
        run_dir = self._run_dir(run_id)
        with self._lock:
            meta = _read_json(run_dir / "meta.json")
            if experiment is not None and experiment != meta["experiment"]:
                raise InvalidInput(
                    f"run {run_id} belongs to experiment {meta['experiment']!r}, not {experiment!r}"
                )
            meta.update(status="RUNNING", end_time=None)
            _write_json(run_dir / "meta.json", meta)
        last_steps: dict[str, int] = {}
        for point in self._points(run_dir):
            last_steps[point["key"]] = max(point["step"], last_steps.get(point["key"], -1))
        return RunHandle(
            id=run_id,
            name=meta["name"],
            experiment=meta["experiment"],
            params=_read_json(run_dir / "params.json"),
            last_steps=last_steps,
        )

    @staticmethod
    def _points(run_dir: Path) -> list[dict[str, Any]]:
        with open(run_dir / "metrics.jsonl", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def end_run(self, run_id: str, status: str) -> None:
        run_dir = self._run_dir(run_id)
        with self._lock:
            meta = _read_json(run_dir / "meta.json")
            meta.update(status=status, end_time=int(time.time() * 1000))
            _write_json(run_dir / "meta.json", meta)

    def log_batch(
        self,
        run_id: str,
        params: Sequence[tuple[str, ParamValue]],
        metrics: Sequence[Metric],
        tags: Sequence[tuple[str, str]],
    ) -> None:
        run_dir = self._run_dir(run_id)
        with self._lock:
            if params:
                stored = _read_json(run_dir / "params.json")
                stored.update((k, value_text(v)) for k, v in params)
                _write_json(run_dir / "params.json", stored)
            if tags:
                stored = _read_json(run_dir / "tags.json")
                stored.update(tags)
                _write_json(run_dir / "tags.json", stored)
            if metrics:
                lines = "".join(
                    json.dumps(
                        {"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp},
                        allow_nan=True,
                    )
                    + "\n"
                    for m in metrics
                )
                with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                    f.write(lines)

    # -- artifacts ------------------------------------------------------------------------------
    def log_artifact(self, run_id: str, local_path: Path, artifact_path: str | None) -> None:
        directory = self._artifact(run_id, artifact_path)
        target = directory / local_path.name
        directory.mkdir(parents=True, exist_ok=True)
        if local_path.is_dir():
            shutil.copytree(local_path, target, dirs_exist_ok=True)
        else:
            shutil.copy2(local_path, target)

    def download_artifacts(self, run_id: str, path: str, dst: Path) -> Path:
        source = self._artifact(run_id, path)
        if not source.exists():
            raise NotFound(f"run {run_id} has no artifact {path!r}")
        target = dst / path if path else dst
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        return target


@trackkit.hookimpl
def trackkit_register_backends() -> list[type[Backend]]:
    return [ExampleBackend]
