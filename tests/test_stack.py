"""trackkit, unchanged, on a shared MLflow server: PostgreSQL, S3 behind the proxy, basic auth.

The session brings the stack up once with ``deploy/stack.py`` (PostgreSQL 15, ``moto`` as the
S3 store, ``mlflow server --app-name basic-auth``) and tears it down at the end. Set
``TRACKKIT_STACK_DIR`` to a directory where ``python deploy/stack.py up`` already runs to reuse
that stack (it is then left running). Results are read back through MLflow's own client,
PostgreSQL itself and boto3, never through trackkit.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import trackkit
from trackkit import BackendError, TrackkitWarning

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]


def _stack_module() -> ModuleType:
    name = "trackkit_deploy_stack"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / "stack.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


stack_mod = _stack_module()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The running stack (started once per session, stopped at its end)."""
    if shutil.which("pg_ctlcluster") is None:
        pytest.skip(
            "pg_ctlcluster not found: the stack tests need PostgreSQL 15's server "
            "(Debian/Ubuntu: apt-get install postgresql-15)"
        )
    reuse = os.environ.get("TRACKKIT_STACK_DIR")
    if reuse:
        found = stack_mod.load(reuse)
        if found is None or not stack_mod.is_running(found):
            pytest.fail(f"TRACKKIT_STACK_DIR={reuse}: no stack runs there")
        yield found
        return
    directory = tmp_path_factory.mktemp("stack")
    running = stack_mod.up(directory, workers=2)
    try:
        yield running
    finally:
        stack_mod.down(directory)


def _login(
    monkeypatch: pytest.MonkeyPatch, stack: Any, user: str | None = None, pw: str | None = None
) -> None:
    """Point MLflow clients (trackkit's included) at the stack as ``user`` (default: admin)."""
    for key, value in stack.client_env(user, pw).items():
        monkeypatch.setenv(key, value)


@contextlib.contextmanager
def _as_admin(stack: Any) -> Iterator[None]:
    """Admin credentials for the duration of a block (MLflow reads them per request)."""
    with pytest.MonkeyPatch.context() as m:
        _login(m, stack)
        yield


def _client(stack: Any) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=stack.url)


#: every password the tests use, checked against the server's logs at the end
_PASSWORDS: list[str] = []


def _password() -> str:
    _PASSWORDS.append(secrets.token_urlsafe(18))
    return _PASSWORDS[-1]


def _new_user(stack: Any, role: str) -> tuple[str, str]:
    """Create an MLflow user through the auth REST API (as admin); return its credentials."""
    from mlflow.server.auth.client import AuthServiceClient

    name, password = f"{role}-{uuid.uuid4().hex[:8]}", _password()
    with _as_admin(stack):
        AuthServiceClient(stack.url).create_user(name, password)
    return name, password


def _permission(stack: Any, user: str, experiment_id: str) -> str:
    from mlflow.server.auth.client import AuthServiceClient

    with _as_admin(stack):
        result = AuthServiceClient(stack.url).get_user_permission(user, "experiment", experiment_id)
    return str(result.permission)


def _grant(stack: Any, user: str, experiment_id: str, permission: str) -> None:
    """Set ``user``'s permission on the experiment (as admin), replacing any earlier grant."""
    from mlflow.server.auth.client import AuthServiceClient

    with _as_admin(stack):
        auth = AuthServiceClient(stack.url)
        if _permission(stack, user, experiment_id) != "NO_PERMISSIONS":
            auth.revoke_user_permission(user, "experiment", experiment_id)
        auth.grant_user_permission(user, "experiment", experiment_id, permission)


def _s3_key(stack: Any, artifact_uri: str) -> str:
    """The bucket key under which the proxy stores ``mlflow-artifacts:/...``."""
    prefix = stack.artifacts_destination.split("/", 3)[3]  # s3://bucket/<prefix>
    path = re.sub(r"^mlflow-artifacts:(//[^/]*)?/", "", artifact_uri)
    return f"{prefix}/{path}"


def _s3_keys(stack: Any, prefix: str) -> set[str]:
    pages = (
        stack.s3_client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=stack.bucket, Prefix=prefix)
    )
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def _access_log_lines(stack: Any, needle: str) -> list[str]:
    """The server's access-log lines (uvicorn) containing ``needle``."""
    text = (stack.path / "logs" / "mlflow.log").read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if needle in line and '" ' in line]


