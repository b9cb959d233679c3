"""Logging cost on W&B offline: trackkit's ``run.log_metric`` against W&B's own ``run.log``.

Run:  python benchmarks/bench_wandb.py [--points N]

Everything runs in one process in a temporary directory, W&B in offline mode. It prints:

- the per-call cost in the training loop: ``wandb``'s ``run.log({...})`` (plain, and with the
  per-key x-axis trackkit uses) and trackkit's ``run.log_metric`` (which only queues);
- end-to-end throughput: points logged until the run's end returned, i.e. until every point
  reached W&B's transaction log (counted back with ``wandb leet inspect``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
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


def history_rows(log: Path, key: str) -> int:
    from wandb.util import get_core_path

    command = [get_core_path(), "leet", "inspect", "--no-observability", "--json"]
    command += ["--run-file", str(log), str(log.parent.parent)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows = (json.loads(line) for line in out.splitlines())
    return sum(1 for r in rows if r["type"] == "history" and key in r["history"]["item"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=5000)
    points = parser.parse_args().points
    os.environ["WANDB_SILENT"] = "true"
    import wandb

    import trackkit

    results: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-wandb-") as tmp:
        settings = wandb.Settings(**FAST)

        def native(x_axis: bool) -> None:
            run = wandb.init(
                project="bench", mode="offline", dir=tmp, reinit="create_new", settings=settings
            )
            if x_axis:
                run.define_metric("loss:step", hidden=True)
                run.define_metric("loss", step_metric="loss:step", step_sync=False)
                cost = per_call(
                    lambda i: run.log({"loss": 1.0 / (i + 1), "loss:step": i}), points, 100
                )
            else:
                cost = per_call(lambda i: run.log({"loss": 1.0 / (i + 1)}), points, 100)
            start = time.perf_counter()
            run.finish()
            label = "wandb run.log (per-key x-axis)" if x_axis else "wandb run.log"
            results.append((label, cost * 1e6, f"finish {time.perf_counter() - start:.2f} s"))

        native(False)
        native(True)

        tracker = trackkit.get_tracker("wandb", mode="offline", dir=tmp, settings=FAST)
        run = tracker.start_run("bench")
        start = time.perf_counter()
        cost = per_call(lambda i: run.log_metric("loss", 1.0 / (i + 1)), points, 100)
        run.end()
        total = time.perf_counter() - start
        [log] = Path(tmp, "wandb").glob(f"offline-run-*/run-{run.id}.wandb")
        kept = history_rows(log, "loss")
        assert kept == points, f"{kept} of {points} points reached W&B"
        results.append(("trackkit run.log_metric (queues)", cost * 1e6, ""))
        results.append(
            ("trackkit end to end", total / points * 1e6, f"{points / total:,.0f} points/s")
        )
        tracker.close()

    print(f"\n{points:,} points of one metric, W&B offline (wandb {wandb.__version__})\n")
    print(f"| {'call':<36} | {'µs per point':>12} | note |")
    print(f"|{'-' * 38}|{'-' * 14}|------|")
    for label, micros, note in results:
        print(f"| {label:<36} | {micros:>12,.1f} | {note} |")


if __name__ == "__main__":
    main()
