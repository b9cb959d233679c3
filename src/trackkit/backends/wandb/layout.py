"""Where a run's metric points go in W&B's history: rows at W&B's own step where they can.

W&B numbers history rows (``_step``) and keeps a row only when its number is above the last
one it has. A point sits in the row numbered by its own step whenever that number is still
free: then the row needs no field but the point's value, exactly what ``run.log`` of the
same values writes, and W&B's default Step axis shows the point at its step. A point whose
step cannot be a new row number (out of order, repeated, a second counter below the first,
a step past what W&B's reader gives back exactly) goes in a later row and carries its step
as ``<key>:step``, the key's own x-axis (defined when first needed; from then on every point
of that key carries it). A point in a row whose ``_timestamp`` is another point's carries
its own as ``<key>:timestamp``. Points of one key never share a row, and a key's points keep
their order. Reading back: the explicit field if present, else the row's. See docs/wandb.md,
"Metrics and steps".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trackkit.backends.wandb.keys import EXACT_STEP, STEP_SUFFIX, TIME_SUFFIX

if TYPE_CHECKING:
    from trackkit.entities import Metric


@dataclass
class Placed:
    """One batch laid out: its rows, their W&B row numbers, what to define and summarize."""

    rows: list[dict[str, Any]]
    numbers: list[int] | None  # None: W&B numbers the rows itself
    axes: list[str]  # keys whose x-axis ``<key>:step`` this batch defines
    clocks: list[str]  # keys whose ``<key>:timestamp`` this batch defines
    summary: dict[str, Any]  # summary entries that make it hold each key's latest point


@dataclass
class Layout:
    """One run's history layout, carried from batch to batch."""

    #: the lowest row number W&B still takes; None: W&B numbers rows itself (with its
    #: TensorBoard patching active, ``run.log`` leaves the number out), so every point
    #: carries its step
    next_row: int | None = 0
    #: per key, its latest point: step, value, and its number among the run's points
    latest: dict[str, tuple[int, float, int]] = field(default_factory=dict)
    axes: dict[str, str] = field(default_factory=dict)  # keys that carry ``<key>:step``
    clocks: dict[str, str] = field(default_factory=dict)  # keys given ``<key>:timestamp``
    _last_row: dict[str, int] = field(default_factory=dict)  # per key, the row of its last point
    _summary_steps: dict[str, int] = field(default_factory=dict)  # ``<key>:step`` the summary has
    _seq: int = 0

    def place(self, metrics: Sequence[Metric]) -> Placed:
        """Lay out a batch's points (in the order logged) in as few rows as the rules allow."""
        own = self.next_row is not None
        base = self.next_row if self.next_row is not None else 0
        top = base - 1  # the highest row number of this batch so far
        rows: dict[int, dict[str, Any]] = {}
        axes, clocks, last_row, latest = self.axes, self.clocks, self._last_row, self.latest
        new_axes: list[str] = []
        new_clocks: list[str] = []
        last: dict[str, int] = {}  # per key, the number of its last point in this batch
        seq = self._seq
        for key, value, step, timestamp in metrics:
            seconds = timestamp / 1000
            if own and base <= step < EXACT_STEP and step > last_row.get(key, -1):
                number = step  # its own step is still a free row number
                row = rows.get(number)
                if row is None:
                    row = rows[number] = {"_timestamp": seconds}
                    if number > top:
                        top = number
            else:
                # the batch's last row if this key is not in it (it is then above the key's
                # last row), else a new row after it
                at_top = rows.get(top)
                if at_top is None or key in at_top:
                    top += 1
                    at_top = rows[top] = {"_timestamp": seconds}
                row, number = at_top, top
                if key not in axes:
                    axes[key] = key + STEP_SUFFIX
                    new_axes.append(key)
            row[key] = value
            axis = axes.get(key)
            if axis is not None:
                row[axis] = step
            if row["_timestamp"] != seconds:
                clock = clocks.get(key)
                if clock is None:
                    clock = clocks[key] = key + TIME_SUFFIX
                    new_clocks.append(key)
                row[clock] = seconds
            last_row[key] = number
            seq += 1
            last[key] = seq
            known = latest.get(key)
            if known is None or step >= known[0]:
                latest[key] = (step, value, seq)
        self._seq = seq
        numbers = sorted(rows)
        if own:
            self.next_row = top + 1
        return Placed(
            rows=[rows[n] for n in numbers],
            numbers=numbers if own else None,
            axes=new_axes,
            clocks=new_clocks,
            summary=self._summary(last),
        )

    def _summary(self, last: dict[str, int]) -> dict[str, Any]:
        """What W&B's summary needs after a batch: it holds the value logged last and, for a
        key with its own x-axis, the step logged last; trackkit's latest point is the one at
        the highest step, and every key's step is in the summary (``keys.last_steps``)."""
        fix: dict[str, Any] = {}
        steps = self._summary_steps
        for key, number in last.items():
            step, value, best = self.latest[key]
            if best != number:
                fix[key] = value
            axis = self.axes.get(key)
            if axis is not None or steps.get(key) != step:
                fix[axis or key + STEP_SUFFIX] = step
                steps[key] = step
        return fix
