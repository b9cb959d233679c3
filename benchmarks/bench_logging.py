"""Logging cost: trackkit against MLflow's own calls, side by side in one process.

Run:  python benchmarks/bench_logging.py [--points N] [--rounds K] [--memory-points N] [--no-server]

It starts a local `mlflow server` (sqlite behind it) on 127.0.0.1 and also uses a sqlite
store directly, then prints one table of per-call costs and throughputs with ratios, plus
`import trackkit` time and peak memory growth while logging a million points. Every
end-to-end number counts a point only once MLflow's client can read it back.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
        f"sqlite:///{workdir / 'server.db'}", "--artifacts-destination", str(workdir / "art"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = open(workdir / "server.log", "ab")  # noqa: SIM115 - the child keeps its own copy
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=log, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    raise SystemExit("mlflow server did not start")


def per_call(fn: Callable[[int], None], calls: int, group: int = 1) -> float:
    """Median seconds per call, timing groups of ``group`` calls."""
    times = []
    for start in range(0, calls, group):
        t = time.perf_counter()
        for i in range(start, start + group):
            fn(i)
        times.append((time.perf_counter() - t) / group)
    return statistics.median(times)


def history_len(client, run_id: str, key: str) -> int:  # type: ignore[no-untyped-def]
    return len(client.get_metric_history(run_id, key))


def native_sync(uri: str, calls: int) -> float:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench-native")
    with mlflow.start_run():
        return per_call(lambda i: mlflow.log_metric("m", float(i), step=i), calls)


def native_async(uri: str, calls: int) -> float:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench-native")
    with mlflow.start_run():
        cost = per_call(
            lambda i: mlflow.log_metric("m", float(i), step=i, synchronous=False), calls
        )
        mlflow.flush_async_logging()
    return cost


def native_batch(uri: str, points: int) -> float:
    """Points per second through MlflowClient.log_batch, 1000 a call, until all are readable."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bench-native")
    run_id = client.create_run(experiment.experiment_id).info.run_id
    now = int(time.time() * 1000)
    gc.collect()  # each side starts from a collected heap (as timeit would)
    start = time.perf_counter()
    for first in range(0, points, 1000):
        batch = [Metric("m", float(i), now + i, i) for i in range(first, min(points, first + 1000))]
        client.log_batch(run_id, metrics=batch)
    elapsed = time.perf_counter() - start
    assert history_len(client, run_id, "m") == points
    return points / elapsed


def trackkit_hot_path(uri: str, calls: int, workdir: Path) -> float:
    import trackkit

    tracker = trackkit.get_tracker(
        "mlflow", tracking_uri=uri, journal_dir=workdir / "tk-hot", end_timeout=3600
    )
    with tracker.start_run(experiment="bench-trackkit") as run:
        cost = per_call(lambda i: run.log_metric("m", float(i)), calls, group=100)
    tracker.close()
    return cost


def trackkit_end_to_end(uri: str, points: int, workdir: Path) -> float:
    from mlflow.tracking import MlflowClient

    import trackkit

    tracker = trackkit.get_tracker("mlflow", tracking_uri=uri, journal_dir=workdir / "tk-e2e")
    run = tracker.start_run(experiment="bench-trackkit")
    gc.collect()
    start = time.perf_counter()
    for i in range(points):
        run.log_metric("m", float(i))
    assert run.flush(timeout=600)
    elapsed = time.perf_counter() - start
    run.end()
    tracker.close()
    assert history_len(MlflowClient(tracking_uri=uri), run.id, "m") == points
    return points / elapsed


IMPORT_PROBE = textwrap.dedent(
    """
    import sys, time
    t = time.perf_counter()
    import trackkit
    elapsed = time.perf_counter() - t
    sdks = [m for m in ("mlflow", "wandb", "neptune") if m in sys.modules]
    print(elapsed, ",".join(sdks))
    """
)

