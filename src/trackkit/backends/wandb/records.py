"""W&B's offline records read back: each run directory's ``.wandb`` transaction log, read with
W&B's own reader (``wandb leet inspect``), a resumed run's segments merged in start order; the
run's stored files from its run directories."""

from __future__ import annotations

import glob
import importlib
import json
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from trackkit.backends.wandb.keys import (
    EXPERIMENT_KEY,
    FILES_PREFIX,
    params_of,
    parent_of,
    parse_time,
    run_status,
    summary_parts,
)
from trackkit.entities import ArtifactInfo, RunInfo

#: how many segments' history rows stay cached (the runs a copier or a plot reads in turn)
HISTORY_CACHE = 8


@dataclass
class Record:
    """A run as its local transaction logs hold it (every segment, oldest first)."""

    run_id: str
    project: str
    name: str
    config: dict[str, Any]
    summary: dict[str, Any]
    exit_code: int | None
    step: int
    started: datetime | None
    ended: datetime | None

    @property
    def experiment(self) -> str:
        return str(self.summary.get(EXPERIMENT_KEY) or self.project)

    @property
    def parent_id(self) -> str | None:
        return parent_of(self.config)

    def info(self) -> RunInfo:
        """The run as trackkit describes it."""
        metrics, tags = summary_parts(self.summary)
        return RunInfo(
            id=self.run_id,
            name=self.name,
            experiment=self.experiment,
            status=run_status(self.exit_code, self.summary),
            params=params_of(self.config, self.summary),
            metrics=metrics,
            tags=tags,
            start_time=self.started,
            end_time=self.ended,
            parent_id=self.parent_id,
        )


def _segment_order(log: Path) -> tuple[str, float]:
    """Run directories are named ``[offline-]run-<YYYYMMDD_HHMMSS>-<id>``: order by start."""
    started = re.search(r"\d{8}_\d{6}", log.parent.name)
    return (started.group(0) if started else "", log.stat().st_mtime)


