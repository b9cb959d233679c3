"""Several backends at once: the cost of a second backend, side by side in one process.

Run:  python benchmarks/bench_multi.py [--calls N] [--points N] [--rounds K]

Backends: MLflow on a sqlite store and W&B offline (the real SDKs). It prints:

- the hot path: median nanoseconds per ``run.log_metric`` with MLflow alone, W&B alone, and
  both at once (timed in groups of 100 calls; the writers run meanwhile, as in training);
- end-to-end throughput: points per second from the first ``log_metric`` until a backend
  acknowledged the last point, for each backend alone and for each backend in the pair (its
  own lane, timed by a thread that waits on that lane alone), and the ratio pair / alone.

Every end-to-end number is checked through the backend's own reader afterwards (MLflow's
client; W&B's ``leet inspect``) to hold every point exactly once. The best of ``--rounds``
rounds is kept for each number (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_logging import per_call  # this folder is on sys.path when run as a script
from bench_wandb import FAST

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the W&B reader the tests use


def tracker(which: str, workdir: Path, tag: str) -> Any:
    import trackkit

    options: dict[str, Any] = {
        "mlflow": {"tracking_uri": f"sqlite:///{workdir / f'{tag}.db'}"},
        "wandb": {"mode": "offline", "dir": workdir / f"w-{tag}", "settings": FAST},
    }
    names = which.split(",")
    own = {"journal_dir": workdir / f"tk-{tag}", "end_timeout": 3600}
    if len(names) == 1:
        return trackkit.get_tracker(names[0], **options[names[0]], **own)
    return trackkit.get_tracker(names, **{n: options[n] for n in names}, **own)


def hot_path(which: str, calls: int, workdir: Path, tag: str) -> float:
    t = tracker(which, workdir, tag)
    with t.start_run(experiment="bench-hot") as run:
        for i in range(1000):  # the key is known: the steady state of a training loop
            run.log_metric("warm", float(i))
        cost = per_call(lambda i: run.log_metric("m", float(i)), calls, group=100)
    t.close()
    return cost


def end_to_end(which: str, points: int, workdir: Path, tag: str) -> tuple[dict[str, float], float]:
    """Points per second until each backend acknowledged all ``points`` (each lane timed on
    its own, by a thread that waits for that lane only), and this process's CPU seconds
    meanwhile (its threads: logging, journaling, sending)."""
    t = tracker(which, workdir, tag)
    run = t.start_run(experiment="bench-e2e")
    lanes = getattr(run, "runs", {which: run})
    done: dict[str, float] = {}
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(points):
        run.log_metric("m", float(i))

    def wait(name: str, lane: Any) -> None:
        assert lane.flush(timeout=3600), f"{name} did not take every point"
        done[name] = time.perf_counter() - start

    waiters = [threading.Thread(target=wait, args=item) for item in lanes.items()]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join()
    cpu = time.process_time() - cpu
    ids = {name: lane.outbox.run_id for name, lane in lanes.items()}
    run.end()
    t.close()
    check(ids, points, workdir, tag)
    return {name: points / seconds for name, seconds in done.items()}, cpu


def check(ids: dict[str, str], points: int, workdir: Path, tag: str) -> None:
    """Every point exactly once, through each backend's own reader."""
    if "mlflow" in ids:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{workdir / f'{tag}.db'}")
        steps = sorted(m.step for m in client.get_metric_history(ids["mlflow"], "m"))
        assert steps == list(range(points)), f"MLflow holds {len(steps)} points"
    if "wandb" in ids:
        from wandb_reader import WandbReader

        found = WandbReader(workdir / f"w-{tag}").metric_points(ids["wandb"], "m")
        assert sorted(s for s, _ in found) == list(range(points)), f"W&B holds {len(found)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="hot-path calls per case")
    parser.add_argument("--points", type=int, default=50_000, help="end-to-end points per case")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best is kept")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval(seconds) first (CPython's default: 0.005): how long a "
        "thread waiting for the interpreter lock may wait on a busy one",
    )
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    os.environ.setdefault("WANDB_SILENT", "true")
    for variable in ("TRACKKIT_BACKEND", "TRACKKIT_OFFLINE", "MLFLOW_TRACKING_URI", "WANDB_MODE"):
        os.environ.pop(variable, None)

    cases = ("mlflow", "wandb", "mlflow,wandb")
    hot: dict[str, float] = {}
    e2e: dict[str, dict[str, float]] = {}
    cpus: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="trackkit-bench-multi-") as tmp:
        workdir = Path(tmp)
        for round_ in range(args.rounds):
            for case in cases:
                tag = f"{case.replace(',', '+')}-{round_}"
                cost = hot_path(case, args.calls, workdir, f"hot-{tag}")
                hot[case] = min(hot.get(case, cost), cost)
                rates, cpu = end_to_end(case, args.points, workdir, f"e2e-{tag}")
                cpus[case] = min(cpus.get(case, cpu), cpu)
                for name, rate in rates.items():
                    best = e2e.setdefault(case, {})
                    best[name] = max(best.get(name, rate), rate)
    pair = e2e["mlflow,wandb"]
    ratios = {name: pair[name] / e2e[name][name] for name in ("mlflow", "wandb")}
    if args.json:
        print(
            json.dumps(
                {"hot_ns": {k: v * 1e9 for k, v in hot.items()}, "e2e": e2e, "ratios": ratios}
            )
        )
        return
    print(
        f"{args.calls:,} hot-path calls and {args.points:,} end-to-end points a case; best of {args.rounds}"
    )
    print()
    print(f"{'hot path: median per run.log_metric':<48}{'ns':>10}")
    for case in cases:
        print(f"  {case:<46}{hot[case] * 1e9:>10,.0f}")
    print(f"  {'second backend adds':<46}{(hot['mlflow,wandb'] - hot['mlflow']) * 1e9:>10,.0f}")
    print()
    print(
        f"{'end to end: points/s until acknowledged':<48}{'alone':>10}{'in pair':>10}{'ratio':>8}"
    )
    for name in ("mlflow", "wandb"):
        print(f"  {name:<46}{e2e[name][name]:>10,.0f}{pair[name]:>10,.0f}{ratios[name]:>8.2f}")
    print()
    print(f"{'CPU seconds of this process, end to end':<48}{'s':>10}")
    for case in cases:
        print(f"  {case:<46}{cpus[case]:>10.1f}")


if __name__ == "__main__":
    main()