MEMORY_PROBE = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import mlflow, trackkit
    points, uri, journal = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    tracker = trackkit.get_tracker("mlflow", tracking_uri=uri, journal_dir=journal,
                                   end_timeout=3600)
    run = tracker.start_run(experiment="bench-memory")
    for i in range(1000):
        run.log_metric("warmup", float(i))
    run.flush()
    baseline, peak, done = rss(), [0], []

    def sample():
        while not done:
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    for i in range(points):
        run.log_metric("m", float(i))
    logged = time.perf_counter() - start
    run.end()
    total = time.perf_counter() - start
    done.append(True)
    sampler.join()
    count = len(mlflow.MlflowClient(tracking_uri=uri).get_metric_history(run.id, "m"))
    print(json.dumps({"growth_mb": (peak[0] - baseline) / 2**20, "log_s": logged,
                      "total_s": total, "readable": count}))
    """
)


def import_time() -> tuple[float, str]:
    best, sdks = float("inf"), ""
    for _ in range(7):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True
        ).stdout.split()
        best = min(best, float(out[0]))
        sdks = out[1] if len(out) > 1 else ""
    return best, sdks


def memory(points: int, uri: str, workdir: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(points), uri, str(workdir / "tk-mem")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=50_000, help="end-to-end points")
    parser.add_argument("--memory-points", type=int, default=1_000_000)
    parser.add_argument("--hot-calls", type=int, default=200_000)
    parser.add_argument(
        "--rounds", type=int, default=8, help="end-to-end rounds (order alternates)"
    )
    parser.add_argument("--no-server", action="store_true", help="skip the mlflow server rows")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="trackkit-bench-"))
    stores = {"sqlite": f"sqlite:///{workdir / 'bench.db'}"}
    server = None
    if not args.no_server:
        server, stores["server"] = start_server(workdir)
    rows: list[tuple[str, str, float, str, str]] = []
    try:
        for store, uri in stores.items():
            calls = 300 if store == "sqlite" else 100
            sync_cost = native_sync(uri, calls)
            async_cost = native_async(uri, calls)
            # end to end: native and trackkit take turns going first (ABBA...), each on a fresh
            # run, so neither always meets the larger store or the warmer cache; medians compared
            batch_rates, e2e_rates = [], []
            for round_ in range(args.rounds):
                if round_ % 2 == 0:
                    batch_rates.append(native_batch(uri, args.points))
                    e2e_rates.append(trackkit_end_to_end(uri, args.points, workdir))
                else:
                    e2e_rates.append(trackkit_end_to_end(uri, args.points, workdir))
                    batch_rates.append(native_batch(uri, args.points))
            batch_rate, e2e = statistics.median(batch_rates), statistics.median(e2e_rates)
            hot = trackkit_hot_path(uri, args.hot_calls, workdir)
            rows += [
                (store, "mlflow.log_metric (synchronous), per call", sync_cost * 1e6, "us", ""),
                (store, "mlflow.log_metric(synchronous=False), per call", async_cost * 1e6, "us", ""),
                (store, "trackkit run.log_metric, median per call", hot * 1e6, "us",
                 f"{sync_cost / hot:,.0f}x faster than sync, {async_cost / hot:,.0f}x than async"),
                (store, f"MlflowClient.log_batch (1000/call), end to end, median of {args.rounds}", batch_rate, "points/s", ""),
                (store, f"trackkit log + flush, end to end, median of {args.rounds}", e2e, "points/s",
                 f"{e2e / batch_rate:.2f}x native log_batch (rounds: "
                 + ", ".join(f"{t / n:.2f}x" for t, n in zip(e2e_rates, batch_rates, strict=True)) + ")"),
            ]  # fmt: skip
        seconds, sdks = import_time()
        rows.append(("-", "import trackkit (best of 7)", seconds * 1000, "ms",
                     f"SDKs imported: {sdks or 'none'}"))  # fmt: skip
        mem = memory(args.memory_points, stores["sqlite"], workdir)
        rows.append(("sqlite", f"peak RSS growth (sampled), {args.memory_points:,} points", mem["growth_mb"],
                     "MB", f"log loop {mem['log_s']:.1f} s, all readable after "
                     f"{mem['total_s']:.1f} s ({mem['readable']:,.0f} points)"))  # fmt: skip
    finally:
        if server is not None:
            os.killpg(server.pid, 15)
    print(f"\n{'store':<7} {'measure':<64} {'value':>12} {'unit':<9} ratio")
    for store, what, value, unit, ratio in rows:
        print(f"{store:<7} {what:<64} {value:>12,.2f} {unit:<9} {ratio}")


if __name__ == "__main__":
    main()
