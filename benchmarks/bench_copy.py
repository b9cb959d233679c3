"""Copy speed: `trackkit copy` into MLflow sqlite against MLflow's own `log_batch`, side by side.

Run:  python benchmarks/bench_copy.py [--runs N] [--points P] [--rounds K] [--neptune]

A source MLflow sqlite store gets N runs of P points each (two metrics), written with
`MlflowClient.log_batch`. Each round then, in one process and on fresh sqlite stores:
- native: `MlflowClient.log_batch` writes the same runs and points (1000 metrics a call,
  MLflow's limit), with `create_run` and `set_terminated` per run;
- copy: `trackkit.copy_runs` copies the source store into another (reading every point back
  with `get_metric_history`, writing them through the destination tracker's batches).
It prints each one's best time over the rounds, points/s, and the ratio copy/native in speed
(the goal: at least 0.8). With --neptune it also times `trackkit copy` of the same points
written as Neptune offline runs (the command's older form).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

T0 = 1_790_000_000_000


def points_of(runs: int, points: int) -> list[list[tuple[str, float, int, int]]]:
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


def write_native(
    uri: str, experiment: str, data: list[list[tuple[str, float, int, int]]]
) -> tuple[float, float]:
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


def copy_once(source_uri: str, target_uri: str, journals: Path) -> tuple[float, float, int]:
    """Seconds (wall clock, CPU) for trackkit.copy_runs from one store to another, and the
    points copied."""
    import trackkit

    source = trackkit.get_tracker("mlflow", tracking_uri=source_uri, journal_dir=journals)
    target = trackkit.get_tracker(
        "mlflow", tracking_uri=target_uri, journal_dir=journals, strict=True
    )
    started, cpu = time.perf_counter(), time.process_time()
    report = trackkit.copy_runs(source, target, experiments=["bench"])
    target.close()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    source.close()
    if report.failed:
        raise SystemExit(f"the copy failed: {[r.error for r in report if r.error]}")
    return elapsed, cpu, sum(r.metric_points for r in report)


def write_neptune(root: Path, data: list[list[tuple[str, float, int, int]]]) -> Path:
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


def copy_neptune(data_dir: Path, target_uri: str, journals: Path) -> tuple[float, float]:
    import trackkit

    target = trackkit.get_tracker(
        "mlflow", tracking_uri=target_uri, journal_dir=journals, strict=True
    )
    started, cpu = time.perf_counter(), time.process_time()
    report = trackkit.copy_runs(data_dir, target)
    target.close()
    if report.failed:
        raise SystemExit(f"the copy failed: {[r.error for r in report if r.error]}")
    return time.perf_counter() - started, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--points", type=int, default=4000, help="points per run")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many")
    parser.add_argument("--neptune", action="store_true", help="also Neptune offline -> MLflow")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "false")
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    data = points_of(args.runs, args.points)
    total = sum(len(p) for p in data)
    results: dict[str, list[tuple[float, float]]] = {"native log_batch": [], "trackkit copy": []}
    with tempfile.TemporaryDirectory(prefix="trackkit-bench-copy-") as tmp:
        root = Path(tmp)
        source_uri = f"sqlite:///{root / 'source.db'}"
        write_native(source_uri, "bench", data)
        for k in range(args.rounds):
            # alternate which goes first, so neither always gets the warmer machine
            order = ("native", "copy") if k % 2 == 0 else ("copy", "native")
            for which in order:
                uri = f"sqlite:///{root / f'{which}-{k}.db'}"
                if which == "native":
                    results["native log_batch"].append(write_native(uri, "bench", data))
                else:
                    seconds, cpu, copied = copy_once(source_uri, uri, root / "journals")
                    if copied != total:
                        raise SystemExit(f"copied {copied} points, expected {total}")
                    results["trackkit copy"].append((seconds, cpu))
        if args.neptune:
            data_dir = write_neptune(root / "neptune", data)
            results["trackkit copy, Neptune offline source"] = [
                copy_neptune(data_dir, f"sqlite:///{root / f'neptune-{k}.db'}", root / "j")
                for k in range(args.rounds)
            ]
    # the best of the rounds: the least disturbed by other work on the machine
    wall = {name: min(t[0] for t in times) for name, times in results.items()}
    cpu = {name: min(t[1] for t in times) for name, times in results.items()}
    native_wall, native_cpu = wall["native log_batch"], cpu["native log_batch"]
    print(f"{args.runs} runs x {args.points} points = {total} points, MLflow sqlite, best of "
          f"{args.rounds} rounds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    print(
        f"{'':40} {'seconds':>8} {'points/s':>9} {'vs native':>10} {'CPU s':>7} {'vs native':>10}"
    )
    for name in results:
        print(
            f"{name:40} {wall[name]:8.2f} {total / wall[name]:9.0f} "
            f"{native_wall / wall[name]:9.2f}x {cpu[name]:7.2f} {native_cpu / cpu[name]:9.2f}x"
        )
    ratio = native_wall / wall["trackkit copy"]
    print(f"copy / native log_batch speed ratio: {ratio:.2f} (goal >= 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
