"""Copy speed: `trackkit copy` into MLflow sqlite against MLflow's own `log_batch`, side by side.

Run:  python benchmarks/bench_copy.py [--runs N] [--points P] [--rounds K] [--sources ...]

The same N runs of P points each (two metrics, steps 0.., one timestamp per point) are stored
once in each source: an MLflow sqlite store (written with `MlflowClient.log_batch`) and Neptune
offline files (written through trackkit's neptune backend, mode=offline). Each round then, in
this one process and each on a fresh MLflow sqlite store, times one after another (the order
turns round by round, so none always gets the warmer machine):

- native: `MlflowClient.log_batch` writing the same runs and points (1000 metrics a call,
  MLflow's limit), with `create_run` and `set_terminated` per run; the store and the
  experiment are created before the clock starts;
- each copy: the whole `trackkit.copy_runs(source, destination)` call and the destination
  tracker's `close()`: listing the source's runs, reading every point back, creating the runs
  and writing everything (the destination store is created before the clock starts, the
  experiment inside it by the copy). Sources: `mlflow` (a tracker on the sqlite store),
  `neptune` (a tracker on the Neptune offline data, `--from neptune -o mode=offline`),
  `neptune-files` (the data directory read from disk, `trackkit copy PATH`).

After each copy, MLflow's own client checks that every run holds every point. A round's ratio
is native seconds / copy seconds (1.0: as fast as native `log_batch`; the goal is >= 0.8); the
table gives the median, lowest and highest ratio over the rounds, the median wall-clock and
CPU seconds, and the median ratio of CPU seconds (this process's, all threads). The machine
is shared: the load average is printed beside the numbers, and a round whose two halves met
different loads gives an outlying ratio, which the median of several rounds sets aside.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

T0 = 1_790_000_000_000
SOURCES = ("mlflow", "neptune", "neptune-files")
Data = list[list[tuple[str, float, int, int]]]


def points_of(runs: int, points: int) -> Data:
    """Per run: (key, value, step, timestamp) for two metrics, ``points`` points in all."""
    half = points // 2
    return [
        [
            (key, (i + 1) / (r + 1) * factor, i, T0 + i)
            for key, factor in (("loss", 1.0), ("rmse", 2.0))
            for i in range(half)
        ]
        for r in range(runs)
    ]


def write_native(uri: str, experiment: str, data: Data) -> tuple[float, float]:
    """Seconds (wall clock, then CPU) to write ``data`` with MlflowClient.log_batch."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(experiment)
    started, cpu = time.perf_counter(), time.process_time()
    for r, points in enumerate(data):
        run = client.create_run(experiment_id, run_name=f"run-{r}")
        metrics = [Metric(k, v, ts, step) for k, v, step, ts in points]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run.info.run_id, metrics=metrics[i : i + 1000], synchronous=True)
        client.set_terminated(run.info.run_id, "FINISHED")
    return time.perf_counter() - started, time.process_time() - cpu


def write_neptune(root: Path, data: Data) -> Path:
    """The runs as Neptune offline data (trackkit's neptune backend); its directory."""
    import trackkit

    tracker = trackkit.get_tracker(
        "neptune", mode="offline", data_dir=root / ".neptune", journal_dir=root / "j"
    )
    for r, points in enumerate(data):
        with tracker.start_run(experiment="bench", name=f"run-{r}") as run:
            for key, value, step, ts in points:
                run.log_metric(key, value, step=step, timestamp=ts)
    tracker.close()
    return root / ".neptune"


def copy_once(source: Any, target_uri: str, journals: Path) -> tuple[float, float]:
    """Seconds (wall clock, CPU) for ``trackkit.copy_runs`` from ``source`` (a tracker or a
    Neptune data directory) into a fresh sqlite store, the destination's close included."""
    import trackkit

    target = trackkit.get_tracker(
        "mlflow", tracking_uri=target_uri, journal_dir=journals, strict=True
    )
    started, cpu = time.perf_counter(), time.process_time()
    if isinstance(source, Path):
        report = trackkit.copy_runs(source, target)
    else:
        report = trackkit.copy_runs(source, target, experiments=["bench"])
    target.close()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if report.failed:
        raise SystemExit(f"the copy failed: {[r.error for r in report if r.error]}")
    return elapsed, cpu


