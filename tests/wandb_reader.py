"""Reading W&B offline runs back with W&B's own reader, never through trackkit.

``wandb leet inspect --json PATH`` prints every record of a run's ``.wandb`` transaction log
(the file ``wandb sync`` uploads) as one JSON line. The ``wandb`` command only launches the
``wandb-core`` program with ``leet inspect --no-observability --json --run-file FILE DIR``;
the reader runs that program directly (one Python start-up less per read), and
``test_reader_matches_the_wandb_command`` checks both give the same records.
"""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

#: W&B settings that keep test runs quick: no system metrics, console capture or metadata
FAST: dict[str, Any] = {
    "x_disable_stats": True,
    "x_disable_meta": True,
    "x_disable_machine_info": True,
    "x_save_requirements": False,
    "console": "off",
    "save_code": False,
}
WANDB_VARIABLES = (
    "WANDB_MODE", "WANDB_DIR", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_API_KEY",
    "WANDB_BASE_URL", "TRACKKIT_OFFLINE", "TRACKKIT_DIR",
)  # fmt: skip
SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def core_path() -> str:
    from wandb.util import get_core_path

    return str(get_core_path())


def leet_records(log: Path) -> list[dict[str, Any]]:
    """Every record of one ``.wandb`` file, as W&B's reader prints it."""
    command = [core_path(), "leet", "inspect", "--no-observability", "--json"]
    command += ["--run-file", str(log), str(log.parent.parent)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "None" if value is None else str(value)


class WandbReader:
    """Reads what a W&B offline run recorded: config, history, summary, files, artifacts, exit.

    A resumed offline run is several run directories with the same id (W&B writes one per
    ``wandb.init``); the reader merges them in start order, as ``wandb sync`` uploads them.
    The offline registry has no W&B counterpart: it is the local registry's sqlite file, read
    with ``sqlite3`` directly.
    """

    def __init__(self, root: Path, registry: Path | None = None) -> None:
        self.wandb_dir = root / "wandb"
        self.registry = registry or root / "trackkit-wandb" / "registry.db"
        self._cache: dict[Path, tuple[tuple[float, int], list[dict[str, Any]]]] = {}

    def logs(self, run_id: str) -> list[Path]:
        found = sorted(
            (p for p in self.wandb_dir.glob(f"*/run-{run_id}.wandb") if not p.parent.is_symlink()),
            key=lambda p: p.parent.name,
        )
        assert found, f"no W&B run directory for run {run_id} in {self.wandb_dir}"
        return found

    def segments(self, run_id: str) -> list[list[dict[str, Any]]]:
        out = []
        for log in self.logs(run_id):
            key = (log.stat().st_mtime, log.stat().st_size)
            if log not in self._cache or self._cache[log][0] != key:
                self._cache[log] = (key, leet_records(log))
            out.append(self._cache[log][1])
        return out

    def records(self, run_id: str, kind: str) -> list[dict[str, Any]]:
        return [r[kind] for seg in self.segments(run_id) for r in seg if r["type"] == kind]

    # -- the Reader protocol of trackkit.testing ------------------------------------------------
    def config(self, run_id: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for kind in ("run", "config"):
            for record in self.records(run_id, kind):
                update = record["config"]["update"] if kind == "run" else record["update"]
                merged.update(update)
        return {k: v for k, v in merged.items() if not k.startswith("_")}

    def params(self, run_id: str) -> dict[str, str]:
        """The config as text (its ``trackkit:`` entries are not params). W&B's reader prints
        some numbers back changed (``1.0`` as ``1``), so their logged text is kept in the
        summary as ``trackkit:param:<key>``."""
        config = self.config(run_id)
        params = {k: _text(v) for k, v in config.items() if not k.startswith("trackkit:")}
        for key, value in self.summary(run_id).items():
            if key.startswith("trackkit:param:") and key[len("trackkit:param:") :] in params:
                params[key[len("trackkit:param:") :]] = value
        return params

    def summary(self, run_id: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for record in self.records(run_id, "summary"):
            merged.update(record.get("update", {}))
        return merged

    def history(self, run_id: str) -> list[dict[str, Any]]:
        return [record["item"] for record in self.records(run_id, "history")]

    def metric_points(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Each point at its step: ``<key>:step`` when its row carries one, else the row's
        number ``_step`` (a point at its own step, as W&B's Step axis shows it)."""
        points = []
        for row in self.history(run_id):
            if key in row:
                value = row[key]
                value = SPECIAL[value] if isinstance(value, str) else float(value)
                points.append((int(row.get(f"{key}:step", row["_step"])), value))
        return points

    def metric_times(self, run_id: str, key: str) -> list[float]:
        """Each point's time in seconds: ``<key>:timestamp`` when its row carries one, else the
        row's ``_timestamp``."""
        rows = self.history(run_id)
        return [row.get(f"{key}:timestamp", row["_timestamp"]) for row in rows if key in row]

    def parent_id(self, run_id: str) -> str | None:
        """The parent a child run's config names (``trackkit:parent_id``)."""
        parents = [
            r["config"]["update"].get("trackkit:parent_id") for r in self.records(run_id, "run")
        ]
        parents += [r["update"].get("trackkit:parent_id") for r in self.records(run_id, "config")]
        return next((p for p in reversed(parents) if p), None)

    def group(self, run_id: str) -> str | None:
        """The W&B group of the run (its run record's ``run_group``)."""
        groups = [r.get("run_group") for r in self.records(run_id, "run")]
        return next((g for g in reversed(groups) if g), None)

    def tags(self, run_id: str) -> dict[str, str]:
        summary = self.summary(run_id)
        return {k[len("tag:") :]: str(v) for k, v in summary.items() if k.startswith("tag:")}

    def wandb_tags(self, run_id: str) -> list[str]:
        tags: list[str] = []
        for record in self.records(run_id, "run"):
            tags = record.get("tags", tags)
        return tags

    def exit_code(self, run_id: str) -> int | None:
        exits = [seg for seg in self.segments(run_id)][-1]
        codes = [r["exit"].get("exit_code", 0) for r in exits if r["type"] == "exit"]
        return codes[-1] if codes else None

    def status(self, run_id: str) -> str:
        code = self.exit_code(run_id)
        if code is None:
            return "RUNNING"
        if code == 0:
            return "FINISHED"
        return "KILLED" if self.summary(run_id).get("trackkit:status") == "KILLED" else "FAILED"

    def artifact_files(self, run_id: str) -> set[str]:
        found = set()
        for log, segment in zip(self.logs(run_id), self.segments(run_id), strict=True):
            for record in segment:
                if record["type"] != "files":
                    continue
                for item in record["files"]["files"]:
                    path = item["path"]
                    if path.startswith("artifacts/") and (log.parent / "files" / path).is_file():
                        found.add(path[len("artifacts/") :])
        return found

    def artifact_text(self, run_id: str, path: str) -> str:
        assert path in self.artifact_files(run_id), f"{path} is not a file record of {run_id}"
        for log in reversed(self.logs(run_id)):
            local = log.parent / "files" / "artifacts" / path
            if local.is_file():
                return local.read_text()
        raise AssertionError(f"{path} was recorded but is missing from the run directory")

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        return self.records(run_id, "artifact")

    def alias_version(self, name: str, alias: str) -> int | None:
        with sqlite3.connect(self.registry) as db:
            row = db.execute(
                "SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)
            ).fetchone()
        return None if row is None else int(row[0])

    def model_versions(self, name: str) -> list[int]:
        with sqlite3.connect(self.registry) as db:
            rows = db.execute(
                "SELECT version FROM versions WHERE name = ? ORDER BY version", (name,)
            ).fetchall()
        return [int(v) for (v,) in rows]