def _leet(log: Path, *extra: str) -> str:
    """Run W&B's own reader of ``.wandb`` transaction logs (``wandb leet inspect``)."""
    util = importlib.import_module("wandb.util")
    core = util.get_core_path()
    command = [core, "leet", "inspect", "--no-observability", *extra]
    command += ["--run-file", str(log), str(log.parent.parent)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wandb leet inspect {log} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


class RecordReader:
    """Reads the runs W&B recorded under ``<root>/wandb`` (each segment cached until it changes)."""

    def __init__(self, root: Path) -> None:
        self.wandb_dir = root / "wandb"
        self._segments: dict[Path, tuple[tuple[float, int], dict[str, Any]]] = {}
        self._histories: dict[Path, tuple[tuple[float, int], list[dict[str, Any]]]] = {}
        self._artifacts: dict[Path, tuple[tuple[float, int], list[dict[str, Any]]]] = {}

    def logs(self, run_id: str | None = None) -> list[Path]:
        """The run's ``.wandb`` files (every run's with None), oldest segment first."""
        pattern = f"*/run-{glob.escape(run_id)}.wandb" if run_id else "*/run-*.wandb"
        found = self.wandb_dir.glob(pattern)
        # skip W&B's `latest-run` link to the newest run directory
        return sorted((p for p in found if not p.parent.is_symlink()), key=_segment_order)

    def _segment(self, log: Path) -> dict[str, Any]:
        """One run directory's final state, read with W&B's reader."""
        status = log.stat()
        key = (status.st_mtime, status.st_size)
        cached = self._segments.get(log)
        if cached is None or cached[0] != key:
            cached = (key, json.loads(_leet(log, "--summary", "--json")))
            self._segments[log] = cached
        return cached[1]

    def rows(self, log: Path) -> list[dict[str, Any]]:
        """One segment's history rows, in the order W&B wrote them, read with W&B's reader."""
        status = log.stat()
        key = (status.st_mtime, status.st_size)
        cached = self._histories.pop(log, None)
        if cached is None or cached[0] != key:
            rows = []
            for line in _leet(log, "--json").splitlines():
                if not line.strip():
                    continue
                record = json.loads(line)
                history = record.get("history") if record.get("type") == "history" else None
                item = history.get("item") if isinstance(history, dict) else None
                if isinstance(item, dict):
                    rows.append(item)
            cached = (key, rows)
        self._histories[log] = cached  # the newest read goes last: the oldest is dropped
        while len(self._histories) > HISTORY_CACHE:
            del self._histories[next(iter(self._histories))]
        return cached[1]

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        """The artifact records of the run (type, name, project, aliases, metadata), oldest
        segment first, read with W&B's reader."""
        found = []
        for log in self.logs(run_id):
            status = log.stat()
            key = (status.st_mtime, status.st_size)
            cached = self._artifacts.get(log)
            if cached is None or cached[0] != key:
                records = []
                for line in _leet(log, "--json").splitlines():
                    record = json.loads(line) if line.strip() else {}
                    artifact = record.get("artifact") if record.get("type") == "artifact" else None
                    if isinstance(artifact, dict):
                        records.append({k: v for k, v in artifact.items() if k != "manifest"})
                cached = self._artifacts[log] = (key, records)
            found += cached[1]
        return found

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """Every history row of the run, oldest segment first."""
        return [row for log in self.logs(run_id) for row in self.rows(log)]

    def record(self, run_id: str, logs: list[Path] | None = None) -> Record | None:
        """The run ``run_id`` merged from its segments (``logs``, found when None), or None."""
        logs = self.logs(run_id) if logs is None else logs
        if not logs:
            return None
        config: dict[str, Any] = {}
        summary: dict[str, Any] = {}
        step, first, last = -1, None, None
        for log in logs:
            segment = self._segment(log)
            config.update(segment.get("config") or {})
            rows = segment.get("summary") or {}
            summary.update(rows)
            if isinstance(rows.get("_step"), (int, float)):
                step = max(step, int(rows["_step"]))
            first = first or segment
            last = segment
        assert first is not None and last is not None
        exit_code = last.get("exit_code")
        return Record(
            run_id=run_id,
            project=str(first.get("project") or ""),
            name=str(last.get("name") or first.get("name") or run_id),
            config=config,
            summary=summary,
            exit_code=None if exit_code is None else int(exit_code),
            step=step,
            started=parse_time(first.get("start_time")),
            ended=None if exit_code is None else parse_time(last.get("last_write")),
        )

    def files(self, run_id: str, path: str) -> dict[str, Path]:
        """The run's stored files at or under ``path`` in its local run directories."""
        found: dict[str, Path] = {}
        for log in self.logs(run_id):  # oldest first: later segments win
            base = log.parent / "files" / FILES_PREFIX
            where = base / path if path else base
            if where.is_file():
                found[path] = where
            elif where.is_dir():
                for item in where.rglob("*"):
                    if item.is_file():
                        found[item.relative_to(base).as_posix()] = item
        return found

    def entries(self, run_id: str, path: str) -> list[ArtifactInfo]:
        """The stored files and directories directly under ``path`` (symlinks left out: a run
        directory from elsewhere could point anywhere)."""
        found: dict[str, ArtifactInfo] = {}
        for log in self.logs(run_id):
            base = log.parent / "files" / FILES_PREFIX
            where = base / path if path else base
            if where.is_symlink() or not where.is_dir():
                continue
            for item in where.iterdir():
                relative = item.relative_to(base).as_posix()
                if item.is_symlink():
                    continue
                if item.is_dir():
                    found[relative] = ArtifactInfo(path=relative, is_dir=True)
                elif item.is_file():
                    found[relative] = ArtifactInfo(relative, False, item.stat().st_size)
        return sorted(found.values(), key=lambda e: e.path)
