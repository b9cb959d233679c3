"""Load test: many training processes logging at once to one shared MLflow server.

N processes (default 8) each log params, tens of thousands of metric points and an artifact to
their own run through trackkit; then MLflow's own client reads every run back and the script
checks that every point is stored exactly once (exit status 1 if not). The same load is sent
with MLflow's native calls, in the same invocation, for comparison: ``MlflowClient.log_batch``
(1,000 points a call) with the full load, and synchronous ``mlflow.log_metric`` with
1/``--sync-scale`` of it (it is slow), each reported as points per second into the server::

    python benchmarks/load_test.py                         # the stack in .stack (started if needed)
    python benchmarks/load_test.py --stack-dir /tmp/stack --processes 3 --points 3000 --native none
    python benchmarks/load_test.py --url http://mlflow.internal:5000   # credentials from the env

With a stack directory (``deploy/stack.py``) the script brings the stack up if it is not
running (and down again at the end), and logs as a new non-admin user it creates with the
admin's credentials. With ``--url`` it logs as ``$MLFLOW_TRACKING_USERNAME``.
Processes wait for a common start signal after importing, so the times measure logging only:
from the start signal until the last process's run has ended with everything acknowledged.
See docs/deploying.md for numbers measured with it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "trackkit": "trackkit (background writer)",
    "log_batch": "MlflowClient.log_batch (1000/call)",
    "log_metric": "mlflow.log_metric (synchronous)",
}
KEYS = ("loss", "accuracy", "learning_rate", "grad_norm", "throughput")
ARTIFACT_KB = 256
PARAMS = 20


def value(process: int, key: int, step: int) -> float:
    """The value process ``process`` logs for key number ``key`` at ``step`` (checked later)."""
    return float((process * len(KEYS) + key) * 1_000_000 + step)


# -- worker processes ---------------------------------------------------------------------------
def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no start signal within {timeout:.0f} s")
        time.sleep(0.005)


def _artifact(workdir: Path, index: int) -> Path:
    path = workdir / f"weights-{index}.bin"
    path.write_bytes(os.urandom(ARTIFACT_KB * 1024))
    return path


def worker(args: argparse.Namespace) -> None:
    """One training process: set up, signal ready, wait for go, log, report timings."""
    workdir = Path(args.workdir)
    index, keys, steps = args.index, KEYS[: args.keys], args.steps
    params = {f"param_{n:02d}": f"value-{index}-{n}" for n in range(PARAMS)}
    artifact = _artifact(workdir, index)
    go = workdir / "go"
    ready = workdir / f"ready-{args.mode}-{index}"
    problems: list[str] = []
    if args.mode == "trackkit":
        import trackkit

        tracker = trackkit.get_tracker(journal_dir=workdir / f"tk-{index}", end_timeout=3600)
        run = tracker.start_run(experiment=args.experiment, name=f"proc-{index}")
        run_id = run.id
        ready.touch()
        _wait_for(go, 1800)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.time()
            run.log_params(params)
            for step in range(steps):
                for k, key in enumerate(keys):
                    run.log_metric(key, value(index, k, step), step=step)
            t_loop = time.time()
            run.log_artifact(artifact)
            t_artifact = time.time()
            run.end()
            t_done = time.time()
            tracker.close()
        problems += [
            str(w.message) for w in caught if issubclass(w.category, trackkit.TrackkitWarning)
        ]
        left = list((workdir / f"tk-{index}" / "journal").glob("*.db"))
        if left:
            problems.append(f"journal not empty after end: {[p.name for p in left]}")
    else:
        import mlflow
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        experiment = client.get_experiment_by_name(args.experiment)
        assert experiment is not None, args.experiment
        experiment_id = experiment.experiment_id
        if args.mode == "log_batch":
            run_id = client.create_run(experiment_id, run_name=f"proc-{index}").info.run_id
            ready.touch()
            _wait_for(go, 1800)
            t0 = time.time()
            client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
            chunk: list[Any] = []
            for step in range(steps):
                now = int(time.time() * 1000)
                for k, key in enumerate(keys):
                    chunk.append(Metric(key, value(index, k, step), now, step))
                if len(chunk) + len(keys) > 1000:
                    client.log_batch(run_id, metrics=chunk)
                    chunk = []
            if chunk:
                client.log_batch(run_id, metrics=chunk)
            t_loop = time.time()
            client.log_artifact(run_id, str(artifact))
            t_artifact = time.time()
            client.set_terminated(run_id)
        else:
            mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
            active = mlflow.start_run(experiment_id=experiment_id, run_name=f"proc-{index}")
            run_id = active.info.run_id
            ready.touch()
            _wait_for(go, 1800)
            t0 = time.time()
            mlflow.log_params(params)
            for step in range(steps):
                for k, key in enumerate(keys):
                    mlflow.log_metric(key, value(index, k, step), step=step)
            t_loop = time.time()
            mlflow.log_artifact(str(artifact))
            t_artifact = time.time()
            mlflow.end_run()
        t_done = time.time()
    result = {
        "mode": args.mode,
        "index": index,
        "run_id": run_id,
        "t0": t0,
        "t_loop": t_loop,
        "t_artifact": t_artifact,
        "t_done": t_done,
        "points": steps * len(keys),
        "problems": problems,
    }
    (workdir / f"result-{args.mode}-{index}.json").write_text(json.dumps(result))


# -- the coordinator ----------------------------------------------------------------------------
def _stack_module() -> Any:
    name = "trackkit_deploy_stack"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / "stack.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _run_mode(
    mode: str, args: argparse.Namespace, experiment: str, steps: int, workdir: Path
) -> list[dict[str, Any]]:
    """Start the processes of one mode, give the start signal, collect their results."""
    for stale in workdir.glob("go"):
        stale.unlink()
    procs = []
    logs = []
    for index in range(args.processes):
        log = open(workdir / f"{mode}-{index}.log", "wb")  # noqa: SIM115 - closed below
        logs.append(log)
        cmd = [
            sys.executable, __file__, "--worker", "--mode", mode, "--index", str(index),
            "--experiment", experiment, "--steps", str(steps), "--keys", str(args.keys),
            "--workdir", str(workdir),
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 1800
        while not all((workdir / f"ready-{mode}-{i}").exists() for i in range(args.processes)):
            failed = [p for p in procs if p.poll() is not None]
            if failed or time.monotonic() > deadline:
                raise SystemExit(f"{mode}: a process failed to start:\n{_log_tail(workdir, mode)}")
            time.sleep(0.1)
        (workdir / "go").touch()
        for proc in procs:
            proc.wait(timeout=7200)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for log in logs:
            log.close()
    if any(p.returncode != 0 for p in procs):
        raise SystemExit(f"{mode}: a process failed:\n{_log_tail(workdir, mode)}")
    return [
        json.loads((workdir / f"result-{mode}-{i}.json").read_text()) for i in range(args.processes)
    ]


def _log_tail(workdir: Path, mode: str) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
        for p in sorted(workdir.glob(f"{mode}-*.log"))
    )


def _verify(client: Any, result: dict[str, Any], keys: int, steps: int) -> dict[str, int]:
    """Count the run's stored points against what its process logged (MLflow's client)."""
    index = result["index"]
    stored = lost = duplicated = 0
    for k, key in enumerate(KEYS[:keys]):
        history = client.get_metric_history(result["run_id"], key)
        stored += len(history)
        seen = Counter((m.step, m.value) for m in history)
        expected = {(step, value(index, k, step)) for step in range(steps)}
        lost += len(expected - seen.keys())
        duplicated += sum(n - 1 for n in seen.values() if n > 1)
        duplicated += sum(n for point, n in seen.items() if point not in expected)  # stray
    run = client.get_run(result["run_id"])
    artifacts = {a.path: a.file_size for a in client.list_artifacts(result["run_id"])}
    return {
        "expected": steps * keys,
        "stored": stored,
        "lost": lost,
        "duplicated": duplicated,
        "params": len([p for p in run.data.params if p.startswith("param_")]),
        "artifact": int(artifacts.get(f"weights-{index}.bin") == ARTIFACT_KB * 1024),
        "finished": int(run.info.status == "FINISHED"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--stack-dir", default=None, help="a deploy/stack.py directory (.stack)")
    where.add_argument("--url", help="a running server; credentials from MLFLOW_TRACKING_*")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--points", type=int, default=30_000, help="metric points per process")
    parser.add_argument("--keys", type=int, default=3, choices=range(1, len(KEYS) + 1))
    parser.add_argument(
        "--native", choices=["all", "log_batch", "log_metric", "none"], default="all"
    )
    parser.add_argument(
        "--native-first", action="store_true", help="send the native loads before trackkit's"
    )
    parser.add_argument("--sync-scale", type=int, default=100, help="log_metric gets points/N")
    parser.add_argument("--workers", type=int, default=4, help="server workers, if started here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--experiment", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.processes < 1 or args.points < args.keys:
        parser.error("need at least one process and one point per key")

    started_here = None
    stack = None
    if args.url:
        os.environ["MLFLOW_TRACKING_URI"] = args.url
        url, server = args.url, args.url
    else:
        stack_mod = _stack_module()
        directory = args.stack_dir or ".stack"
        stack = stack_mod.load(directory)
        if stack is None or not stack_mod.is_running(stack):
            print(f"bringing the stack up in {directory} ...", flush=True)
            stack = stack_mod.up(directory, workers=args.workers)
            started_here = directory
        url = stack.url
        server = f"{url} (stack {directory}: {stack.workers} workers, PostgreSQL, S3 via moto)"
        # a user of our own, with no special rights: it gets MANAGE on what it creates
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the server package's own deprecation notices
            from mlflow.server.auth.client import AuthServiceClient

        os.environ.update(stack.client_env())
        user, password = f"loadtest-{uuid.uuid4().hex[:6]}", secrets.token_urlsafe(18)
        AuthServiceClient(url).create_user(user, password)
        os.environ.update(stack.client_env(user, password))
    for noisy in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "TRACKKIT_DIR"):
        os.environ.pop(noisy, None)
    os.environ["TRACKKIT_BACKEND"] = "mlflow"

    try:
        return _measure(args, url, server)
    finally:
        if started_here is not None:
            _stack_module().down(started_here)
            print(f"stack in {started_here} stopped")


def _warm_up(client: Any, experiment: str, requests: int, workdir: Path) -> None:
    """Concurrent requests and uploads first, so no mode pays the server workers' one-time
    setup (password check cache, database pools, the object store's client)."""
    from concurrent.futures import ThreadPoolExecutor

    run_id = client.create_run(client.create_experiment(experiment)).info.run_id
    small = workdir / "warm-up.txt"
    small.write_text("warm-up\n")

    def touch(n: int) -> None:
        client.search_experiments(max_results=1)
        client.log_artifact(run_id, str(small), f"warm-up/{n}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(touch, range(requests)))
    client.set_terminated(run_id)


def _measure(args: argparse.Namespace, url: str, server: str) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    steps = args.points // args.keys
    points = steps * args.keys
    modes = ["trackkit"]
    if args.native in ("all", "log_batch"):
        modes.append("log_batch")
    if args.native in ("all", "log_metric"):
        modes.append("log_metric")
    if args.native_first:  # the store grows as modes run: compare both orders
        modes = modes[1:] + modes[:1]
    prefix = f"loadtest-{uuid.uuid4().hex[:6]}"
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "(none)")
    print(
        f"load test: {args.processes} processes x {points:,} points "
        f"({args.keys} metrics x {steps:,} steps), {PARAMS} params and a "
        f"{ARTIFACT_KB} KiB artifact each\nserver: {server}; user {user}\n",
        flush=True,
    )
    results: dict[str, list[dict[str, Any]]] = {}
    checks: dict[str, list[dict[str, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="trackkit-load-") as tmp:
        if len(modes) > 1:  # the first mode must not pay for a cold server
            _warm_up(client, f"{prefix}-warm-up", 16, Path(tmp))
        for mode in modes:
            mode_steps = max(1, steps // args.sync_scale) if mode == "log_metric" else steps
            experiment = f"{prefix}-{mode}"
            client.create_experiment(experiment)
            workdir = Path(tmp) / mode
            workdir.mkdir()
            print(f"{MODES[mode]}: {args.processes} processes ...", flush=True)
            results[mode] = _run_mode(mode, args, experiment, mode_steps, workdir)
            checks[mode] = [_verify(client, r, args.keys, mode_steps) for r in results[mode]]

    print()
    print(f"{'mode':<11} {'run':<7} {'run_id':<32} {'expected':>8} {'stored':>8} {'lost':>5} "
          f"{'duplicated':>10}  params artifact status")  # fmt: skip
    bad = 0
    for mode in modes:
        for result, check in zip(results[mode], checks[mode], strict=True):
            print(
                f"{mode:<11} proc-{result['index']:<2} {result['run_id']:<32} "
                f"{check['expected']:>8} {check['stored']:>8} {check['lost']:>5} "
                f"{check['duplicated']:>10}  {check['params']:>2}/{PARAMS}  "
                f"{'ok' if check['artifact'] else 'MISSING':<8} "
                f"{'FINISHED' if check['finished'] else 'NOT FINISHED'}"
            )
            incomplete = check["params"] != PARAMS or not check["artifact"]
            if check["lost"] or check["duplicated"] or incomplete or not check["finished"]:
                bad += 1
            for problem in result["problems"]:
                print(f"    {problem}")

    print()
    # points/s: from the start signal until the last run ended with everything acknowledged;
    # loop: how long each training loop was held up by its logging calls (median process)
    print(
        f"{'measure':<36} {'points':>9} {'seconds':>8} {'points/s':>9} {'trackkit/this':>13} "
        f"{'loop s':>7} {'us/point':>8}"
    )
    totals = {mode: sum(r["points"] for r in results[mode]) for mode in modes}
    spans = {
        mode: max(r["t_done"] for r in results[mode]) - min(r["t0"] for r in results[mode])
        for mode in modes
    }
    rates = {mode: totals[mode] / spans[mode] for mode in modes}
    for mode in ["trackkit", *(m for m in modes if m != "trackkit")]:
        total, seconds = totals[mode], spans[mode]
        loop = statistics.median(r["t_loop"] - r["t0"] for r in results[mode])
        per_point = loop / results[mode][0]["points"] * 1e6
        print(
            f"{MODES[mode]:<36} {total:>9,} {seconds:>8.1f} {rates[mode]:>9,.0f} "
            f"{rates['trackkit'] / rates[mode]:>12.2f}x {loop:>7.2f} {per_point:>8.1f}"
        )
    print()
    trackkit_bad = sum(
        1 for c in checks["trackkit"] if c["lost"] or c["duplicated"] or not c["finished"]
    )
    if bad:
        print(f"FAILED: {bad} run(s) incomplete ({trackkit_bad} of them trackkit's)")
        return 1
    total = sum(c["stored"] for c in checks["trackkit"])
    print(
        f"all points stored exactly once: {total:,} points in {args.processes} trackkit runs, "
        "0 lost, 0 duplicated"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