def _files_bytes(directory: Path) -> Iterator[tuple[Path, bytes]]:
    for path in directory.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes()


def _assert_absent(secret: str, **texts: str) -> None:
    for where, text in texts.items():
        assert secret not in text, f"a password appears in {where}"


# -- the stack itself ---------------------------------------------------------------------------
def test_stack_state_is_private_and_only_env_prints_the_password(stack: Any) -> None:
    directory = stack.path
    for name in ("state.json", "pgpass", "basic_auth.ini"):
        assert (directory / name).stat().st_mode & 0o777 == 0o600, name
    assert stack.url.startswith("http://127.0.0.1:")
    assert stack.s3_endpoint.startswith("http://127.0.0.1:")
    assert all(s not in repr(stack) for s in stack.secrets())

    status, env = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(status):
        assert stack_mod.main(["status", "--dir", str(directory)]) == 0
    with contextlib.redirect_stdout(env):
        assert stack_mod.main(["env", "--dir", str(directory)]) == 0
    assert stack.url in status.getvalue()
    for secret in stack.secrets():
        _assert_absent(secret, status=status.getvalue())
    assert f"export MLFLOW_TRACKING_URI={stack.url}" in env.getvalue()
    assert f"export MLFLOW_TRACKING_PASSWORD={stack.admin_password}" in env.getvalue()
    # idempotent: `up` on the running stack returns it as it is
    again = stack_mod.up(directory, workers=stack.workers)
    assert (again.mlflow_pid, again.port, again.admin_password) == (
        stack.mlflow_pid,
        stack.port,
        stack.admin_password,
    )


