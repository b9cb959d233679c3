"""History rows handed to wandb below ``run.log``: the W&B lane's fast row path.

``run.log`` hands each row to wandb's asyncio thread and waits for it, and records client
telemetry on the way; that synchronous hand-off is most of the lane's cost. Here a batch's
rows are built as the same ``PartialHistoryRequest`` records ``run.log`` builds (same items,
same value encoding, same row number, written at once), queued without waiting, and the
batch ends with wandb's own acknowledgement: a ``history_step`` request, which wandb-core
answers only after it handled every record sent before it, with the row number it takes next.

This uses wandb's private names, so it is used only with the wandb versions it was tested
with (``TESTED``), when every name it needs exists, and unless ``$TRACKKIT_WANDB_FAST_ROWS``
is off; otherwise the backend uses ``run.log``. See docs/wandb.md, "Cost".
"""

from __future__ import annotations

import bisect
import importlib
from collections.abc import Sequence
from typing import Any

from trackkit import env

#: wandb minor versions this path was tested with (their records and task order)
TESTED = ("0.31",)
#: set to 0 (or false, no, off) to log every row through ``run.log``
SWITCH = "TRACKKIT_WANDB_FAST_ROWS"
#: seconds to wait for wandb-core's acknowledgement of a batch
ACK_TIMEOUT = 600.0


class NotSent(Exception):
    """The fast path failed and no row of the batch reached wandb; ``run.log`` can send all."""


class PartlySent(Exception):
    """The fast path failed after wandb-core took the batch's first ``sent`` rows."""

    def __init__(self, sent: int, cause: BaseException) -> None:
        super().__init__(f"{sent} rows sent before: {cause!r}")
        self.sent = sent


class Sdk:
    """wandb's private parts the fast path uses, looked up once (``load``)."""

    def __init__(self, wandb: Any) -> None:
        self.request = importlib.import_module("wandb.proto.wandb_internal_pb2")
        self.request_type = self.request.PartialHistoryRequest
        values = importlib.import_module("wandb.sdk.interface.history_value")
        self.set_value = values.set_history_value
        shared = importlib.import_module("wandb.sdk.interface.interface_shared")
        for name in ("_publish", "_make_request", "deliver_history_step"):
            if not callable(getattr(shared.InterfaceShared, name, None)):
                raise AttributeError(f"InterfaceShared.{name}")
        self.patched = wandb.patched  # libraries wandb patched (tensorboard changes steps)
        if "tensorboard" not in self.patched:
            raise AttributeError("wandb.patched['tensorboard']")

    @staticmethod
    def load(wandb: Any) -> Sdk | None:
        """The parts, or None when the fast path is off, untested here, or something is missing."""
        if not env.switch(SWITCH, True):
            return None
        version = str(getattr(wandb, "__version__", ""))
        if ".".join(version.split(".")[:2]) not in TESTED:
            return None
        try:
            return Sdk(wandb)
        except Exception:  # another wandb layout: run.log it is
            return None


class RowSender:
    """Sends one run's history rows as ``run.log(row, step=n, commit=True)`` would (or
    ``run.log(row)``, when W&B numbers the rows itself)."""

    def __init__(self, sdk: Sdk, run: Any) -> None:
        self._sdk = sdk
        self._run = run
        self._interface = run._interface
        if self._interface is None:
            raise AttributeError("run._interface")
        encoding = str(run._settings.x_history_value_encoding).split(",")
        self._json, self._typed = "json" in encoding, "typed" in encoding
        int(run._local_step)
        self._rows: int | None = None  # wandb-core's next row number, as it last told

    def _ack(self) -> int:
        """Wait until wandb-core handled everything sent so far; its next row number."""
        handle = self._interface.deliver_history_step()
        return int(handle.wait_or(timeout=ACK_TIMEOUT).step)

    def _record(self, row: dict[str, Any], step: int | None) -> Any:
        history = self._sdk.request_type()
        set_value = self._sdk.set_value
        for key, value in row.items():
            item = history.item.add()
            item.key = key
            set_value(item, value, json_form=self._json, typed_form=self._typed)
        if step is not None:  # a numbered row is written at once, as with commit=True
            history.step.num = step
            history.action.flush = True
        return self._interface._make_request(partial_history=history)

    def send(self, rows: Sequence[dict[str, Any]], numbers: Sequence[int] | None) -> None:
        """Send ``rows`` (at the rising row numbers ``numbers``, or numbered by wandb when
        None) and wait until wandb has them.

        Raises:
            NotSent: nothing of the batch reached wandb.
            PartlySent: wandb-core took the first ``sent`` rows, and no more.
            Exception: the fast path failed and what wandb took is unknown (wandb's
                connection broke, as ``run.log`` would raise).
        """
        if not rows:
            return
        try:
            if self._sdk.patched["tensorboard"]:  # run.log would leave the step out
                raise RuntimeError("tensorboard is patched")
            if numbers is None:
                records = [self._record(row, None) for row in rows]
                start = self._ack() if self._rows is None else self._rows
            else:
                records = [self._record(r, n) for r, n in zip(rows, numbers, strict=True)]
                start = 0
        except Exception as e:
            raise NotSent(repr(e)) from e
        published = 0
        try:
            publish = self._interface._publish
            for record in records[:-1]:
                publish(record, nowait=True)
                published += 1
            publish(records[-1])
            published += 1
            self._rows = self._ack()
        except Exception as e:
            self._rows = None
            try:
                held = self._ack()  # what wandb-core holds tells what it took
            except Exception:
                if published == 0:
                    raise NotSent(repr(e)) from e
                raise e from None
            # numbered rows: those below wandb-core's next row number
            sent = held - start if numbers is None else bisect.bisect_left(numbers, held)
            if not 0 <= sent <= len(rows):
                raise e from None
            if sent == 0:
                raise NotSent(repr(e)) from e
            self._advance(numbers, sent)
            if sent < len(rows):
                raise PartlySent(sent, e) from e
            self._rows = held
            return
        self._advance(numbers, len(rows))

    def _advance(self, numbers: Sequence[int] | None, count: int) -> None:
        """Keep the run's own step counter where ``run.log`` would have left it."""
        if numbers is None:
            self._run._local_step += count
        else:
            self._run._local_step = max(self._run._local_step, numbers[count - 1] + 1)
