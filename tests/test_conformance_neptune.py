"""The conformance suite on Neptune: debug mode (in memory) and offline mode (operation logs).

Debug runs are read with Neptune's own ``fetch()`` / ``fetch_values()`` / ``download()`` on the
client's in-memory objects; offline runs by parsing the operation logs the client wrote under
``.neptune/offline`` (and the offline registry's sqlite file with ``sqlite3``). Neither reader
uses trackkit's own decoding: each implements the documented layout (docs/neptune.md) itself.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit.testing import ConformanceSuite

pytest.importorskip("neptune")


def decode(segments: list[str]) -> str:
    """The documented decoding of a field path below parameters/, metrics/ or tags/."""
    if len(segments) > 1 and segments[-1] == "%":
        segments = segments[:-1]
    unescape = lambda s: re.sub(r"%(25|2F)", lambda m: "%" if m[1] == "25" else "/", s)  # noqa: E731
    return ".".join(unescape(s) for s in segments)


def flatten(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def text(value: Any) -> str:
    return str(value)


def series(attribute: Any) -> list[Any]:
    """A series' values with Neptune's own fetch_values().

    neptune 1.14's debug backend ignores the offset of each page of 1000 points, so a series of
    n points comes back n * ceil(n / 1000) times over: keep the first copy.
    """
    values = list(attribute.fetch_values(progress_bar=False)["value"])
    total = len(values)
    n = next(n for n in range(1, total + 1) if n * -(-n // 1000) == total) if total else 0
    assert values == values[:n] * (total // n if n else 1)
    return values[:n]


class NeptuneDebugReader:
    """Reads in-memory runs with the neptune client's own API."""

    def __init__(self, tracker: trackkit.Tracker, tmp: Path) -> None:
        self.backend = tracker.backend
        self.tmp = tmp

    def _run(self, run_id: str) -> Any:
        return self.backend.run_object(run_id)  # type: ignore[attr-defined]

    def _fields(self, run_id: str, root: str) -> dict[tuple[str, ...], Any]:
        structure = self._run(run_id).get_structure()
        node: Any = structure
        for part in root.split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return flatten(node)

    def _values(self, run_id: str, root: str) -> dict[tuple[str, ...], Any]:
        run = self._run(run_id)
        return flatten(run[root].fetch()) if root in run.get_structure() else {}

    def params(self, run_id: str) -> dict[str, str]:
        values = self._values(run_id, "parameters")
        return {decode(list(path)): text(v) for path, v in values.items()}

    def metric_points(self, run_id: str, key: str) -> list[tuple[int, float]]:
        run = self._run(run_id)
        points: list[tuple[int, float]] = []
        for path in self._fields(run_id, "metrics"):
            if decode(list(path)) != key:
                continue
            name = "/".join(path)
            values = series(run[f"metrics/{name}"])
            # Neptune's debug mode numbers series points 0, 1, 2...; the steps are beside them
            steps = series(run[f"trackkit/steps/{name}"])
            points += [(int(s), float(v)) for s, v in zip(steps, values, strict=True)]
        for path in self._fields(run_id, "trackkit/points"):
            if decode(list(path)) == key:
                for raw in series(run["trackkit/points/" + "/".join(path)]):
                    step, value = json.loads(raw)
                    points.append((step, float(value)))
        return points

    def tags(self, run_id: str) -> dict[str, str]:
        values = self._values(run_id, "tags")
        return {decode(list(path)): v for path, v in values.items()}

    def status(self, run_id: str) -> str:
        return str(self._run(run_id)["trackkit/status"].fetch())

    def parent_id(self, run_id: str) -> str | None:
        fields = self._run(run_id)["trackkit"].fetch()
        return str(fields["parent_id"]) if "parent_id" in fields else None

    def artifact_files(self, run_id: str) -> set[str]:
        return {"/".join(path) for path in self._fields(run_id, "artifacts")}

    def artifact_text(self, run_id: str, path: str) -> str:
        target = self.tmp / "read" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        self._run(run_id)[f"artifacts/{path}"].download(destination=str(target))
        return target.read_text()

    def alias_version(self, name: str, alias: str) -> int | None:
        model, _ = self.backend.model_objects(name)  # type: ignore[attr-defined]
        aliases = model["trackkit"].fetch().get("aliases", {})
        return int(aliases[alias]) if alias in aliases else None

    def model_versions(self, name: str) -> list[int]:
        _, versions = self.backend.model_objects(name)  # type: ignore[attr-defined]
        return sorted(int(v["trackkit/version"].fetch()) for v in versions.values())


