"""Logging on W&B offline: trackkit against W&B's own ``run.log``, side by side in one process.

Run:  python benchmarks/bench_wandb.py [--steps N] [--rounds K] [--shapes one,ten] [--sides ...]

Two shapes of training loop, each logging ``--steps`` steps on a fresh W&B offline run:

- **one key** a step: trackkit's ``run.log_metric("loss", v)`` against ``run.log({"loss": v})``;
- **ten keys** a step: trackkit's ``run.log_metrics({10 keys})`` against ``run.log({10 keys})``.

Each side is timed from its first log call until its run has ended and everything is written:
native until ``run.finish()`` returned, trackkit until ``run.end()`` returned (it returns once
the backend finished the W&B run, so every point is in W&B's transaction log). trackkit runs
twice: on its fast row path (the default) and with every row through ``run.log``
(``TRACKKIT_WANDB_FAST_ROWS=0``), see docs/wandb.md, "Cost". Rounds alternate the order
(native first, then native last), as ``bench_logging.py`` does; the table shows medians, the
ratio of the medians and every round's ratio, and the CPU time this process and wandb-core
spent (steadier than the wall clock on a shared machine). After each trackkit round, W&B's own
reader (``wandb leet inspect``) checks every point is there at its step, that each step is one
history row at W&B's own step, and that no row carries a step or time field of its own.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_logging import per_call  # this folder is on sys.path when run as a script

FAST: dict[str, Any] = {
    "x_disable_stats": True,
    "x_disable_meta": True,
    "x_disable_machine_info": True,
    "x_save_requirements": False,
    "console": "off",
    "save_code": False,
}
SHAPES = {"one": ["loss"], "ten": [f"metric_{i}" for i in range(10)]}
SIDES = ("native", "trackkit", "trackkit via run.log")
GROUP = 100  # log calls timed together (bench_logging.per_call)


@dataclass
class Sample:
    seconds: float  # first log call until the run ended and was written
    per_call: float  # median seconds per log call in the training loop
    cpu: float  # CPU seconds of this process and of wandb-core over the same span


def children_cpu() -> float:
    """CPU seconds used so far by this process's children (wandb-core, MLflow's worker); 0
    without psutil."""
    try:
        import psutil
    except ImportError:
        return 0.0
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _timed(log: Callable[[int], None], end: Callable[[], None], steps: int) -> Sample:
    gc.collect()  # each side starts from a collected heap
    cpu = time.process_time() + children_cpu()
    start = time.perf_counter()
    cost = per_call(log, steps, GROUP)
    end()
    seconds = time.perf_counter() - start
    return Sample(seconds, cost, time.process_time() + children_cpu() - cpu)


def history(log: Path) -> list[dict[str, Any]]:
    """The history rows of one ``.wandb`` file, read with W&B's own reader."""
    from wandb.util import get_core_path

    command = [get_core_path(), "leet", "inspect", "--no-observability", "--json"]
    command += ["--run-file", str(log), str(log.parent.parent)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    records = (json.loads(line) for line in out.splitlines() if line.strip())
    return [r["history"]["item"] for r in records if r["type"] == "history"]


def native(tmp: str, keys: list[str], steps: int) -> Sample:
    import wandb

    run = wandb.init(project="bench", mode="offline", dir=tmp, reinit="create_new", settings=FAST)
    return _timed(lambda i: run.log({k: 1.0 / (i + 1) for k in keys}), run.finish, steps)


def trackkit_side(tracker: Any, tmp: str, keys: list[str], steps: int) -> Sample:
    run = tracker.start_run("bench")
    if len(keys) == 1:
        [key] = keys
        sample = _timed(lambda i: run.log_metric(key, 1.0 / (i + 1)), run.end, steps)
    else:
        sample = _timed(lambda i: run.log_metrics({k: 1.0 / (i + 1) for k in keys}), run.end, steps)
    [log] = Path(tmp, "wandb").glob(f"offline-run-*/run-{run.id}.wandb")
    rows = history(log)
    for key in keys:
        kept = [row.get(f"{key}:step", row["_step"]) for row in rows if key in row]
        assert kept == list(range(steps)), f"{key}: {len(kept)} of {steps} points in W&B"
    assert [row["_step"] for row in rows] == list(range(steps)), "not one row per step"
    own = {k for row in rows for k in row if k.endswith((":step", ":timestamp"))}
    assert not own, f"rows carry {sorted(own)}"
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="steps a run logs")
    parser.add_argument("--rounds", type=int, default=8, help="rounds (order alternates)")
    parser.add_argument("--shapes", default="one,ten", help="one, ten or both (one,ten)")
    parser.add_argument("--sides", default=",".join(SIDES), help="sides to run, native first")
    args = parser.parse_args()
    chosen = tuple(args.sides.split(","))
    if chosen[0] != SIDES[0] or not set(chosen) <= set(SIDES):
        parser.error(f"--sides: native first, then any of {SIDES[1:]}")
    if args.steps % GROUP:
        parser.error(f"--steps must be a multiple of {GROUP}")
    os.environ["WANDB_SILENT"] = "true"
    import wandb

    import trackkit

    loads = [os.getloadavg()[0]]
    results: dict[str, dict[str, list[Sample]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-wandb-") as tmp:
        tracker = trackkit.get_tracker("wandb", mode="offline", dir=tmp, settings=FAST)
        fast_rows = tracker.backend.fast_rows  # on unless TRACKKIT_WANDB_FAST_ROWS=0
        os.environ["TRACKKIT_WANDB_FAST_ROWS"] = "0"  # read when a tracker is created
        slow = trackkit.get_tracker("wandb", mode="offline", dir=tmp, settings=FAST)
        del os.environ["TRACKKIT_WANDB_FAST_ROWS"]
        assert not slow.backend.fast_rows
        sides: dict[str, Callable[[list[str], int], Sample]] = {
            SIDES[0]: lambda keys, steps: native(tmp, keys, steps),
            SIDES[1]: lambda keys, steps: trackkit_side(tracker, tmp, keys, steps),
            SIDES[2]: lambda keys, steps: trackkit_side(slow, tmp, keys, steps),
        }
        for side in chosen:  # warm up: W&B imports more on its first runs
            sides[side](SHAPES["ten"], GROUP)
        for shape in args.shapes.split(","):
            keys = SHAPES[shape]
            samples: dict[str, list[Sample]] = {side: [] for side in chosen}
            for round_ in range(args.rounds):
                order = chosen if round_ % 2 == 0 else chosen[::-1]
                for side in order:
                    samples[side].append(sides[side](keys, args.steps))
                loads.append(os.getloadavg()[0])
            results[shape] = samples
        tracker.close()
        slow.close()
    print(
        f"\nW&B offline, wandb {wandb.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, 1-minute load average {min(loads):.1f} to {max(loads):.1f}; "
        f"{args.steps:,} steps a run, {args.rounds} rounds; trackkit's fast row path "
        f"{'on' if fast_rows else 'off'}\n"
    )
    print(
        "| shape | side | points/s (median) | vs native | rounds (vs native) "
        "| µs per log call | CPU µs per point | vs native, by CPU |"
    )
    print("|---|---|---:|---:|---|---:|---:|---:|")
    for shape, samples in results.items():
        points = args.steps * len(SHAPES[shape])
        base = [points / s.seconds for s in samples[SIDES[0]]]
        base_cpu = statistics.median(s.cpu for s in samples[SIDES[0]])
        for side in chosen:
            rates = [points / s.seconds for s in samples[side]]
            ratio = statistics.median(rates) / statistics.median(base)
            rounds = ", ".join(f"{r / b:.2f}" for r, b in zip(rates, base, strict=True))
            call = statistics.median(s.per_call for s in samples[side]) * 1e6
            cpu = statistics.median(s.cpu for s in samples[side])
            label = "one key" if shape == "one" else "ten keys"
            print(
                f"| {label} | {side} | {statistics.median(rates):,.0f} | {ratio:.2f}x "
                f"| {rounds} | {call:,.1f} | {cpu / points * 1e6:,.0f} | {base_cpu / cpu:.2f}x |"
            )


if __name__ == "__main__":
    main()
