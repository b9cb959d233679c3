"""The conformance suite on W&B in offline mode, the real wandb SDK.

Everything is read back with W&B's own reader of the offline transaction log (``wandb leet
inspect --json``, see ``tests/wandb_reader.py``), never through trackkit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import trackkit
from trackkit.testing import ConformanceSuite

pytest.importorskip("wandb")

from wandb_reader import FAST, WANDB_VARIABLES, WandbReader


@pytest.fixture(autouse=True)
def _wandb_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in WANDB_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


class TestWandbOffline(ConformanceSuite):
    @pytest.fixture
    def tracker(self, tmp_path: Path) -> Iterator[trackkit.Tracker]:
        tracker = trackkit.get_tracker("wandb", mode="offline", dir=tmp_path / "w", settings=FAST)
        yield tracker
        tracker.close()

    @pytest.fixture
    def reader(self, tmp_path: Path) -> WandbReader:
        return WandbReader(tmp_path / "w")
