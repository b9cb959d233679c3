"""Several backends at once: the cost of a second backend, side by side in one process.

Run:  python benchmarks/bench_multi.py [--calls N] [--points N] [--rounds K]

Backends: MLflow on a sqlite store and W&B offline (the real SDKs). Cases: MLflow alone, W&B
alone, both; MLflow alone and both again with MLflow's batches written by its worker process
(``batch_process=True``, marked ``+worker``). It prints:

- the hot path: median nanoseconds per ``run.log_metric`` (timed in groups of 100 calls; the
  writers run meanwhile, as in training);
- end-to-end throughput: points per second from the first ``log_metric`` until a backend
  acknowledged the last point, for each backend alone and for each backend in the pair (its
  own lane, timed by a thread that waits on that lane alone), and the ratio pair / alone
  (alone: each backend as it is by default, MLflow in-process);
- the CPU seconds this process (and, separately, its child processes: wandb-core and MLflow's
  worker) spent over the end-to-end span.

With the worker, the timed span starts once the worker is ready (it starts with the tracker,
in the background, as during a training script's setup; until then batches are sent
in-process): the wait is printed. Every end-to-end number is checked through the backend's own
reader afterwards (MLflow's client; W&B's ``leet inspect``) to hold every point exactly once.
Each number is the best of ``--rounds`` rounds (the machine is shared and noisy); the spread
(worst to best) of the ratios is printed too.
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
from bench_wandb import FAST, children_cpu

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the W&B reader the tests use


WORKER = "+worker"
#: seconds each case waited for MLflow's worker to be ready (from the tracker's creation)
READY_WAITS: list[float] = []


def tracker(case: str, workdir: Path, tag: str) -> Any:
    import trackkit

    worker = case.endswith(WORKER)
    options: dict[str, Any] = {
        "mlflow": {"tracking_uri": f"sqlite:///{workdir / f'{tag}.db'}", "batch_process": worker},
        "wandb": {"mode": "offline", "dir": workdir / f"w-{tag}", "settings": FAST},
    }
    names = case.removesuffix(WORKER).split(",")
    own = {"journal_dir": workdir / f"tk-{tag}", "end_timeout": 3600}
    started = time.perf_counter()
    if len(names) == 1:
        made = trackkit.get_tracker(names[0], **options[names[0]], **own)
    else:
        made = trackkit.get_tracker(names, **{n: options[n] for n in names}, **own)
    if worker:
        lanes = getattr(made, "lanes", {"mlflow": made})
        process = lanes["mlflow"].backend.batch_process
        while not process.ready:
            assert process.restarts == 0, "MLflow's worker process died while starting"
            time.sleep(0.01)
        READY_WAITS.append(time.perf_counter() - started)
    return made


def hot_path(which: str, calls: int, workdir: Path, tag: str) -> float:
    t = tracker(which, workdir, tag)
    with t.start_run(experiment="bench-hot") as run:
        for i in range(1000):  # the key is known: the steady state of a training loop
            run.log_metric("warm", float(i))
        cost = per_call(lambda i: run.log_metric("m", float(i)), calls, group=100)
    t.close()
    return cost


def end_to_end(
    case: str, points: int, workdir: Path, tag: str
) -> tuple[dict[str, float], float, float]:
    """Points per second until each backend acknowledged all ``points`` (each lane timed on
    its own, by a thread that waits for that lane only), this process's CPU seconds meanwhile
    (its threads: logging, journaling, sending) and its children's (wandb-core, the worker)."""
    t = tracker(case, workdir, tag)
    run = t.start_run(experiment="bench-e2e")
    lanes = getattr(run, "runs", {case.removesuffix(WORKER): run})
    done: dict[str, float] = {}
    gc.collect()
    start, cpu, child = time.perf_counter(), time.process_time(), children_cpu()
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
    cpu, child = time.process_time() - cpu, children_cpu() - child
    ids = {name: lane.outbox.run_id for name, lane in lanes.items()}
    run.end()
    t.close()
    check(ids, points, workdir, tag)
    return {name: points / seconds for name, seconds in done.items()}, cpu, child


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

    cases = ("mlflow", "wandb", "mlflow,wandb", f"mlflow{WORKER}", f"mlflow,wandb{WORKER}")
    hot: dict[str, float] = {}
    e2e: dict[str, dict[str, float]] = {}
    cpus: dict[str, tuple[float, float]] = {}
    every: list[dict[str, dict[str, float]]] = []  # each round's rates, for the spread
    with tempfile.TemporaryDirectory(prefix="trackkit-bench-multi-") as tmp:
        workdir = Path(tmp)
        for round_ in range(args.rounds):
            rates_now: dict[str, dict[str, float]] = {}
            for case in cases:
                tag = f"{case.replace(',', '+')}-{round_}"
                cost = hot_path(case, args.calls, workdir, f"hot-{tag}")
                hot[case] = min(hot.get(case, cost), cost)
                rates, cpu, child = end_to_end(case, args.points, workdir, f"e2e-{tag}")
                if case not in cpus or cpu + child < sum(cpus[case]):
                    cpus[case] = (cpu, child)
                rates_now[case] = rates
                for name, rate in rates.items():
                    best = e2e.setdefault(case, {})
                    best[name] = max(best.get(name, rate), rate)
            every.append(rates_now)

    def ratio(pair: str, name: str, rates: dict[str, dict[str, float]]) -> float:
        return rates[pair][name] / rates[name][name]

    pairs = ("mlflow,wandb", f"mlflow,wandb{WORKER}")
    ratios = {p: {n: ratio(p, n, e2e) for n in ("mlflow", "wandb")} for p in pairs}
    spread = {
        p: {n: sorted(ratio(p, n, r) for r in every) for n in ("mlflow", "wandb")} for p in pairs
    }
    if args.json:
        print(
            json.dumps(
                {
                    "hot_ns": {k: v * 1e9 for k, v in hot.items()},
                    "e2e": e2e,
                    "ratios": ratios,
                    "spread": spread,
                    "cpu": cpus,
                    "ready_waits": READY_WAITS,
                }
            )
        )
        return
    print(
        f"{args.calls:,} hot-path calls and {args.points:,} end-to-end points a case; best of "
        f"{args.rounds}; {WORKER}: MLflow's batches written by its worker process"
    )
    print()
    print(f"{'hot path: median per run.log_metric':<48}{'ns':>10}")
    for case in cases:
        print(f"  {case:<46}{hot[case] * 1e9:>10,.0f}")
    print(f"  {'second backend adds':<46}{(hot['mlflow,wandb'] - hot['mlflow']) * 1e9:>10,.0f}")
    print()
    print(
        f"{'end to end: points/s until acknowledged':<40}{'alone':>8}{'in pair':>9}{'ratio':>7}"
        f"{'  ratio per round (worst..best)':<20}"
    )
    for p in pairs:
        for name in ("mlflow", "wandb"):
            rounds = ", ".join(f"{x:.2f}" for x in spread[p][name])
            label = f"{name} (pair{WORKER if p.endswith(WORKER) else ''})"
            print(
                f"  {label:<38}{e2e[name][name]:>8,.0f}{e2e[p][name]:>9,.0f}"
                f"{ratios[p][name]:>7.2f}  {rounds}"
            )
    alone = e2e[f"mlflow{WORKER}"]["mlflow"]
    print(
        f"  {'mlflow alone' + WORKER:<38}{alone:>8,.0f}{'':>9}{alone / e2e['mlflow']['mlflow']:>7.2f}"
    )
    print()
    print(f"{'CPU seconds over the end-to-end span':<48}{'this':>8}{'children':>10}")
    for case in cases:
        print(f"  {case:<46}{cpus[case][0]:>8.1f}{cpus[case][1]:>10.1f}")
    if READY_WAITS:
        waits = sorted(READY_WAITS)
        print()
        print(
            f"MLflow's worker was ready {waits[0]:.1f}-{waits[-1]:.1f} s after its tracker was "
            f"created (median {waits[len(waits) // 2]:.1f} s); batches before that go in-process"
        )


if __name__ == "__main__":
    main()