def check_copy(uri: str, data: Data) -> None:
    """Every point of every run is in the store, read back by MLflow's own client."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bench")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    expected = sorted(
        sorted((k, step, v, ts) for k, v, step, ts in points)
        for points in data  # one list per run
    )
    found = sorted(
        sorted(
            (m.key, m.step, m.value, m.timestamp)
            for key in ("loss", "rmse")
            for m in client.get_metric_history(run.info.run_id, key)
        )
        for run in runs
    )
    if found != expected:
        raise SystemExit(f"the copy in {uri} does not hold the source's points")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--points", type=int, default=4000, help="points per run")
    parser.add_argument("--rounds", type=int, default=9, help="paired rounds")
    parser.add_argument(
        "--sources",
        default=",".join(SOURCES),
        help=f"comma-separated, of {', '.join(SOURCES)} (default: all)",
    )
    args = parser.parse_args(argv)
    sources = [s for s in args.sources.split(",") if s]
    if unknown := set(sources) - set(SOURCES):
        parser.error(f"unknown sources {sorted(unknown)}; known: {', '.join(SOURCES)}")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    import trackkit

    data = points_of(args.runs, args.points)
    total = sum(len(p) for p in data)
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in ("native", *sources)}
    loads = []
    with tempfile.TemporaryDirectory(prefix="trackkit-bench-copy-") as tmp:
        root = Path(tmp)
        source_uri = f"sqlite:///{root / 'source.db'}"
        write_native(source_uri, "bench", data)
        check_copy(source_uri, data)
        trackers = []
        given: dict[str, Any] = {}
        if "mlflow" in sources:
            given["mlflow"] = trackkit.get_tracker(
                "mlflow", tracking_uri=source_uri, journal_dir=root / "j"
            )
        if "neptune" in sources or "neptune-files" in sources:
            data_dir = write_neptune(root / "neptune", data)
            given["neptune-files"] = data_dir
            given["neptune"] = trackkit.get_tracker(
                "neptune", mode="offline", data_dir=data_dir, journal_dir=root / "j"
            )
        trackers = [t for t in given.values() if not isinstance(t, Path)]
        jobs: dict[str, Callable[[str], tuple[float, float]]] = {
            "native": lambda uri: write_native(uri, "bench", data),
            **{
                name: (lambda uri, s=given[name]: copy_once(s, uri, root / "journals"))
                for name in sources
            },
        }
        names = list(jobs)
        for k in range(args.rounds):
            loads.append(os.getloadavg()[0])
            order = names[k % len(names) :] + names[: k % len(names)]
            for name in order:
                uri = f"sqlite:///{root / f'{name}-{k}.db'}"
                if name != "native":  # the store is made before the clock starts, as native's
                    trackkit.get_tracker(
                        "mlflow", tracking_uri=uri, journal_dir=root / "journals"
                    ).close()
                times[name].append(jobs[name](uri))
                check_copy(uri, data)
        for tracker in trackers:
            tracker.close()

    native = times["native"]
    print(
        f"{args.runs} runs x {args.points} points = {total} points into MLflow sqlite, "
        f"{args.rounds} paired rounds; load average {min(loads):.1f} to {max(loads):.1f} on "
        f"{os.cpu_count()} CPUs"
    )
    print(
        "timed: native = create_run, log_batch (1000 points a call), set_terminated per run; "
        "copy = the whole trackkit.copy_runs (listing, reading every point, writing) and the "
        "destination's close()"
    )
    print(
        f"{'':34} {'median s':>9} {'points/s':>9} {'speed ratio: median':>20} {'lowest':>7} "
        f"{'highest':>8} {'CPU s':>6} {'CPU ratio':>10}"
    )
    for name in ("native", *sources):
        runs = times[name]
        ratios = [n[0] / c[0] for n, c in zip(native, runs, strict=True)]
        cpu_ratios = [n[1] / c[1] for n, c in zip(native, runs, strict=True)]
        wall = statistics.median(t[0] for t in runs)
        cpu = statistics.median(t[1] for t in runs)
        label = "native log_batch" if name == "native" else f"trackkit copy from {name}"
        print(
            f"{label:34} {wall:9.2f} {total / wall:9.0f} {statistics.median(ratios):19.2f}x "
            f"{min(ratios):6.2f}x {max(ratios):7.2f}x {cpu:6.2f} "
            f"{statistics.median(cpu_ratios):9.2f}x"
        )
    for name in sources:
        ratios = [n[0] / c[0] for n, c in zip(native, times[name], strict=True)]
        print(f"  {name} speed ratio per round: {' '.join(f'{r:.2f}' for r in ratios)}")
    print("ratio: native seconds / copy seconds in the same round (goal: at least 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
