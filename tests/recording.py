"""An SDK-free backend for tests of the core (tests/test_core.py, tests/test_normalize_core.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from trackkit.backend import Backend, Capabilities, Limits
from trackkit.entities import Metric, ParamValue, RunHandle


class RecordingBackend(Backend):
    """A test double written for trackkit's own tests: it records the batches the core hands it.

    It is an SDK-free backend that needs no tracking service, so the core's contract (what
    reaches a backend after normalization, batch shapes, retries of unsent data, statuses) can
    be checked exactly in an environment without any SDK. It is not a mock of MLflow, W&B or
    Neptune: behaviour against the real SDKs is checked by the conformance suites.

    ``fail_next`` makes the next batch raise (a send failure), ``delay`` makes each batch take
    that long, ``most_in_flight`` counts overlapping batches. Subclasses may declare other
    ``capabilities`` and ``limits``.
    """

    name = "recording"
    capabilities = Capabilities(artifacts=False, models=False)
    limits = Limits(batch_metrics=3, batch_params_tags=2, batch_total=4)

    def __init__(self) -> None:
        self.batches: list[
            tuple[list[tuple[str, ParamValue]], list[Metric], list[tuple[str, str]]]
        ] = []
        self.ended: dict[str, str] = {}
        self.fail_next = False
        self.delay = 0.0  # seconds each batch takes: a slow service
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def start_run(self, experiment: str | None, name: str | None, run_id: str | None) -> RunHandle:
        return RunHandle(
            id=f"r{len(self.ended) + len(self.batches)}",
            name=name or "n",
            experiment=experiment or "?",
        )

    def end_run(self, run_id: str, status: str) -> None:
        self.ended[run_id] = status

    def log_batch(
        self,
        run_id: str,
        params: Sequence[tuple[str, ParamValue]],
        metrics: Sequence[Metric],
        tags: Sequence[tuple[str, str]],
    ) -> None:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            if self.fail_next:
                self.fail_next = False
                raise ConnectionError("service unavailable")
            self.batches.append((list(params), list(metrics), list(tags)))
        finally:
            with self._lock:
                self.in_flight -= 1
