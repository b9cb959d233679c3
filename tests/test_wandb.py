"""The W&B backend beyond the conformance suite.

Offline behaviour runs on the real wandb SDK and is read back with W&B's own reader
(``wandb leet inspect``). What only a W&B server can answer (the W&B Registry, the public API's
run search, downloads) runs against ``FakeWandbApi``, a fake of ``wandb.Api``: no W&B server
can run here. The tests assert the exact calls trackkit makes on it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit import journal as jn
from trackkit import models, plugins
from trackkit.errors import InvalidInput, NotFound

wandb = pytest.importorskip("wandb")

from trackkit.backends.wandb import WandbBackend, to_wandb_filter, to_wandb_order  # noqa: E402
from trackkit.search import parse_filter, parse_order  # noqa: E402
from wandb_reader import FAST, WANDB_VARIABLES, WandbReader, leet_records  # noqa: E402

SECRET = "sk-wandb-" + "7f3a" * 10


# -- a fake of the public API -----------------------------------------------------------------
class FakeArtifact:
    """A W&B artifact as ``wandb.Api`` returns it (fake: no W&B server can run here).

    A logged artifact holds files; a linked one (a W&B Registry version) points at its source.
    """

    def __init__(
        self,
        api: FakeWandbApi,
        *,
        entity: str,
        project: str,
        collection: str,
        index: int,
        files: Path | None,
        metadata: dict[str, Any],
        aliases: list[str],
        source: FakeArtifact | None = None,
    ) -> None:
        self._api = api
        self.entity, self.project, self.collection, self.index = entity, project, collection, index
        self._files = files
        self.metadata = metadata
        self.aliases = list(aliases)
        self.description: str | None = None
        self.type = "model"
        self.source = source or self
        self.created_at = f"2026-11-26T10:00:0{index}Z"

    @property
    def version(self) -> str:
        return f"v{self.index}"

    @property
    def name(self) -> str:
        return f"{self.collection}:{self.version}"

    @property
    def qualified_name(self) -> str:
        return f"{self.entity}/{self.project}/{self.name}"

    @property
    def source_entity(self) -> str:
        return self.source.entity

    @property
    def source_project(self) -> str:
        return self.source.project

    @property
    def source_name(self) -> str:
        return self.source.name

    @property
    def source_qualified_name(self) -> str:
        return self.source.qualified_name

    def link(self, target_path: str, aliases: list[str] | None = None) -> FakeArtifact:
        self._api.calls.append(("link", self.qualified_name, target_path))
        return self._api._link(self, target_path)

    def save(self) -> None:
        self._api.calls.append(("save", self.name, sorted(self.aliases), self.description))
        for other in self._api.collections.get((self.project, self.collection), []):
            if other is not self:  # W&B keeps each alias on one version of a collection
                other.aliases = [a for a in other.aliases if a not in self.aliases]

    def download(self, root: str | None = None) -> str:
        self._api.calls.append(("download", self.qualified_name))
        assert root is not None and self.source._files is not None
        shutil.copytree(self.source._files, root, dirs_exist_ok=True)
        return root


class FakeFile:
    """A run file as ``wandb.Api().run(...).files()`` lists it (fake)."""

    def __init__(self, name: str, content: str) -> None:
        self.name, self.content = name, content
        self.size = len(content.encode())

    def download(self, root: str = ".", replace: bool = False) -> None:
        target = Path(root) / self.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.content)


class FakeRun:
    """A run as ``wandb.Api`` returns it (fake)."""

    def __init__(self, run_id: str, project: str, **fields: Any) -> None:
        self.id, self.project = run_id, project
        self.name: str = fields.get("name", run_id)
        self.state: str = fields.get("state", "finished")
        self.config: dict[str, Any] = fields.get("config", {})
        self.summary_metrics: dict[str, Any] = fields.get("summary", {})
        self.tags: list[str] = fields.get("tags", [])
        self.group: str | None = fields.get("group")
        self.created_at: str = fields.get("created_at", "2026-11-26T10:00:00Z")
        self.heartbeat_at: str = fields.get("heartbeat_at", "2026-11-26T10:05:00Z")
        self._files = [FakeFile(n, c) for n, c in fields.get("files", {}).items()]
        self._history: list[dict[str, Any]] = fields.get("history", [])
        self.scans: list[list[str] | None] = []

    @property
    def url(self) -> str:
        return f"https://wandb.ai/ana/{self.project}/runs/{self.id}"

    def files(self) -> list[FakeFile]:
        return list(self._files)

    def scan_history(
        self, keys: list[str] | None = None, page_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Rows holding every key asked for, only those keys (as W&B's scan does)."""
        self.scans.append(keys)
        for row in self._history:
            if keys is None:
                yield dict(row)
            elif all(k in row for k in keys):
                yield {k: row[k] for k in keys}


class FakeCollection:
    """An artifact collection as ``wandb.Api`` returns it (fake): a W&B Registry model."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.description: str | None = None
        self.tags: list[str] = []

    def save(self) -> None:
        pass


class FakeWandbApi:
    """A fake of ``wandb.Api`` (no W&B server can run here): registry collections, logged
    artifacts and runs in memory, with every call recorded in ``calls``.

    ``runs`` returns the project's runs in the requested order without evaluating ``filters``
    (trackkit must check every condition itself on what W&B returns; the filter it sends is
    asserted as a call argument). Errors carry the messages the real SDK raises.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.collections: dict[tuple[str, str], list[FakeArtifact]] = {}
        self.project_runs: dict[str, list[FakeRun]] = {}
        self.collection_info: dict[tuple[str, str], FakeCollection] = {}

    # building the fake's state
    def add_logged(
        self,
        project: str,
        collection: str,
        files: Path,
        metadata: dict[str, Any],
        aliases: list[str],
    ) -> FakeArtifact:
        members = self.collections.setdefault((project, collection), [])
        artifact = FakeArtifact(
            self,
            entity="ana",
            project=project,
            collection=collection,
            index=len(members),
            files=files,
            metadata=metadata,
            aliases=aliases,
        )
        members.append(artifact)
        return artifact

    def upload_offline(self, wandb_dir: Path) -> None:
        """Do what ``wandb sync`` does with the model artifacts of offline runs."""
        for log in sorted(wandb_dir.glob("offline-run-*/run-*.wandb")):
            for record in leet_records(log):
                if record["type"] == "artifact":
                    art = record["artifact"]
                    [first, *_] = art["manifest"]["contents"]
                    self.add_logged(
                        art["project"],
                        art["name"],
                        Path(first["local_path"]).parent,
                        json.loads(art["metadata"]),
                        [a for a in art["aliases"] if a != "latest"],
                    )

    def _link(self, source: FakeArtifact, target_path: str) -> FakeArtifact:
        project, collection = target_path.split("/")
        members = self.collections.setdefault((project, collection), [])
        self.collection_info.setdefault((project, collection), FakeCollection(collection))
        for member in members:
            member.aliases = [a for a in member.aliases if a != "latest"]
        linked = FakeArtifact(
            self,
            entity="ana-org",
            project=project,
            collection=collection,
            index=len(members),
            files=None,
            metadata=source.metadata,
            aliases=["latest"],
            source=source,
        )
        members.append(linked)
        return linked

    # the wandb.Api surface trackkit uses
    def artifact(self, name: str, type: str | None = None) -> FakeArtifact:
        self.calls.append(("artifact", name, type))
        path, ref = name.rsplit(":", 1)
        *_, project, collection = path.split("/")
        members = self.collections.get((project, collection))
        if members is None:
            raise wandb.errors.CommError(f"project {project!r} not found under entity 'ana'")
        for member in members:
            if ref == member.version or ref in member.aliases:
                return member
        raise wandb.errors.CommError(
            f"artifact membership '{collection}:{ref}' not found in 'ana/{project}'"
        )

    def artifacts(self, type_name: str, name: str, per_page: int = 50) -> list[FakeArtifact]:
        self.calls.append(("artifacts", type_name, name))
        project, collection = name.split("/")[-2:]
        if (project, collection) not in self.collections:
            raise wandb.errors.CommError(
                f"artifact collection '{collection}' not found in 'ana/{project}'"
            )
        return list(reversed(self.collections[(project, collection)]))  # newest first, as W&B

    def runs(
        self,
        path: str,
        filters: dict[str, Any] | None = None,
        order: str = "+created_at",
        per_page: int = 50,
    ) -> Iterator[FakeRun]:
        self.calls.append(("runs", path, filters, order, per_page))
        runs = list(self.project_runs.get(path.split("/")[-1], []))
        key = order[1:]
        if key.startswith("summary_metrics."):
            runs.sort(key=lambda r: r.summary_metrics.get(key[len("summary_metrics.") :], math.inf))
        else:
            runs.sort(key=lambda r: r.created_at)
        if order.startswith("-"):
            runs.reverse()
        return iter(runs)

    def projects(self, entity: str | None = None, per_page: int = 200) -> list[Any]:
        self.calls.append(("projects", entity))
        names = {p for p, _ in self.collections} | set(self.project_runs)
        return [type("FakeProject", (), {"name": n})() for n in sorted(names)]

    def artifact_collections(self, project_name: str, type_name: str) -> list[Any]:
        self.calls.append(("artifact_collections", project_name, type_name))
        return [
            self.collection_info[(p, c)]
            for p, c in sorted(self.collections)
            if p == project_name.split("/")[-1]
        ]

    def artifact_collection(self, type_name: str, name: str) -> Any:
        self.calls.append(("artifact_collection", type_name, name))
        return self.collection_info[tuple(name.split("/")[-2:])]

    def run(self, path: str) -> FakeRun:
        self.calls.append(("run", path))
        project, run_id = path.split("/")[-2:]
        for run in self.project_runs.get(project, []):
            if run.id == run_id:
                return run
        raise wandb.errors.CommError(f"Could not find run {path}")


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable in WANDB_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no credentials from this machine


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "w"