class NeptuneOfflineReader:
    """Parses the operation logs Neptune wrote under .neptune/offline, line by line."""

    def __init__(self, data_dir: Path, registry: Path) -> None:
        self.data_dir = data_dir
        self.registry = registry

    def _ops(self, run_id: str) -> Iterator[tuple[Path, dict[str, Any]]]:
        dirs = sorted((self.data_dir / "offline").glob(f"run__{run_id}__*"))
        assert dirs, f"no offline directory for {run_id}"
        for directory in dirs:
            logs = sorted(directory.glob("data-*.log"), key=lambda p: int(p.stem.split("-")[1]))
            for log in logs:
                for line in log.read_text().splitlines():
                    yield directory, json.loads(line)["obj"]

    def _atoms(self, run_id: str, root: str) -> dict[tuple[str, ...], Any]:
        found: dict[tuple[str, ...], Any] = {}
        for _, op in self._ops(run_id):
            path = tuple(op["path"])
            if path[: len(root.split("/"))] == tuple(root.split("/")) and op["type"].startswith(
                "Assign"
            ):
                found[path[len(root.split("/")) :]] = op["value"]
        return found

    def params(self, run_id: str) -> dict[str, str]:
        return {decode(list(p)): text(v) for p, v in self._atoms(run_id, "parameters").items()}

    def metric_points(self, run_id: str, key: str) -> list[tuple[int, float]]:
        points: list[tuple[int, float]] = []
        for _, op in self._ops(run_id):
            path = op["path"]
            if op["type"] == "LogFloats" and path[0] == "metrics" and decode(path[1:]) == key:
                points += [(int(v["step"]), float(v["value"])) for v in op["values"]]
            if (
                op["type"] == "LogStrings"
                and path[:2] == ["trackkit", "points"]
                and decode(path[2:]) == key
            ):
                points += [tuple(json.loads(v["value"])) for v in op["values"]]  # type: ignore[misc]
        return points

    def tags(self, run_id: str) -> dict[str, str]:
        return {decode(list(p)): v for p, v in self._atoms(run_id, "tags").items()}

    def status(self, run_id: str) -> str:
        return str(self._atoms(run_id, "trackkit")[("status",)])

    def parent_id(self, run_id: str) -> str | None:
        found = self._atoms(run_id, "trackkit").get(("parent_id",))
        return None if found is None else str(found)

    def _uploads(self, run_id: str) -> dict[str, Path]:
        files = {}
        for directory, op in self._ops(run_id):
            if op["type"] == "UploadFile" and op["path"][0] == "artifacts":
                files["/".join(op["path"][1:])] = directory / "upload_path" / op["tmp_file_name"]
        return files

    def artifact_files(self, run_id: str) -> set[str]:
        return set(self._uploads(run_id))

    def artifact_text(self, run_id: str, path: str) -> str:
        return self._uploads(run_id)[path].read_text()

    def alias_version(self, name: str, alias: str) -> int | None:
        with sqlite3.connect(self.registry) as db:
            row = db.execute(
                "SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)
            ).fetchone()
        return None if row is None else int(row[0])

    def model_versions(self, name: str) -> list[int]:
        with sqlite3.connect(self.registry) as db:
            rows = db.execute("SELECT version FROM versions WHERE name = ?", (name,)).fetchall()
        return sorted(int(v) for (v,) in rows)


class TestNeptuneDebug(ConformanceSuite):
    @pytest.fixture
    def tracker(self) -> Iterator[trackkit.Tracker]:
        tracker = trackkit.get_tracker("neptune", mode="debug")
        yield tracker
        tracker.close()

    @pytest.fixture
    def reader(self, tracker: trackkit.Tracker, tmp_path: Path) -> NeptuneDebugReader:
        return NeptuneDebugReader(tracker, tmp_path)


class TestNeptuneOffline(ConformanceSuite):
    @pytest.fixture
    def tracker(self, tmp_path: Path) -> Iterator[trackkit.Tracker]:
        tracker = trackkit.get_tracker(
            "neptune",
            mode="offline",
            data_dir=tmp_path / ".neptune",
            registry_path=tmp_path / "registry.db",
        )
        yield tracker
        tracker.close()

    @pytest.fixture
    def reader(self, tmp_path: Path) -> NeptuneOfflineReader:
        return NeptuneOfflineReader(tmp_path / ".neptune", tmp_path / "registry.db")