# -- trackkit on it, unchanged ------------------------------------------------------------------
def test_params_metrics_and_artifacts_reach_postgres_and_s3(
    stack: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import psycopg2

    _login(monkeypatch, stack)
    experiment = f"stack-logging-{uuid.uuid4().hex[:8]}"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part-0.csv").write_text("a,b\n1,2\n")
    tracker = trackkit.get_tracker()  # the backend and server come from the environment
    with tracker.start_run(experiment=experiment, name="proxy", tags={"team": "rides"}) as run:
        run.log_params({"model": {"alpha": 0.5, "kind": "ridge"}})
        for step in range(120):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        run.log_text("hello from trackkit", "notes/hello.txt")
        run.log_dict({"features": ["city", "area"]}, "config.yaml")
        run.log_artifact(tmp_path / "data", "inputs")

    client = _client(stack)
    got = client.get_run(run.id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {"model.alpha": "0.5", "model.kind": "ridge"}
    assert got.data.tags["team"] == "rides"
    history = client.get_metric_history(run.id, "loss")
    assert sorted(m.step for m in history) == list(range(120))
    assert {m.step: m.value for m in history}[9] == pytest.approx(0.1)
    listed = {a.path for a in client.list_artifacts(run.id)}
    assert {"notes", "config.yaml", "inputs"} <= listed
    local = client.download_artifacts(run.id, "notes/hello.txt", str(tmp_path))
    assert Path(local).read_text() == "hello from trackkit"

    # the data is where the stack says: rows in PostgreSQL, objects in the S3 bucket
    db = psycopg2.connect(
        host="127.0.0.1",
        port=stack.pg_port,
        user=stack.pg_user,
        password=stack.pg_password,
        dbname=stack.pg_database,
    )
    try:
        with db.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = 'loss'", (run.id,)
            )
            assert cur.fetchone() == (120,)
            cur.execute(
                "SELECT value FROM params WHERE run_uuid = %s AND key = 'model.kind'", (run.id,)
            )
            assert cur.fetchone() == ("ridge",)
    finally:
        db.close()
    prefix = _s3_key(stack, got.info.artifact_uri)
    assert _s3_keys(stack, prefix) == {
        f"{prefix}/notes/hello.txt",
        f"{prefix}/config.yaml",
        f"{prefix}/inputs/data/part-0.csv",
    }
    body = stack.s3_client().get_object(Bucket=stack.bucket, Key=f"{prefix}/notes/hello.txt")
    assert body["Body"].read() == b"hello from trackkit"
    # nothing secret was logged with the run (MLflow adds its own system tags)
    for value in [*got.data.params.values(), *got.data.tags.values()]:
        for secret in stack.secrets():
            assert secret not in value


def test_models_and_registry_through_the_proxy(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from sklearn.linear_model import Ridge

    _login(monkeypatch, stack)
    name = f"stack-model-{uuid.uuid4().hex[:8]}"
    model = Ridge(alpha=1.0).fit([[0.0], [1.0], [2.0]], [0.0, 2.0, 4.0])
    tracker = trackkit.get_tracker()
    with tracker.start_run(experiment="stack-models") as run:
        ref = run.log_model(model, "model")
    version = tracker.register_model(ref, name, description="the first one")
    tracker.set_model_alias(name, "champion", version.version)
    loaded = tracker.load_model(f"models:/{name}@champion")
    assert loaded.predict([[3.0]]) == pytest.approx(model.predict([[3.0]]))

    client = _client(stack)
    by_alias = client.get_model_version_by_alias(name, "champion")
    assert (by_alias.version, by_alias.run_id) == (str(version.version), run.id)
    logged = client.get_logged_model(ref.uri.rsplit("/", 1)[-1])
    keys = _s3_keys(stack, _s3_key(stack, logged.artifact_location))
    assert {k.rsplit("/", 1)[-1] for k in keys} >= {"MLmodel", "model.skops", "requirements.txt"}
    native = mlflow.pyfunc.load_model(f"models:/{name}@champion")  # MLflow's own loader
    assert native.predict([[3.0]]) == pytest.approx(model.predict([[3.0]]))


# -- credentials --------------------------------------------------------------------------------
def test_wrong_password_in_strict_mode_raises_a_clear_backend_error(
    stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = _password()
    _login(monkeypatch, stack, stack.admin_user, wrong)
    tracker = trackkit.get_tracker(strict=True)
    with pytest.raises(BackendError) as caught:
        tracker.start_run(experiment=f"stack-strict-{uuid.uuid4().hex[:8]}")
    message = str(caught.value)
    assert "401" in message and "not authenticated" in message.lower()
    assert stack.url in message  # which server refused
    for secret in (wrong, stack.admin_password):
        _assert_absent(secret, message=message, tracker=repr(tracker))


def test_wrong_password_warns_once_keeps_the_journal_and_does_not_retry_in_a_loop(
    stack: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = _password()
    experiment = f"stack-wrongpw-{uuid.uuid4().hex[:8]}"
    journal_dir = tmp_path / "tk"
    _login(monkeypatch, stack, stack.admin_user, wrong)
    caplog.set_level(logging.INFO, logger="trackkit")
    tracker = trackkit.get_tracker(journal_dir=journal_dir, end_timeout=5)
    with pytest.warns(TrackkitWarning) as record:
        run = tracker.start_run(experiment=experiment, name="offline")
        run.log_params({"lr": 0.01})
        run.set_tag("owner", "rides")
        for step in range(500):
            run.log_metric("loss", step / 500, step=step)
        run.end()
    failures = [w for w in record if "backend failed" in str(w.message)]
    assert len(failures) == 1, [str(w.message) for w in record]
    assert "401" in str(failures[0].message)
    assert run.id.startswith("local-")

    # the sender keeps trying with exponential backoff (0.5, 1, 2, 4, 8 s apart), not once a
    # flush interval: a handful of refused requests in 15 s, not one a second
    time.sleep(15)
    attempts = _access_log_lines(stack, f"experiment_name={experiment} ")
    assert all(" 401" in line for line in attempts)
    assert 1 <= len(attempts) <= 8, f"{len(attempts)} requests in ~15 s"

    tracker.close()
    texts = {
        "warnings": "\n".join(str(w.message) for w in record),
        "log records": "\n".join(r.getMessage() for r in caplog.records),
        "reprs": repr(tracker) + repr(run),
    }
    for where, text in texts.items():
        _assert_absent(wrong, **{where: text})
    journals = list(_files_bytes(journal_dir))
    assert journals, "the operations should be kept in the journal"
    for path, data in journals:
        assert wrong.encode() not in data, f"the password is in {path}"

    # with the right password, `trackkit sync` delivers everything that was journaled
    _login(monkeypatch, stack)
    results = trackkit.sync(journal_dir)
    assert [r.outcome for r in results] == ["delivered"], results
    client = _client(stack)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(found) == 1
    delivered = found[0]
    assert delivered.info.status == "FINISHED"
    assert delivered.data.params == {"lr": "0.01"}
    assert delivered.data.tags["owner"] == "rides"
    history = client.get_metric_history(delivered.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(500))
    for value in [*delivered.data.params.values(), *delivered.data.tags.values()]:
        assert wrong not in value and stack.admin_password not in value


# -- isolation ----------------------------------------------------------------------------------
def test_two_users_two_experiments_and_mlflow_permissions(
    stack: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    alice, alice_pw = _new_user(stack, "alice")
    bob, bob_pw = _new_user(stack, "bob")
    carol, _ = _new_user(stack, "carol")
    suffix = uuid.uuid4().hex[:8]
    exp_a, exp_b = f"alice-{suffix}", f"bob-{suffix}"

    def tracker_as(user: str, pw: str, **options: Any) -> trackkit.Tracker:
        _login(monkeypatch, stack, user, pw)
        return trackkit.get_tracker(journal_dir=tmp_path / user, **options)

    with tracker_as(alice, alice_pw).start_run(experiment=exp_a) as run_a:
        run_a.log_metric("rmse", 6.1)
    with tracker_as(bob, bob_pw).start_run(experiment=exp_b) as run_b:
        run_b.log_metric("rmse", 5.9)
    with _as_admin(stack):
        id_a = _client(stack).get_experiment_by_name(exp_a).experiment_id
        id_b = _client(stack).get_experiment_by_name(exp_b).experiment_id
    # whoever creates an experiment manages it; nobody else sees it until granted
    assert _permission(stack, alice, id_a) == "MANAGE"
    assert _permission(stack, bob, id_a) == "NO_PERMISSIONS"
    assert _permission(stack, alice, id_b) == "NO_PERMISSIONS"

    # no permission: a clear BackendError in strict mode, for writing and for reading
    bob_strict = tracker_as(bob, bob_pw, strict=True)
    with pytest.raises(BackendError, match=r"403.*Permission denied") as caught:
        bob_strict.start_run(experiment=exp_a)
    assert exp_a in str(caught.value) and bob_pw not in str(caught.value)
    with pytest.raises(BackendError, match=r"403.*Permission denied"):
        bob_strict.search_runs(exp_a)
    # ... and in the default mode one warning naming it, with the data kept for later
    bob_lenient = tracker_as(bob, bob_pw, end_timeout=5)
    with pytest.warns(TrackkitWarning) as record:
        lenient = bob_lenient.start_run(experiment=exp_a)
        lenient.log_metric("rmse", 1.0)
        lenient.end()
    failures = [str(w.message) for w in record if "backend failed" in str(w.message)]
    assert len(failures) == 1 and re.search(r"403.*Permission denied", failures[0])
    assert lenient.id.startswith("local-")
    assert list((tmp_path / bob / "journal").glob("local-*.db"))  # kept for `trackkit sync`
    bob_lenient.close()

    # READ: bob sees alice's runs but cannot add one
    _grant(stack, bob, id_a, "READ")
    assert [r.id for r in bob_strict.search_runs(exp_a)] == [run_a.id]
    assert bob_strict.get_run(run_a.id).metrics == {"rmse": 6.1}
    with pytest.raises(BackendError, match=r"403.*Permission denied"):
        bob_strict.start_run(experiment=exp_a)
    # EDIT: bob logs into alice's experiment, but cannot hand out access
    _grant(stack, bob, id_a, "EDIT")
    with bob_strict.start_run(experiment=exp_a) as shared:
        shared.log_metric("rmse", 5.5)
    assert {r.id for r in bob_strict.search_runs(exp_a)} == {run_a.id, shared.id}
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    _login(monkeypatch, stack, bob, bob_pw)
    with pytest.raises(MlflowException, match="403"):
        AuthServiceClient(stack.url).grant_user_permission(carol, "experiment", id_a, "READ")
    # MANAGE: now bob can share alice's experiment with carol
    _grant(stack, bob, id_a, "MANAGE")
    _login(monkeypatch, stack, bob, bob_pw)
    AuthServiceClient(stack.url).grant_user_permission(carol, "experiment", id_a, "READ")
    assert _permission(stack, carol, id_a) == "READ"
    assert _permission(stack, carol, id_b) == "NO_PERMISSIONS"


def test_a_user_logs_and_registers_a_model_in_their_own_experiment(
    stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A logged model belongs to its run's experiment, where its author has permission.

    MLflow 3 files a run's logged model under the *active* experiment (Default, id 0, when none
    is set), not the run's own; with per-user permissions that is a 403 for anyone but admins.
    """
    from sklearn.linear_model import Ridge

    user, pw = _new_user(stack, "dana")
    _login(monkeypatch, stack, user, pw)
    tracker = trackkit.get_tracker(strict=True)
    experiment = f"dana-{uuid.uuid4().hex[:8]}"
    with tracker.start_run(experiment=experiment) as run:
        ref = run.log_model(Ridge().fit([[0.0], [1.0]], [0.0, 1.0]))
    version = tracker.register_model(ref, f"dana-model-{uuid.uuid4().hex[:8]}")
    assert version.run_id == run.id
    with _as_admin(stack):
        client = _client(stack)
        logged = client.get_logged_model(ref.uri.rsplit("/", 1)[-1])
        assert logged.experiment_id == client.get_experiment_by_name(experiment).experiment_id


# -- the examples -------------------------------------------------------------------------------
def _env_for_subprocess(stack: Any, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRACKKIT_"))}
    env.update(stack.client_env())
    env.update(extra)
    env.setdefault("MPLBACKEND", "Agg")
    return env


def test_quickstart_runs_against_the_stack_unchanged(stack: Any, tmp_path: Path) -> None:
    experiment = f"quickstart-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        env=_env_for_subprocess(stack, TRACKKIT_EXPERIMENT=experiment),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "registered:  quickstart-model version" in done.stdout
    for secret in stack.secrets():
        _assert_absent(secret, stdout=done.stdout, stderr=done.stderr)
    with _as_admin(stack):
        client = _client(stack)
        runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        production = client.get_model_version_by_alias("quickstart-model", "production")
    assert len(runs) == 3
    assert production.run_id in {r.info.run_id for r in runs}
    assert not (tmp_path / "mlflow.db").exists()  # nothing fell back to the local default


def test_ride_duration_example_runs_against_the_stack_unchanged(stack: Any, tmp_path: Path) -> None:
    env = _env_for_subprocess(stack)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "examples.ride_duration", "--rows", "2000", "--trials", "1",
         "--rounds", "20"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for secret in stack.secrets():
        _assert_absent(secret, stdout=done.stdout, stderr=done.stderr)
    with _as_admin(stack):
        client = _client(stack)
        production = client.get_model_version_by_alias("ride-duration", "production")
        run = client.get_run(production.run_id)
    assert run.info.status == "FINISHED" and "rmse" in run.data.metrics
    assert not (tmp_path / "mlflow.db").exists()  # nothing fell back to the local default


def test_load_test_loses_and_duplicates_no_point(stack: Any, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "load_test.py"),
            "--stack-dir", str(stack.path),
            "--processes", "3", "--points", "3000", "--native", "none",
        ],
        cwd=tmp_path,
        env=_env_for_subprocess(stack),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = re.findall(
        r"^trackkit\s+proc-(\d+)\s+\w+\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+20/20\s+ok\s+FINISHED$",
        done.stdout,
        re.M,
    )
    assert len(rows) == 3, done.stdout
    for _, expected, stored, lost, duplicated in rows:
        assert (int(expected), int(stored), int(lost), int(duplicated)) == (3000, 3000, 0, 0)
    assert "all points stored exactly once" in done.stdout
    for secret in stack.secrets():
        _assert_absent(secret, stdout=done.stdout, stderr=done.stderr)


def test_the_stack_logs_hold_no_secret(stack: Any) -> None:
    # runs last in this file: the server and store logs saw every test above
    for path, data in _files_bytes(stack.path / "logs"):
        for secret in [*stack.secrets(), *_PASSWORDS]:
            assert secret.encode() not in data, f"a password is in {path}"