@pytest.fixture
def offline(root: Path) -> Iterator[trackkit.Tracker]:
    tracker = trackkit.get_tracker("wandb", mode="offline", dir=root, settings=FAST)
    yield tracker
    tracker.close()


@pytest.fixture
def reader(root: Path) -> WandbReader:
    return WandbReader(root)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeWandbApi:
    api = FakeWandbApi()
    monkeypatch.setattr(WandbBackend, "api_factory", lambda **_: api)
    return api


@pytest.fixture
def online(
    root: Path, fake: FakeWandbApi, monkeypatch: pytest.MonkeyPatch
) -> Iterator[trackkit.Tracker]:
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    tracker = trackkit.get_tracker("wandb", mode="online", dir=root, settings=FAST)
    yield tracker
    tracker.close()


def _pipeline() -> tuple[Any, list[dict[str, Any]]]:
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    rows: list[dict[str, Any]] = [
        {"PU_DO": f"{i % 5}_{i % 3}", "trip_distance": i / 3} for i in range(60)
    ]
    target = [4.0 + 2.5 * r["trip_distance"] + (i % 5) for i, r in enumerate(rows)]
    return make_pipeline(DictVectorizer(), LinearRegression()).fit(rows, target), rows[:7]


def _deferred(journal_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(journal_dir.glob("deferred-*.db")):
        journal = jn.Journal(path, own=False)
        found += [(row[2] or "", json.loads(row[6] or "{}")) for row in journal.pending(1000)]
        journal.close()
    return found


# -- registration and import --------------------------------------------------------------------
def test_importing_trackkit_and_listing_backends_imports_no_wandb() -> None:
    code = (
        "import trackkit, sys; trackkit.available_backends(); "
        "print([m for m in sys.modules if m.startswith('wandb')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registered_through_its_entry_point() -> None:
    assert "wandb" in trackkit.available_backends()
    cls = plugins.get_plugin_manager().backend_class("wandb")
    assert cls is WandbBackend
    assert (cls.extra, cls.sdk) == ("wandb", "wandb")


# -- configuration ------------------------------------------------------------------------------
def test_trackkit_offline_and_wandb_mode_select_offline(
    monkeypatch: pytest.MonkeyPatch, root: Path
) -> None:
    monkeypatch.setenv("TRACKKIT_OFFLINE", "1")
    assert WandbBackend(dir=root).mode == "offline"  # no API key needed
    monkeypatch.delenv("TRACKKIT_OFFLINE")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert WandbBackend(dir=root).mode == "offline"
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    assert WandbBackend(dir=root, mode="online").mode == "online"  # the option wins


def test_online_without_an_api_key_says_how_to_work_offline(root: Path) -> None:
    with pytest.raises(InvalidInput, match="TRACKKIT_OFFLINE=1") as caught:
        trackkit.get_tracker("wandb", dir=root)
    assert "wandb login" in str(caught.value)


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        ({"mode": "cloud"}, {}, "mode must be 'online' or 'offline'"),
        ({}, {"WANDB_MODE": "disabled"}, "disabled would drop everything"),
        ({"mode": "offline", "settings": {"no_such_setting": 1}}, {}, "wandb.Settings rejected"),
        ({"mode": "offline", "project": "a/b"}, {}, "cannot be a W&B project name"),
        ({"mode": "offline", "tracking_uri": "x"}, {}, "rejected its options"),
    ],
)
def test_bad_configuration_is_a_clear_error(
    options: dict[str, Any],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    root: Path,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(InvalidInput, match=message):
        trackkit.get_tracker("wandb", dir=root, **options)


def test_runs_go_under_the_trackkit_dir_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert WandbBackend(mode="offline").dir == (tmp_path / ".trackkit").resolve()  # cwd: tmp_path
    monkeypatch.setenv("TRACKKIT_DIR", str(tmp_path / "tk"))
    assert WandbBackend(mode="offline").dir == tmp_path / "tk"
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    assert WandbBackend(mode="offline").dir == tmp_path / "wb"


def test_an_experiment_w_and_b_cannot_name_is_rejected(offline: trackkit.Tracker) -> None:
    with pytest.raises(InvalidInput, match="cannot be a W&B project name"):
        offline.start_run("ride/duration")


# -- runs, as W&B's own reader sees them --------------------------------------------------------
def test_out_of_order_steps_and_unrelated_counters_are_all_in_the_offline_record(
    offline: trackkit.Tracker, reader: WandbReader
) -> None:
    with offline.start_run("steps") as run:
        for step in (5, 3, 10, 1):
            run.log_metric("loss", float(step), step=step)
        for i in range(3):
            run.log_metric("train.acc", i / 10)  # its own counter: 0, 1, 2
        for step in (100, 7, 50):
            run.log_metric("val.acc", step / 100, step=step)  # an unrelated counter
    rows = reader.history(run.id)

    def step(row: dict[str, Any], key: str) -> int:  # its own step, else its row's number
        return int(row.get(f"{key}:step", row["_step"]))

    # every point is in W&B's record at its step, in the order logged
    assert [(step(r, "loss"), r["loss"]) for r in rows if "loss" in r] == [
        (5, 5), (3, 3), (10, 10), (1, 1)
    ]  # fmt: skip
    assert [(step(r, "train.acc"), r["train.acc"]) for r in rows if "train.acc" in r] == [
        (0, 0), (1, 0.1), (2, 0.2)
    ]  # fmt: skip
    assert [(step(r, "val.acc"), r["val.acc"]) for r in rows if "val.acc" in r] == [
        (100, 1), (7, 0.07), (50, 0.5)
    ]  # fmt: skip
    # the first point of each counter sits at its own step; one below a row W&B already has
    # (3 after 5, 7 after 100) carries its step
    assert next(r for r in rows if r.get("loss") == 5)["_step"] == 5
    assert next(r for r in rows if r.get("val.acc") == 0.07)["val.acc:step"] == 7
    # W&B's own row counter only grows, so W&B drops none of these rows
    row_numbers = [r["_step"] for r in rows]
    assert row_numbers == sorted(set(row_numbers))
    defined = {m["name"]: m for m in reader.records(run.id, "metric")}
    assert defined["loss"]["step_metric"] == "loss:step"
    assert defined["val.acc"]["step_metric"] == "val.acc:step"
    assert defined["loss:step"]["options"]["hidden"] is True
    # the summary holds each key's value at its highest step, as every trackkit backend reports
    summary = reader.summary(run.id)
    assert (summary["loss"], summary["loss:step"]) == (10, 10)
    assert (summary["val.acc"], summary["val.acc:step"]) == (1, 100)


def test_points_logged_together_share_a_row_with_their_timestamp(
    offline: trackkit.Tracker, reader: WandbReader
) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with offline.start_run("rows") as run:
        run.log_metrics({"a": 1, "b": 2, "c": 3}, step=4, timestamp=moment)
    [row] = reader.history(run.id)
    # the row W&B numbers 4 is the step: no step of their own, no time of their own
    assert {k: v for k, v in row.items() if k != "_runtime"} == {
        "_step": 4, "_timestamp": moment.timestamp(), "a": 1, "b": 2, "c": 3
    }  # fmt: skip
    assert reader.records(run.id, "metric") == []  # no x-axis needed


def _batching(root: Path) -> trackkit.Tracker:
    return trackkit.get_tracker(
        "wandb", mode="offline", dir=root, settings=FAST, flush_interval=3600
    )


@pytest.fixture(params=["fast rows", "run.log"])
def batching(
    root: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[trackkit.Tracker]:
    """A tracker whose writer sends only when asked (flush or end): one batch per flush.

    Once with the fast row path (``rows.py``), once with every row through ``run.log``.
    """
    fast = request.param == "fast rows"
    monkeypatch.setenv("TRACKKIT_WANDB_FAST_ROWS", "1" if fast else "0")
    tracker = _batching(root)
    assert tracker.backend.fast_rows is fast  # type: ignore[attr-defined]
    yield tracker
    tracker.close()


def _log_awkward_batches(tracker: trackkit.Tracker) -> str:
    """Several keys, repeated and out-of-order steps, NaN and infinities, in two batches."""
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    later = datetime(2026, 1, 2, 3, 4, 6, tzinfo=timezone.utc)
    with tracker.start_run("paths") as run:
        for n, step in enumerate((5, 10, 5, 2)):
            run.log_metric("loss", [1.5, math.nan, math.inf, -math.inf][n], step=step,
                           timestamp=moment)  # fmt: skip
        for step in range(6):
            run.log_metrics({"a": step / 3, "b.c": -step, "d": 1e300}, timestamp=moment)
        run.log_metric("loss", 0.25, step=7, timestamp=later)
        assert run.flush(timeout=60)
        for step in (3, 3, 1):
            run.log_metrics({"a": step + 0.5, "loss": step * 2.0}, step=step, timestamp=later)
    return run.id


def _without_runtime(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "_runtime"} for row in rows]


def test_fast_rows_write_exactly_what_run_log_writes(
    root: Path, reader: WandbReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = {}
    for switch in ("1", "0"):
        monkeypatch.setenv("TRACKKIT_WANDB_FAST_ROWS", switch)
        tracker = _batching(root)
        assert tracker.backend.fast_rows is (switch == "1")  # type: ignore[attr-defined]
        ids[switch] = _log_awkward_batches(tracker)
        tracker.close()
    fast, slow = (reader.history(ids[s]) for s in ("1", "0"))
    # the first batch: steps 0 to 5 at their own rows (loss's first 5 beside a, b.c and d),
    # loss at 10, then its repeated 5, its 2 and its 7 in rows of their own after it; the
    # second batch after the first's rows: a key's points never share a row
    assert [r["_step"] for r in fast] == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 16]
    assert _without_runtime(fast) == _without_runtime(slow)
    loss = reader.metric_points(ids["1"], "loss")[:4]
    assert [step for step, _ in loss] == [5, 10, 5, 2] and math.isnan(loss[1][1])
    assert [loss[0][1], loss[2][1], loss[3][1]] == [1.5, math.inf, -math.inf]
    summaries = [
        {
            k: v
            for k, v in reader.summary(ids[s]).items()
            if not k.startswith(("_runtime", "_wandb"))
        }
        for s in ("1", "0")
    ]
    assert summaries[0] == summaries[1] and summaries[0]["loss:step"] == 10


def test_fast_rows_are_in_wandbs_record_after_flush(
    batching: trackkit.Tracker, reader: WandbReader, root: Path
) -> None:
    with batching.start_run("flushed") as run:
        for step in range(50):
            run.log_metrics({"a": step, "b": -step})
        assert run.flush(timeout=60)
        # a flushed batch is in wandb-core: its transaction log has it within wandb's
        # flush interval (0.5 s, trackkit's setting), without the run ending
        deadline = time.monotonic() + 60
        while True:
            [log] = reader.logs(run.id)
            rows = [r["history"]["item"] for r in leet_records(log) if r["type"] == "history"]
            if len(rows) >= 50 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [(r["_step"], r["a"], r["b"]) for r in rows] == [(s, s, -s) for s in range(50)]
        assert not any("a:step" in r or "b:step" in r for r in rows)


@pytest.mark.parametrize("fail_at", [1, 4])
def test_a_failing_fast_row_falls_back_to_run_log_without_losing_or_repeating_rows(
    root: Path,
    reader: WandbReader,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fail_at: int,
) -> None:
    """wandb's publish of the batch's ``fail_at``-th row raises once (a fault put in the SDK)."""
    from wandb.sdk.interface.interface_sock import InterfaceSock

    monkeypatch.setenv("TRACKKIT_WANDB_FAST_ROWS", "1")
    original = InterfaceSock._publish
    calls = {"rows": 0, "armed": False}

    def publish(self: Any, record: Any, *, nowait: bool = False) -> None:
        if calls["armed"] and record.request.HasField("partial_history"):
            calls["rows"] += 1
            if calls["rows"] == fail_at:
                calls["armed"] = False
                raise ConnectionError("injected")
        original(self, record, nowait=nowait)

    monkeypatch.setattr(InterfaceSock, "_publish", publish)
    tracker = _batching(root)
    with caplog.at_level("DEBUG", logger="trackkit"), tracker.start_run("fallback") as run:
        run.log_metric("a", 0.0)
        assert run.flush(timeout=60)  # the first batch on the fast path
        calls["armed"] = True
        for step in range(1, 10):
            run.log_metrics({"a": float(step), "b": -float(step)})
        assert run.flush(timeout=60)
        assert calls["rows"] == fail_at and not calls["armed"]
        for step in range(10, 12):  # run.log from now on
            run.log_metric("a", float(step))
    tracker.close()
    rows = reader.history(run.id)
    assert [r["_step"] for r in rows] == list(range(12))
    assert reader.metric_points(run.id, "a") == [(s, float(s)) for s in range(12)]
    assert reader.metric_points(run.id, "b") == [(s - 1, -float(s)) for s in range(1, 10)]
    notes = [r.getMessage() for r in caplog.records if "go through run.log" in r.getMessage()]
    assert len(notes) == 1, notes


def test_each_step_of_a_ten_key_loop_is_one_history_row(
    batching: trackkit.Tracker, reader: WandbReader
) -> None:
    keys = [f"m{i}" for i in range(10)]
    with batching.start_run("rows") as run:
        for step in range(30):
            run.log_metrics({k: step + i / 10 for i, k in enumerate(keys)})
        assert run.flush(timeout=60)
        for step in range(30, 40):  # a second batch continues W&B's row numbers
            run.log_metrics({k: step + i / 10 for i, k in enumerate(keys)})
    rows = reader.history(run.id)
    assert [r["_step"] for r in rows] == list(range(40))
    for step, row in enumerate(rows):
        # each row is what run.log of the ten values writes: no step or time of their own
        assert {k: v for k, v in row.items() if k != "_runtime"} == {
            "_step": step, "_timestamp": row["_timestamp"],
            **{k: step + i / 10 for i, k in enumerate(keys)},
        }  # fmt: skip
    assert reader.records(run.id, "metric") == []  # no key needs an x-axis of its own
    summary = reader.summary(run.id)  # each key's step, for resuming and RunInfo
    assert {k: summary[f"{k}:step"] for k in keys} == {k: 39 for k in keys}


def test_points_sit_at_their_own_step_and_the_others_carry_it_in_order(
    batching: trackkit.Tracker, reader: WandbReader
) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    later = datetime(2026, 1, 2, 3, 4, 6, tzinfo=timezone.utc)
    with batching.start_run("rows") as run:
        for n, step in enumerate((5, 10, 5)):  # out of order, and step 5 twice
            run.log_metric("loss", step * 10 + n, step=step, timestamp=moment)
        for _ in range(3):
            run.log_metric("acc", 0.5, timestamp=moment)  # steps 0, 1, 2
        run.log_metric("acc", 0.75, timestamp=later)  # step 3
    rows = reader.history(run.id)
    # each point at its own step where that row is free; loss's repeated 5 after its 10, with
    # its step; one key's points never share a row
    assert [(r["_step"], sorted(k for k in r if not k.startswith("_"))) for r in rows] == [
        (0, ["acc"]), (1, ["acc"]), (2, ["acc"]), (3, ["acc"]),
        (5, ["loss"]), (10, ["loss"]), (11, ["loss", "loss:step"]),
    ]  # fmt: skip
    times = [moment.timestamp()] * 3 + [later.timestamp()] + [moment.timestamp()] * 3
    assert [r["_timestamp"] for r in rows] == times
    defined = {m["name"]: m for m in reader.records(run.id, "metric")}
    assert sorted(defined) == ["loss", "loss:step"]  # the x-axis, once it was needed
    assert defined["loss"]["step_metric"] == "loss:step"
    assert reader.metric_points(run.id, "loss") == [(5, 50), (10, 101), (5, 52)]
    assert reader.metric_points(run.id, "acc") == [(0, 0.5), (1, 0.5), (2, 0.5), (3, 0.75)]
    summary = reader.summary(run.id)  # each key's value at its highest step
    assert (summary["loss"], summary["loss:step"]) == (101, 10)
    assert (summary["acc"], summary["acc:step"]) == (0.75, 3)
    assert batching.get_run(run.id).metrics == {"loss": 101, "acc": 0.75}


def test_a_point_in_a_row_of_another_time_carries_its_own_time(
    batching: trackkit.Tracker, reader: WandbReader
) -> None:
    first = datetime(2026, 1, 2, 3, 4, 5, 125000, tzinfo=timezone.utc)
    second = datetime(2026, 1, 2, 3, 4, 7, 250000, tzinfo=timezone.utc)
    with batching.start_run("times") as run:
        for step in range(3):  # two calls a step, as a loop logging loss then acc does
            run.log_metric("loss", float(step), timestamp=first)
            run.log_metric("acc", step / 10, timestamp=second)
    rows = reader.history(run.id)
    # one row per step at W&B's own step: acc shares loss's row and keeps its own time
    assert [(r["_step"], r["_timestamp"], r["acc:timestamp"]) for r in rows] == [
        (s, first.timestamp(), second.timestamp()) for s in range(3)
    ]
    assert not any("loss:step" in r or "acc:step" in r for r in rows)
    assert reader.metric_times(run.id, "acc") == [second.timestamp()] * 3
    history = batching.get_metric_history(run.id, "acc")
    assert [(p.step, p.value, p.timestamp) for p in history] == [
        (s, s / 10, round(second.timestamp() * 1000)) for s in range(3)
    ]
    defined = {m["name"]: m for m in reader.records(run.id, "metric")}
    assert defined["acc:timestamp"]["options"]["hidden"] is True
    assert defined["acc:timestamp"]["summary"]["none"] is True  # kept out of the summary
    assert "acc:timestamp" not in reader.summary(run.id)
    assert batching.get_run(run.id).metrics == {"loss": 2.0, "acc": 0.2}


def test_a_second_counter_below_the_first_carries_its_steps_across_batches(
    batching: trackkit.Tracker, reader: WandbReader
) -> None:
    """Steps per batch, validation once an epoch on its own counter, batches flushed apart."""
    with batching.start_run("counters") as run:
        for epoch in range(3):
            for batch in range(10):
                run.log_metric("train.loss", 1 / (1 + epoch * 10 + batch))
            run.log_metric("val.loss", epoch / 2)  # steps 0, 1, 2: below the rows W&B has
            assert run.flush(timeout=60)
    rows = reader.history(run.id)
    assert [r["_step"] for r in rows] == list(range(30))  # one row per training step
    assert not any("train.loss:step" in r for r in rows)
    assert reader.metric_points(run.id, "train.loss") == [(s, 1 / (1 + s)) for s in range(30)]
    assert reader.metric_points(run.id, "val.loss") == [(0, 0.0), (1, 0.5), (2, 1.0)]
    # validation's step 0 was still a free row number in the first batch, so it sits there;
    # its later steps are below the rows W&B has: they join the last row of their batch and
    # carry their step
    val = [(r["_step"], r.get("val.loss:step")) for r in rows if "val.loss" in r]
    assert val == [(0, None), (19, 1), (29, 2)]
    defined = {m["name"]: m for m in reader.records(run.id, "metric")}
    assert defined["val.loss"]["step_metric"] == "val.loss:step"
    assert "train.loss" not in defined
    history = batching.get_metric_history(run.id, "val.loss")
    assert [(p.step, p.value) for p in history] == [(0, 0.0), (1, 0.5), (2, 1.0)]
    summary = reader.summary(run.id)
    assert (summary["val.loss:step"], summary["train.loss:step"]) == (2, 29)


def test_with_tensorboard_patched_w_and_b_numbers_rows_and_every_point_carries_its_step(
    root: Path, reader: WandbReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With wandb's TensorBoard patching, ``run.log`` leaves the row number out (wandb then
    numbers rows itself): no point can rely on its row's number."""
    tracker = _batching(root)
    with tracker.start_run("tb") as run:
        run.log_metrics({"a": 1.0, "b": 2.0}, step=5)
        assert run.flush(timeout=60)
        monkeypatch.setitem(wandb.patched, "tensorboard", [["not.a.module", "patched"]])
        run.log_metrics({"a": 3.0, "b": 4.0}, step=7)
        run.log_metric("a", 5.0, step=2)
    tracker.close()
    rows = reader.history(run.id)
    assert [r["_step"] for r in rows] == [5, 6, 7]
    assert [(r.get("a:step"), r.get("b:step")) for r in rows] == [(None, None), (7, 7), (2, None)]
    assert reader.metric_points(run.id, "a") == [(5, 1.0), (7, 3.0), (2, 5.0)]
    assert reader.metric_points(run.id, "b") == [(5, 2.0), (7, 4.0)]


def test_params_are_config_under_the_same_flattened_keys(
    offline: trackkit.Tracker, reader: WandbReader
) -> None:
    with offline.start_run("params") as run:
        run.log_params({"model": {"alpha": 0.5, "kind": "lasso"}, "epochs": 3, "fast": False})
        with pytest.raises(InvalidInput, match="epochs"):
            run.log_param("epochs", 4)
    assert reader.config(run.id) == {
        "model.alpha": 0.5,
        "model.kind": "lasso",
        "epochs": 3,
        "fast": False,
    }  # typed, as W&B shows and filters them


def test_params_read_back_with_the_text_they_were_logged_with(
    offline: trackkit.Tracker, reader: WandbReader, root: Path
) -> None:
    values = {
        "whole": 1.0,
        "huge": 1e20,
        "zero": -0.0,
        "nan": math.nan,
        "inf": -math.inf,
        "big": 12345678901234567890,
        "exact": 2**53,
        "small": 0.1,
        "tiny": 1e-7,
        "count": 3,
        "text": "1.0",
        "flag": True,
    }
    expected = {key: str(value) for key, value in values.items()}  # what MLflow stores
    with offline.start_run("texts") as run:
        run.log_params(values)
        assert offline.get_run(run.id).params == expected
    # W&B's reader holds numbers as doubles and prints 1.0 back as 1; the SDK writes NaN as null
    config = reader.config(run.id)
    assert (config["whole"], config["huge"], config["nan"]) == (1, 10**20, None)
    assert type(config["whole"]) is int and config["big"] != values["big"]
    # so the logged text of those few is kept beside them, in the summary
    kept = {k: v for k, v in reader.summary(run.id).items() if k.startswith("trackkit:param:")}
    assert kept == {
        "trackkit:param:whole": "1.0",
        "trackkit:param:huge": "1e+20",
        "trackkit:param:zero": "-0.0",
        "trackkit:param:nan": "nan",
        "trackkit:param:inf": "-inf",
        "trackkit:param:big": "12345678901234567890",
    }
    assert reader.params(run.id) == expected
    assert offline.get_run(run.id).params == expected
    [found] = offline.search_runs("texts", filter="params.whole = '1.0' AND params.huge = '1e+20'")
    assert found.id == run.id
    # another process reads the same; resumed, the run takes the same values again, not others
    again = trackkit.get_tracker("wandb", mode="offline", dir=root, settings=FAST)
    assert again.get_run(run.id).params == expected
    with again.start_run(run_id=run.id) as resumed:
        resumed.log_params({"whole": 1.0, "huge": 1e20, "big": 12345678901234567890})
        with pytest.raises(InvalidInput, match="whole"):
            resumed.log_param("whole", 1)
    again.close()
    assert reader.params(run.id) == expected


def test_status_maps_to_exit_codes_and_is_readable_back(
    offline: trackkit.Tracker, reader: WandbReader
) -> None:
    with offline.start_run("status") as ok:
        pass
    with pytest.raises(ValueError, match="bad"), offline.start_run("status") as failed:
        raise ValueError("bad")
    killed = offline.start_run("status")
    killed.end("KILLED")
    assert [reader.exit_code(r.id) for r in (ok, failed, killed)] == [0, 1, 130]
    assert [reader.summary(r.id)["trackkit:status"] for r in (ok, failed, killed)] == [
        "FINISHED", "FAILED", "KILLED"
    ]  # fmt: skip
    assert offline.get_run(killed.id).status == "KILLED"


def test_tags_read_back_losslessly_and_short_ones_are_w_and_b_tags(
    offline: trackkit.Tracker, reader: WandbReader
) -> None:
    long_note = "n" * 100
    with offline.start_run("tags", tags={"developer": "ana", "note": long_note}) as run:
        run.set_tag("stage", "draft")
        run.set_tag("stage", "final")
        run.set_tag("git.commit", "a1b2c3")
    assert reader.tags(run.id) == {
        "developer": "ana",
        "note": long_note,
        "stage": "final",
        "git.commit": "a1b2c3",
    }
    # W&B tags are labels of at most 64 characters: short tags are mirrored as key:value
    assert sorted(reader.wandb_tags(run.id)) == [
        "developer:ana",
        "git.commit:a1b2c3",
        "stage:final",
    ]
    assert offline.get_run(run.id).tags["note"] == long_note


def test_resuming_offline_continues_w_and_b_row_numbers_and_each_key_step(
    offline: trackkit.Tracker, reader: WandbReader
) -> None:
    with offline.start_run("resume", name="first") as first:
        first.log_param("lr", 0.1)
        for value in (3.0, 2.0, 1.0):
            first.log_metric("loss", value)
    with offline.start_run(run_id=first.id) as again:
        again.log_metrics({"loss": 0.5, "acc": 0.9})  # one row: loss at step 3, acc at 0
    assert len(reader.logs(first.id)) == 2  # W&B writes a run directory per wandb.init
    [_, resumed] = reader.segments(first.id)
    rows = [r["history"]["item"] for r in resumed if r["type"] == "history"]
    # `wandb sync` keeps a resumed run's rows only if they come after the ones it has
    assert [r["_step"] for r in rows] == [3]
    assert sorted(reader.metric_points(first.id, "loss")) == [
        (0, 3.0),
        (1, 2.0),
        (2, 1.0),
        (3, 0.5),
    ]
    assert again.name == "first" and again.experiment == "resume"
    with pytest.raises(InvalidInput, match="belongs to experiment 'resume'"):
        offline.start_run("elsewhere", run_id=first.id)
    with pytest.raises(NotFound, match="no W&B run"):
        offline.start_run(run_id="nosuchid")


def test_sync_ends_a_run_whose_process_was_killed(
    root: Path, reader: WandbReader, tmp_path: Path
) -> None:
    script = f"""
import os, time, trackkit
tracker = trackkit.get_tracker("wandb", mode="offline", dir={str(root)!r}, settings={FAST!r})
run = tracker.start_run("killed")
for value in (3.0, 2.0, 1.0):
    run.log_metric("loss", value)
run.flush()
print(run.id, flush=True)
time.sleep(1.5)  # wandb writes its transaction log every 0.5 s (trackkit's setting)
os._exit(0)  # no end, no atexit: as if killed
"""
    # its own wandb service: a child inherits the parent's through WANDB_SERVICE, and the
    # parent's service would then still hold the killed run
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    run_id = done.stdout.split()[-1]
    assert reader.status(run_id) == "RUNNING"
    [result] = trackkit.sync(mode="offline")  # stay offline: W&B is not reachable here
    assert result.error is None
    assert (result.kind, result.run_id, result.outcome) == ("run", run_id, "delivered")
    assert reader.status(run_id) == "KILLED"
    assert sorted(reader.metric_points(run_id, "loss")) == [(0, 3.0), (1, 2.0), (2, 1.0)]


def test_artifacts_are_run_files_and_download_from_the_run_directory(
    offline: trackkit.Tracker, reader: WandbReader, tmp_path: Path
) -> None:
    with offline.start_run("files") as run:
        run.log_dict({"a": 1}, "config.yaml")  # W&B's own config.yaml is another file
        run.log_text("x", "deep/er/x.txt")
    files = {f["path"] for r in reader.records(run.id, "files") for f in r["files"]}
    assert {"artifacts/config.yaml", "artifacts/deep/er/x.txt"} <= files
    copy = offline.download_artifacts(run.id, "deep", tmp_path / "dl")
    assert (copy / "er" / "x.txt").read_text() == "x"
    whole = offline.download_artifacts(run.id, "", tmp_path / "all")
    assert (whole / "config.yaml").read_text() == "a: 1\n"


def test_a_model_is_a_model_artifact_holding_a_trackkit_package(
    offline: trackkit.Tracker, reader: WandbReader
) -> None:
    pipeline, rows = _pipeline()
    with offline.start_run("models") as run:
        ref = run.log_model(pipeline, "models/ride")
    prefix = f"wandb-artifact:///models/models-ride-{run.id}:trackkit-"
    assert ref.uri.startswith(prefix) and ref.flavor == "sklearn"
    [artifact] = reader.artifacts(run.id)
    assert artifact["type"] == "model" and artifact["name"] == f"models-ride-{run.id}"
    assert set(artifact["aliases"]) == {"latest", ref.uri.rsplit(":", 1)[1]}
    assert {c["path"] for c in artifact["manifest"]["contents"]} == {
        "model.pkl",
        "trackkit-model.json",
    }
    meta = json.loads(artifact["metadata"])["trackkit"]
    assert (meta["run_id"], meta["flavor"], meta["name"]) == (run.id, "sklearn", "models/ride")
    loaded = offline.load_model(ref)
    assert list(loaded.predict(rows)) == list(pipeline.predict(rows))


def test_a_model_logged_elsewhere_cannot_load_offline(offline: trackkit.Tracker) -> None:
    with pytest.raises(NotFound, match="load it with W&B online"):
        offline.load_model("wandb-artifact:///p/model-x:trackkit-000")


def test_a_child_run_is_in_its_parents_w_and_b_group_and_names_it_in_its_config(
    offline: trackkit.Tracker, reader: WandbReader, root: Path
) -> None:
    with (
        offline.start_run("search", name="search") as search,
        offline.start_run(name="trial-0", parent=search) as trial,
        offline.start_run(name="fold-0", parent=trial) as fold,
    ):
        assert offline.get_run(fold.id).parent_id == trial.id  # open
    with offline.start_run("search", name="other") as other:
        pass
    # W&B's own command shows the group and the config entry in the child's run record
    [log] = reader.logs(fold.id)
    wandb_command = [str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json"]
    out = subprocess.run(
        [*wandb_command, str(log.parent)], capture_output=True, text=True, check=True, timeout=300
    )
    [run_record] = [
        r["run"] for r in map(json.loads, out.stdout.splitlines()) if r["type"] == "run"
    ]
    assert run_record["run_group"] == search.id  # the whole search is one W&B group
    assert run_record["config"]["update"]["trackkit:parent_id"] == trial.id
    groups = {r.name: reader.group(r.id) for r in (search, trial, fold, other)}
    assert groups == {"search": None, "trial-0": search.id, "fold-0": search.id, "other": None}
    parents = {r.name: reader.parent_id(r.id) for r in (search, trial, fold, other)}
    assert parents == {"search": None, "trial-0": search.id, "fold-0": trial.id, "other": None}
    assert [offline.get_run(r.id).parent_id for r in (search, trial, fold, other)] == [
        None, search.id, trial.id, None
    ]  # fmt: skip
    assert offline.get_run(fold.id).params == {}  # the link is not a param
    # resumed in another process, the child keeps its group and its parent
    again = trackkit.get_tracker("wandb", mode="offline", dir=root, settings=FAST)
    with again.start_run(run_id=fold.id) as resumed:
        resumed.log_metric("loss", 0.5)
        assert again.get_run(resumed.id).parent_id == trial.id
    again.close()
    assert len(reader.logs(fold.id)) == 2 and reader.records(fold.id, "run")[-1]["run_group"] == (
        search.id
    )
    assert offline.get_run(fold.id).parent_id == trial.id
    with pytest.raises(NotFound, match="no W&B run 'nosuchid'"):
        offline.start_run("search", parent="nosuchid")


def test_with_a_fixed_project_the_group_stays_the_experiment_and_the_config_names_the_parent(
    root: Path, reader: WandbReader
) -> None:
    tracker = trackkit.get_tracker("wandb", mode="offline", dir=root, settings=FAST, project="p")
    with tracker.start_run("search") as search, tracker.start_run(parent=search) as trial:
        pass
    assert (reader.group(search.id), reader.group(trial.id)) == ("search", "search")
    assert reader.parent_id(trial.id) == search.id
    [info] = tracker.search_runs("search", filter=f"attributes.parent_id = '{search.id}'")
    assert info.id == trial.id and info.experiment == "search"
    tracker.close()


def test_a_fixed_project_keeps_experiments_as_groups(root: Path, reader: WandbReader) -> None:
    tracker = trackkit.get_tracker("wandb", mode="offline", dir=root, settings=FAST, project="ride")
    with tracker.start_run("lasso") as a:
        a.log_metric("rmse", 6.0)
    with tracker.start_run("ridge") as b:
        b.log_metric("rmse", 7.0)
    found = tracker.search_runs("lasso")
    assert [(r.id, r.experiment) for r in found] == [(a.id, "lasso")]
    with pytest.raises(NotFound, match="no W&B run of experiment 'elastic'"):
        tracker.search_runs(["lasso", "elastic"])
    tracker.close()
    [run_record] = reader.records(a.id, "run")[:1]
    assert run_record["project"] == "ride"
    assert reader.summary(b.id)["trackkit:experiment"] == "ridge"


def test_reader_matches_the_wandb_command(offline: trackkit.Tracker, reader: WandbReader) -> None:
    with offline.start_run("cli") as run:
        run.log_metric("m", 1.0)
    [log] = reader.logs(run.id)
    command = [
        str(Path(sys.executable).parent / "wandb"),
        "leet",
        "inspect",
        "--json",
        str(log.parent),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    assert [json.loads(line) for line in out.stdout.splitlines()] == leet_records(log)


# -- the registry offline, and `trackkit sync` carrying it to the W&B Registry -------------------
def test_ride_duration_registry_flow_runs_offline_and_sync_carries_it_to_w_and_b(
    root: Path,
    reader: WandbReader,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACKKIT_OFFLINE", "1")
    tracker = trackkit.get_tracker("wandb", dir=root, settings=FAST)
    pipeline, rows = _pipeline()
    refs = []
    for alpha in (0.1, 0.01):
        with tracker.start_run("ride-duration") as run:
            run.log_params({"model": "linear", "alpha": alpha})
            run.log_metric("rmse", 6.5 - alpha)
            refs.append(run.log_model(pipeline, "model"))
    v1 = tracker.register_model(refs[0], "ride-duration", description="first")
    v2 = tracker.register_model(refs[1], "ride-duration")
    tracker.set_model_alias("ride-duration", "staging", v1.version)
    tracker.set_model_alias("ride-duration", "production", v1.version)
    tracker.set_model_alias("ride-duration", "production", v2.version)  # promote: move it
    assert tracker.get_model_version("ride-duration", alias="production").version == 2
    assert tracker.get_model_version("ride-duration", alias="staging").version == 1
    model = tracker.load_model("models:/ride-duration@production")
    assert list(model.predict(rows)) == list(pipeline.predict(rows))
    tracker.close()
    assert (
        reader.model_versions("ride-duration"),
        reader.alias_version("ride-duration", "production"),
    ) == ([1, 2], 2)

    journal_dir = tmp_path / ".trackkit" / "journal"
    assert _deferred(journal_dir) == [
        (
            "register_model",
            {"source": refs[0].uri, "name": "ride-duration", "description": "first"},
        ),
        ("register_model", {"source": refs[1].uri, "name": "ride-duration", "description": None}),
        ("set_model_alias", {"name": "ride-duration", "alias": "staging", "version": 1}),
        ("set_model_alias", {"name": "ride-duration", "alias": "production", "version": 1}),
        ("set_model_alias", {"name": "ride-duration", "alias": "production", "version": 2}),
    ]

    # `wandb sync` uploads the offline runs with their model artifacts (emulated on the fake),
    # then `trackkit sync` replays the registry calls on the W&B Registry
    fake = FakeWandbApi()
    fake.upload_offline(root / "wandb")
    monkeypatch.setattr(WandbBackend, "api_factory", lambda **_: fake)
    monkeypatch.setenv("WANDB_API_KEY", SECRET)  # TRACKKIT_OFFLINE stays set: sync goes online
    [result] = trackkit.sync()
    assert (result.kind, result.outcome, result.operations) == ("deferred", "delivered", 5)

    src = [r.uri[len("wandb-artifact:///") :] for r in refs]
    registry = "wandb-registry-model/ride-duration"
    members = ("artifacts", "model", registry)
    assert fake.calls == [
        members,  # not linked yet (an interrupted sync is not linked twice)
        ("artifact", src[0], "model"),
        ("link", f"ana/ride-duration/{src[0].split('/')[1].split(':')[0]}:v0", registry),
        ("save", "ride-duration:v0", ["latest"], "first"),
        members,
        ("artifact", src[1], "model"),
        ("link", f"ana/ride-duration/{src[1].split('/')[1].split(':')[0]}:v0", registry),
        members,  # offline version 1 is the W&B version whose source is refs[0]
        ("artifact", f"{registry}:v0", "model"),
        ("artifact", f"{registry}:staging", "model"),
        ("save", "ride-duration:v0", ["staging"], "first"),
        members,
        ("artifact", f"{registry}:v0", "model"),
        ("artifact", f"{registry}:production", "model"),
        ("save", "ride-duration:v0", ["production", "staging"], "first"),
        members,
        ("artifact", f"{registry}:v1", "model"),
        ("artifact", f"{registry}:production", "model"),
        ("save", "ride-duration:v0", ["staging"], "first"),  # moved away...
        ("save", "ride-duration:v1", ["latest", "production"], None),  # ...to version 2
    ]
    assert trackkit.sync() == []  # idempotent: nothing left to replay


def test_the_ride_duration_example_registry_step_runs_unchanged_offline(
    offline: trackkit.Tracker, reader: WandbReader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from examples.ride_duration import data, registry, train

    months = data.write_synthetic_months(tmp_path / "data", ["2021-01", "2021-02", "2021-03"], 1500)
    training = train.TrainingData.load(months[0], months[1], synthetic=True, seed=42)
    train.train(offline, training, "linear_regression")
    first = registry.run_registry(offline, months[2])
    assert (first.version.version, first.aliases) == (1, {"staging": 1, "production": 1})
    train.train(offline, training, "ridge", {"alpha": 0.5})
    second = registry.run_registry(offline, months[2])  # registers the best run again
    assert second.versions == [1, 2] and second.aliases["staging"] == 2
    production = 2 if second.promoted else 1
    assert second.aliases["production"] == production
    assert reader.alias_version("ride-duration", "production") == production
    deferred = [op for op, _ in _deferred(tmp_path / ".trackkit" / "journal")]
    assert deferred[:5] == [
        "register_model", "update_registered_model", "set_model_alias", "set_model_alias",
        "update_model_version",
    ]  # fmt: skip
    assert deferred.count("register_model") == 2
    assert deferred.count("update_registered_model") == 2  # the example describes its model


def test_the_core_keeps_the_offline_registry_and_never_replays_it_offline(
    offline: trackkit.Tracker, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert offline.backend.offline_registry() == root / "trackkit-wandb" / "registry.db"
    with pytest.raises(trackkit.InvalidInput, match="W&B Registry collection"):
        offline.register_model("wandb-artifact:///p/m:trackkit-1", "bad name")
    with pytest.raises(trackkit.InvalidInput, match="registers models logged with log_model"):
        offline.register_model("runs:/abc/model", "ride")
    version = offline.register_model("wandb-artifact:///p/m:trackkit-1", "ride")
    assert version.version == 1
    journal_dir = tmp_path / ".trackkit" / "journal"
    assert _deferred(journal_dir) == [
        (
            "register_model",
            {"source": "wandb-artifact:///p/m:trackkit-1", "name": "ride", "description": None},
        )
    ]
    offline.close()
    # replaying to a backend whose registry is offline too would only defer it again
    [result] = trackkit.sync(backend="wandb", mode="offline")
    assert (result.kind, result.outcome) == ("deferred", "failed")
    assert "registry is offline" in (result.error or "")
    assert len(_deferred(journal_dir)) == 1  # kept for a sync with W&B online


def test_replay_options_carry_no_secret_and_send_offline_work_online(root: Path) -> None:
    settings = {**FAST, "http_proxy": "http://u:pw@p", "base_url": "https://u:pw@w.example"}
    backend = WandbBackend(mode="offline", dir=root, entity="ana", settings=settings)
    options = backend.replay_options()
    assert options == {
        "dir": str(root.resolve()),
        "registry": str(root.resolve() / "trackkit-wandb" / "registry.db"),
        "entity": "ana",
        "settings": {**FAST, "base_url": "https://u@w.example"},
        "mode": "online",
        "from_offline": True,
    }


def _bytes_under(*roots: Path) -> dict[Path, bytes]:
    """Every file under ``roots``, a linked file (W&B links its core log) read through its link."""
    return {p: p.read_bytes() for root in roots for p in root.rglob("*") if p.is_file()}


def test_a_password_in_base_url_stays_out_of_journals_w_and_b_files_and_messages(
    root: Path, tmp_path: Path
) -> None:
    password = "pw-" + "c0ffee" * 4
    base_url = f"https://ana:{password}@wandb.example.com"
    settings = {**FAST, "x_disable_meta": False, "x_disable_machine_info": False}
    settings["base_url"] = base_url
    journals = tmp_path / "journals"
    tracker = trackkit.get_tracker(
        "wandb", mode="offline", dir=root, settings=settings, journal_dir=journals
    )
    pipeline, _ = _pipeline()
    with tracker.start_run("secrets") as run:
        run.log_params({"p": 1, "url": "https://wandb.example.com"})
        run.log_metric("m", 1.0)
        ref = run.log_model(pipeline)
        while_open = _bytes_under(journals)  # the run's journal, with its replay options
    tracker.register_model(ref, "secret-model")  # deferred: journaled for `trackkit sync`
    tracker.set_model_alias("secret-model", "production", 1)
    shown = [
        repr(tracker),
        tracker.backend.describe(),
        json.dumps(tracker.backend.replay_options()),
    ]
    with pytest.raises(InvalidInput) as caught:
        trackkit.get_tracker("wandb", mode="offline", dir=root, settings={**settings, "nope": 1})
    shown.append(str(caught.value))
    tracker.close()

    [run_file] = WandbReader(root).logs(run.id)
    stored = {**while_open, **_bytes_under(journals, root)}
    assert run_file in stored
    # the run's journal records where it goes, without the password
    assert any(b"https://ana@wandb.example.com" in blob for blob in while_open.values())
    assert any(p.name.startswith("deferred-") for p in stored)
    assert [p for p, blob in stored.items() if password.encode() in blob] == []
    assert [text for text in shown if password in text] == []
    # the address itself is kept (sync sends a journal only where it was meant to go)
    [deferred] = journals.glob("**/deferred-*.db")
    journal = jn.Journal(deferred, own=False)
    assert journal.meta()["options"]["settings"]["base_url"] == "https://ana@wandb.example.com"
    journal.close()


def test_the_api_key_stays_out_of_reprs_messages_and_journals(
    root: Path, tmp_path: Path, fake: FakeWandbApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    tracker = trackkit.get_tracker("wandb", mode="offline", dir=root, settings=FAST)
    pipeline, _ = _pipeline()
    with tracker.start_run("secrets") as run:
        run.log_param("p", 1)
        ref = run.log_model(pipeline)
    tracker.register_model(ref, "secret-model")
    tracker.set_model_alias("secret-model", "production", 1)
    shown = [
        repr(tracker),
        tracker.backend.describe(),
        json.dumps(tracker.backend.replay_options()),
    ]
    tracker.close()
    online = trackkit.get_tracker("wandb", mode="online", dir=root)

    def leak(name: str, type: str | None = None) -> None:
        raise wandb.errors.CommError(f"HTTP 401: api key {SECRET} is not valid")

    fake.artifact = leak  # type: ignore[method-assign]
    with pytest.raises(trackkit.BackendError) as caught:
        online.get_model_version("secret-model", version=1)
    shown += [str(caught.value), repr(online)]
    stored = [p.read_bytes() for p in (tmp_path / ".trackkit").rglob("*") if p.is_file()]
    stored += [p.read_bytes() for p in (root / "trackkit-wandb").rglob("*") if p.is_file()]
    assert stored and all(SECRET.encode() not in blob for blob in stored)
    assert all(SECRET not in text for text in shown)
    assert "***" in str(caught.value)
    online.close()


# -- online: the W&B Registry, search and downloads, against the fake ----------------------------
@pytest.fixture
def logged(fake: FakeWandbApi, tmp_path: Path) -> tuple[Any, list[dict[str, Any]], list[str]]:
    """Two model artifacts, as runs logged them with W&B online."""
    pipeline, rows = _pipeline()
    paths = []
    for i in (1, 2):
        package = tmp_path / "uploaded" / f"m{i}"
        models.save_package(pipeline, "sklearn", package)
        meta = {
            "trackkit": {
                "name": "model",
                "flavor": "sklearn",
                "run_id": f"run{i}",
                "ref": f"trackkit-{i}",
            }
        }
        fake.add_logged("ride", f"model-run{i}", package, meta, [f"trackkit-{i}"])
        paths.append(f"ana/ride/model-run{i}:trackkit-{i}")
    return pipeline, rows, paths


def test_registry_online_links_into_the_w_and_b_registry_and_moves_aliases(
    online: trackkit.Tracker, fake: FakeWandbApi, logged: tuple[Any, Any, list[str]]
) -> None:
    pipeline, rows, paths = logged
    v1 = online.register_model(f"wandb-artifact:///{paths[0]}", "ride", description="first")
    v2 = online.register_model(f"wandb-artifact:///{paths[1]}", "ride")
    assert (v1.version, v1.run_id, v1.description) == (1, "run1", "first")
    assert v1.source == f"wandb-artifact:///{paths[0]}"
    assert v2.version == 2
    assert fake.calls == [
        ("artifact", paths[0], "model"),
        ("link", "ana/ride/model-run1:v0", "wandb-registry-model/ride"),
        ("save", "ride:v0", ["latest"], "first"),
        ("artifact", paths[1], "model"),
        ("link", "ana/ride/model-run2:v0", "wandb-registry-model/ride"),
    ]
    fake.calls.clear()
    online.set_model_alias("ride", "production", 1)
    online.set_model_alias("ride", "production", 2)
    assert fake.calls == [
        ("artifact", "wandb-registry-model/ride:v0", "model"),
        ("artifact", "wandb-registry-model/ride:production", "model"),
        ("save", "ride:v0", ["production"], "first"),
        ("artifact", "wandb-registry-model/ride:v1", "model"),
        ("artifact", "wandb-registry-model/ride:production", "model"),
        ("save", "ride:v0", [], "first"),
        ("save", "ride:v1", ["latest", "production"], None),
    ]
    assert online.get_model_version("ride", alias="production").version == 2
    assert [v.aliases for v in online.list_model_versions("ride")] == [(), ("production",)]
    assert online.get_model_version("ride", alias="latest").version == 2  # trackkit resolves it
    updated = online.update_model_version("ride", 1, "kept as fallback")
    assert updated.description == "kept as fallback"
    fake.calls.clear()
    loaded = online.load_model("models:/ride@production")
    assert list(loaded.predict(rows)) == list(pipeline.predict(rows))
    assert fake.calls == [
        ("artifact", "wandb-registry-model/ride:production", "model"),
        ("artifact", paths[1], "model"),
        ("download", "ana/ride/model-run2:v0"),
    ]
    online.delete_model_alias("ride", "production")
    with pytest.raises(NotFound, match="not found"):
        online.get_model_version("ride", alias="production")
    with pytest.raises(NotFound):
        online.get_model_version("ride", version=9)
    with pytest.raises(NotFound):
        online.list_model_versions("no-such-model")


def test_registry_names_and_sources_must_suit_w_and_b(
    online: trackkit.Tracker, logged: tuple[Any, Any, list[str]]
) -> None:
    with pytest.raises(InvalidInput, match="W&B Registry collection"):
        online.register_model(f"wandb-artifact:///{logged[2][0]}", "ride duration")
    with pytest.raises(InvalidInput, match="models logged with log_model"):
        online.register_model("runs:/abc/model", "ride")


def _fake_runs(fake: FakeWandbApi, project: str) -> None:
    fake.project_runs[project] = [
        FakeRun("r1", project, config={"model": "lasso", "model.alpha": 0.1}, summary={"rmse": 7.1, "rmse:step": 0, "tag:developer": "ana", "trackkit:status": "FINISHED"}, created_at="2026-11-26T10:00:01Z"),
        FakeRun("r2", project, config={"model": "ridge", "model.alpha": 0.5}, summary={"rmse": 6.5, "tag:developer": "bo"}, created_at="2026-11-26T10:00:02Z", state="failed"),
        FakeRun("r3", project, config={"model": "lasso", "model.alpha": 0.5}, summary={"rmse": 6.2, "trackkit:status": "KILLED"}, created_at="2026-11-26T10:00:03Z", state="failed"),
    ]  # fmt: skip


def test_search_online_narrows_on_w_and_b_and_checks_every_condition(
    online: trackkit.Tracker, fake: FakeWandbApi
) -> None:
    _fake_runs(fake, "ride")
    found = online.search_runs(
        "ride",
        filter="metrics.rmse < 7 and params.model = 'lasso'",
        order_by=["metrics.rmse ASC"],
    )
    assert [(r.id, r.status, r.params["model"]) for r in found] == [("r3", "KILLED", "lasso")]
    assert fake.calls == [
        (
            "runs",
            "ride",
            {
                "$and": [
                    {"summary_metrics.rmse": {"$lt": 7.0}},
                    {"config.model": {"$in": ["lasso"]}},
                ]
            },
            "+summary_metrics.rmse",
            100,
        )
    ]
    fake.calls.clear()
    # W&B cannot filter config keys holding a '.': trackkit checks them on what W&B returns
    dotted = online.search_runs("ride", filter="params.model.alpha = '0.5'", max_results=1)
    assert [r.id for r in dotted] == ["r3"]  # newest first
    assert fake.calls == [("runs", "ride", {}, "-created_at", 50)]
    fake.calls.clear()
    tagged = online.search_runs("ride", filter="tags.developer = 'ana'")
    assert [r.tags for r in tagged] == [{"developer": "ana"}]
    assert fake.calls[0][2] == {"tags": "developer:ana"}
    first = online.search_runs("ride", order_by=["metrics.rmse DESC", "attributes.run_name ASC"])
    assert [r.metrics["rmse"] for r in first] == [7.1, 6.5, 6.2]
    assert fake.calls[-1][3] == "-created_at"  # two keys: trackkit sorts


def test_get_run_and_download_online_in_a_fixed_project(
    fake: FakeWandbApi, root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    tracker = trackkit.get_tracker("wandb", mode="online", dir=root, project="shared", entity="ana")
    fake.project_runs["shared"] = [
        FakeRun("r9", "shared", summary={"rmse": 1.5, "trackkit:experiment": "lasso"}, files={"artifacts/out/a.txt": "A", "artifacts/out/b/c.txt": "C", "output.log": "log"}),
    ]  # fmt: skip
    info = tracker.get_run("r9")
    assert (info.experiment, info.status, info.metrics) == ("lasso", "FINISHED", {"rmse": 1.5})
    assert info.parent_id is None
    fake.project_runs["shared"].append(
        FakeRun("c1", "shared", config={"alpha": 0.5, "trackkit:parent_id": "r9"}, group="r9")
    )
    child = tracker.get_run("c1")
    assert (child.parent_id, child.params) == ("r9", {"alpha": "0.5"})
    out = tracker.download_artifacts("r9", "out", tmp_path / "dl")
    assert (out / "a.txt").read_text() == "A" and (out / "b" / "c.txt").read_text() == "C"
    with pytest.raises(NotFound, match="no artifact"):
        tracker.download_artifacts("r9", "missing.txt", tmp_path / "dl2")
    tracker.search_runs("lasso", filter="metrics.rmse > 1")
    assert fake.calls[-1] == (
        "runs",
        "ana/shared",
        {"$and": [{"summary_metrics.rmse": {"$gt": 1.0}}, {"group": "lasso"}]},
        "-created_at",
        100,
    )
    tracker.close()


# -- the filter translation (the grammar itself: tests/test_search.py) -------------------------
def test_filters_translate_to_w_and_b_mongodb_style_conditions() -> None:
    def translate(text: str) -> dict[str, Any]:
        return to_wandb_filter(parse_filter(text))

    assert translate("metrics.rmse = 6.5") == {"summary_metrics.rmse": 6.5}
    assert translate("metrics.val.loss != 1") == {"summary_metrics.val.loss": {"$ne": 1.0}}
    assert translate("params.alpha = '0.1'") == {"config.alpha": {"$in": ["0.1", 0.1]}}
    assert translate("params.epochs = '7'") == {"config.epochs": {"$in": ["7", 7, 7.0]}}
    assert translate("params.fast = 'True'") == {"config.fast": {"$in": ["True", True]}}
    assert translate("params.m IN ('a', 'b')") == {"config.m": {"$in": ["a", "b"]}}
    assert translate("tags.dev = 'ana'") == {"tags": "dev:ana"}
    assert translate("tags.dev IN ('ana', 'bo')") == {"tags": {"$in": ["dev:ana", "dev:bo"]}}
    assert translate("run_name = 'x' and attributes.run_id IN ('a')") == {
        "$and": [{"display_name": "x"}, {"name": {"$in": ["a"]}}]
    }
    # what W&B cannot filter exactly is left to trackkit, which checks every clause itself
    for text in (
        "params.model.alpha = '0.1'",  # a '.' in a config key
        "params.model != 'lasso'",
        "params.model LIKE 'la%'",
        f"tags.note = '{'x' * 70}'",  # longer than a W&B tag
        "attributes.status = 'KILLED'",
        "metrics.a.b.c.d.e.f > 1",
    ):
        assert translate(text) == {}, text


def test_order_translates_to_one_w_and_b_key_or_is_left_to_trackkit() -> None:
    assert to_wandb_order(parse_order([])) == "-created_at"
    assert to_wandb_order(parse_order(["metrics.rmse DESC"])) == "-summary_metrics.rmse"
    assert to_wandb_order(parse_order(["params.model"])) == "+config.model.value"
    assert to_wandb_order(parse_order(["attributes.start_time ASC"])) == "+created_at"
    assert to_wandb_order(parse_order(["params.model.alpha ASC"])) is None
    assert to_wandb_order(parse_order(["metrics.a", "metrics.b"])) is None


# -- the docs -----------------------------------------------------------------------------------
def test_the_docs_list_every_capability_and_limit_as_declared() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "wandb.md").read_text()
    rows = {
        cells[0].strip("` "): cells[1].strip()
        for line in text.splitlines()
        if line.startswith("| `") and len(cells := line.strip("|").split("|")) >= 2
    }
    for capability, declared in WandbBackend.capabilities.as_dict().items():
        assert rows[capability].split()[0] == ("yes" if declared else "no"), capability
    for limit in ("key_length", "param_value_length", "tag_value_length", "batch_metrics"):
        assert rows[limit].replace(",", "") == str(getattr(WandbBackend.limits, limit)), limit
    assert rows["key_invalid_chars"] == f"`{WandbBackend.limits.key_invalid_chars}`"
