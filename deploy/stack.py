"""A shared MLflow tracking server on 127.0.0.1: PostgreSQL, an S3 store, basic auth.

One command brings the stack up, one tears it down (see ``docs/deploying.md``)::

    python deploy/stack.py up --dir .stack        # prints the tracking URL and what to export
    eval "$(python deploy/stack.py env --dir .stack)"   # the client variables, password included
    python deploy/stack.py status --dir .stack
    python deploy/stack.py down --dir .stack

What runs:

- PostgreSQL 15 (the machine's ``15/main`` cluster, created if missing, started if down) with a
  role and two databases of this stack's own: MLflow's backend store and its auth store;
- ``moto`` in server mode, an S3-compatible object store, holding one bucket;
- ``mlflow server`` with the PostgreSQL backend store, the bucket as artifact destination behind
  MLflow's artifact proxy, several workers, and MLflow's basic-auth app.

Everything listens on 127.0.0.1 only. Passwords are generated at ``up`` and kept in files of
the stack directory that only their owner can read (0600); only ``env`` prints one. ``up`` on
a running stack and ``down`` on a stopped one do nothing. ``down`` stops what ``up`` started
and drops the stack's databases and role (the object store lives in memory, so its data goes
with it); it stops PostgreSQL only if ``up`` started it and no other stack still uses it.

Needs ``mlflow[auth]``, ``boto3``, ``moto[server]`` and ``psycopg2-binary`` in this Python
(``pip install 'trackkit[stack]'``), PostgreSQL 15's server, and root (or passwordless sudo to
the ``postgres`` user) for ``pg_ctlcluster`` and creating the role.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
PG_VERSION = "15"
PG_CLUSTER = "main"
ADMIN_USER = "admin"
DEFAULT_WORKERS = 4
AUTH_CACHE_SECONDS = 60
STATE_FILE = "state.json"
PREFIX = "tkstack_"  # every stack's role and databases start with this
START_TIMEOUT = 600.0


class StackError(RuntimeError):
    """The stack could not be brought up or down; the message says which part and why."""


@dataclass
class Stack:
    """A running stack's addresses, names and credentials (as kept in ``state.json``).

    The repr shows no password; :meth:`client_env` gives the variables clients need.
    """

    directory: str
    stack_id: str
    url: str
    port: int
    workers: int
    pg_port: int
    pg_user: str
    pg_database: str
    pg_auth_database: str
    s3_endpoint: str
    s3_port: int
    bucket: str
    artifacts_destination: str
    admin_user: str
    started_postgres: bool = False
    mlflow_pid: int | None = None
    s3_pid: int | None = None
    pg_password: str = field(default="", repr=False)
    admin_password: str = field(default="", repr=False)
    flask_secret: str = field(default="", repr=False)
    aws_access_key_id: str = field(default="", repr=False)
    aws_secret_access_key: str = field(default="", repr=False)

    @property
    def path(self) -> Path:
        return Path(self.directory)

    @property
    def backend_store_uri(self) -> str:
        # no password: the server reads it from the stack's pgpass file (PGPASSFILE)
        return f"postgresql+psycopg2://{self.pg_user}@{HOST}:{self.pg_port}/{self.pg_database}"

    @property
    def auth_database_uri(self) -> str:
        return f"postgresql+psycopg2://{self.pg_user}@{HOST}:{self.pg_port}/{self.pg_auth_database}"

    def client_env(self, user: str | None = None, password: str | None = None) -> dict[str, str]:
        """The variables a client (trackkit, MLflow) sets to use the stack, as ``user``."""
        return {
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_USERNAME": user or self.admin_user,
            "MLFLOW_TRACKING_PASSWORD": password if password is not None else self.admin_password,
        }

    def s3_env(self) -> dict[str, str]:
        """The variables that reach the object store directly (the server's view; admins only)."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.aws_secret_access_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def s3_client(self) -> Any:
        """A boto3 S3 client on the stack's object store."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            region_name="us-east-1",
        )

    def secrets(self) -> list[str]:
        """Every secret of the stack (for tests that check none of them leaks)."""
        return [
            s
            for s in (
                self.pg_password,
                self.admin_password,
                self.flask_secret,
                self.aws_secret_access_key,
            )
            if s
        ]


# -- small helpers ------------------------------------------------------------------------------
def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (created 0600, never wider)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of this process counts as gone
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _ours(pid: int | None, marker: str) -> bool:
    """True if ``pid`` is alive and still the process we started (its command names ``marker``)."""
    return bool(pid) and _alive(pid) and marker in _cmdline(pid)  # type: ignore[arg-type]


def _stop_group(pid: int | None, marker: str, timeout: float = 20.0) -> None:
    """Stop the process group we started (the process and its workers): TERM, then KILL."""
    if not _ours(pid, marker):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _alive(pid):
            break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return bool(200 <= r.status < 500)
    except urllib.error.HTTPError as e:
        return e.code < 500
    except OSError:
        return False


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _spawn(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a daemon in its own session (so ``down`` can stop its whole group), logging to ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            env=env,
            cwd=log.parent,
            start_new_session=True,
        )
    finally:
        os.close(fd)


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{what} exited with status {proc.returncode}:\n{_tail(log)}")
        if _http_ok(url):
            return
        time.sleep(0.5)
    raise StackError(f"{what} did not answer at {url} within {START_TIMEOUT:.0f} s:\n{_tail(log)}")


# -- PostgreSQL -------------------------------------------------------------------------------
def _require_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise StackError(
            f"{name} not found: install PostgreSQL {PG_VERSION}'s server "
            f"(Debian/Ubuntu: apt-get install postgresql-{PG_VERSION})"
        )
    return found


def _as_postgres(cmd: list[str]) -> list[str]:
    """``cmd`` run as the ``postgres`` OS user (root: runuser; otherwise: sudo -n)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["sudo", "-n", "-u", "postgres", "--", *cmd]


def _as_root(cmd: list[str]) -> list[str]:
    return cmd if os.geteuid() == 0 else ["sudo", "-n", *cmd]


def _run(cmd: list[str], what: str, stdin: str | None = None) -> str:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StackError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def _cluster() -> tuple[int, str] | None:
    """The (port, status) of the ``15/main`` cluster, or None if it does not exist."""
    out = _run([_require_tool("pg_lsclusters"), "--no-header"], "pg_lsclusters")
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == PG_VERSION and parts[1] == PG_CLUSTER:
            return int(parts[2]), parts[3]
    return None


def _psql(port: int, sql: str, database: str = "postgres") -> str:
    """Run SQL as the database superuser over the local socket (SQL on stdin, never in argv)."""
    cmd = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-p", str(port), "-d", database]
    return _run(_as_postgres(cmd), "psql", stdin=sql)


def _start_postgres() -> tuple[int, bool]:
    """Make sure the cluster runs; return its port and whether this call started it."""
    _require_tool("pg_ctlcluster")
    found = _cluster()
    if found is None:
        _run(
            _as_root([_require_tool("pg_createcluster"), PG_VERSION, PG_CLUSTER]),
            f"pg_createcluster {PG_VERSION} {PG_CLUSTER}",
        )
        found = _cluster()
        if found is None:
            raise StackError(f"pg_createcluster did not create cluster {PG_VERSION}/{PG_CLUSTER}")
    port, status = found
    started = False
    if status != "online":
        _run(
            _as_root(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "start"]),
            f"pg_ctlcluster {PG_VERSION} {PG_CLUSTER} start",
        )
        started = True
    deadline = time.monotonic() + 60
    while True:
        try:
            _psql(port, "SELECT 1;")
            return port, started
        except StackError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _create_databases(stack: Stack) -> None:
    role, password = stack.pg_user, stack.pg_password
    # names and password are generated by this script ([a-z0-9_] and url-safe base64)
    _psql(
        stack.pg_port,
        f"""
DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
    ALTER ROLE {role} LOGIN PASSWORD '{password}';
  ELSE
    CREATE ROLE {role} LOGIN PASSWORD '{password}';
  END IF;
END $$;
SELECT 'CREATE DATABASE {stack.pg_database} OWNER {role}'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{stack.pg_database}') \\gexec
SELECT 'CREATE DATABASE {stack.pg_auth_database} OWNER {role}'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{stack.pg_auth_database}') \\gexec
REVOKE ALL ON DATABASE {stack.pg_database} FROM PUBLIC;
REVOKE ALL ON DATABASE {stack.pg_auth_database} FROM PUBLIC;
""",
    )


def _drop_databases(stack: Stack) -> None:
    found = _cluster()
    if found is None or found[1] != "online":
        return
    _psql(
        found[0],
        f"""
DROP DATABASE IF EXISTS {stack.pg_database} WITH (FORCE);
DROP DATABASE IF EXISTS {stack.pg_auth_database} WITH (FORCE);
DROP ROLE IF EXISTS {stack.pg_user};
""",
    )


def _stop_postgres_if_unused() -> bool:
    """Stop the cluster unless another stack's database or any other client still uses it."""
    found = _cluster()
    if found is None or found[1] != "online":
        return False
    port = found[0]
    others = _psql(
        port,
        f"""
SELECT (SELECT count(*) FROM pg_database WHERE datname LIKE '{PREFIX}%')
     + (SELECT count(*) FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid());
""",
    ).strip()
    if others != "0":
        return False
    _run(
        _as_root(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "stop"]),
        f"pg_ctlcluster {PG_VERSION} {PG_CLUSTER} stop",
    )
    return True


# -- state ------------------------------------------------------------------------------------
def load(directory: str | os.PathLike[str]) -> Stack | None:
    """The stack recorded in ``directory``, or None if there is none."""
    path = Path(directory) / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return Stack(**data)


def _save(stack: Stack) -> None:
    _write_private(stack.path / STATE_FILE, json.dumps(asdict(stack), indent=2) + "\n")


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One ``up``/``down`` at a time per stack directory (created 0700 if missing)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def is_running(stack: Stack) -> bool:
    """True if the stack's server and object store are the processes we started, and answer."""
    return (
        _ours(stack.mlflow_pid, f"--port {stack.port}")
        and _ours(stack.s3_pid, f"-p {stack.s3_port}")
        and _http_ok(f"{stack.url}/health")
    )


# -- up / down --------------------------------------------------------------------------------
def _new_stack(directory: Path, workers: int) -> Stack:
    stack_id = secrets.token_hex(4)
    name = f"{PREFIX}{stack_id}"
    port, s3_port = _free_port(), _free_port()
    bucket = f"tkstack-{stack_id}"
    return Stack(
        directory=str(directory.resolve()),
        stack_id=stack_id,
        url=f"http://{HOST}:{port}",
        port=port,
        workers=workers,
        pg_port=0,
        pg_user=name,
        pg_database=name,
        pg_auth_database=f"{name}_auth",
        s3_endpoint=f"http://{HOST}:{s3_port}",
        s3_port=s3_port,
        bucket=bucket,
        artifacts_destination=f"s3://{bucket}/artifacts",
        admin_user=ADMIN_USER,
        pg_password=secrets.token_urlsafe(24),
        admin_password=secrets.token_urlsafe(24),
        flask_secret=secrets.token_urlsafe(32),
        aws_access_key_id=f"TKSTACK{stack_id.upper()}",
        aws_secret_access_key=secrets.token_urlsafe(30),
    )


def _base_env() -> dict[str, str]:
    """This environment without any tracking, S3 or PostgreSQL settings the user may have set."""
    drop = ("MLFLOW_", "AWS_", "PG")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _start_s3(stack: Stack) -> None:
    log = stack.path / "logs" / "s3.log"
    cmd = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(stack.s3_port)]
    proc = _spawn(cmd, log, _base_env())
    stack.s3_pid = proc.pid
    _save(stack)
    _wait_http(f"{stack.s3_endpoint}/moto-api/", proc, "the S3 store (moto)", log)
    client = stack.s3_client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=stack.bucket)


def _start_mlflow(stack: Stack) -> None:
    directory = stack.path
    _write_private(
        directory / "pgpass",
        f"{HOST}:{stack.pg_port}:*:{stack.pg_user}:{stack.pg_password}\n",
    )
    # MLflow's basic-auth settings: its own database; no one may read an experiment or model
    # they were not granted (creators get MANAGE on what they create); the admin's password
    # comes from MLFLOW_AUTH_ADMIN_PASSWORD, used once to create the admin user. Checking a
    # password hash costs ~0.1-0.5 s of CPU, on every request: each worker caches a successful
    # check for a minute (a changed or deleted password may work that long on other workers).
    _write_private(
        directory / "basic_auth.ini",
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {stack.auth_database_uri}\n"
        f"admin_username = {stack.admin_user}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_SECONDS}\n",
    )
    env = _base_env()
    env.update(stack.s3_env())
    env.update(
        {
            "PGPASSFILE": str(directory / "pgpass"),
            "MLFLOW_AUTH_CONFIG_PATH": str(directory / "basic_auth.ini"),
            "MLFLOW_AUTH_ADMIN_PASSWORD": stack.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": stack.flask_secret,
        }
    )
    log = directory / "logs" / "mlflow.log"
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", stack.backend_store_uri,
        "--artifacts-destination", stack.artifacts_destination,
        "--serve-artifacts",
        "--app-name", "basic-auth",
        "--host", HOST, "--port", str(stack.port),
        "--workers", str(stack.workers),
        # a worker still importing MLflow on a busy machine is slow to answer uvicorn's
        # health pings; the default 5 s would kill and restart it over and over
        "--uvicorn-opts", "--timeout-worker-healthcheck 60",
    ]  # fmt: skip
    proc = _spawn(cmd, log, env)
    stack.mlflow_pid = proc.pid
    _save(stack)
    _wait_http(f"{stack.url}/health", proc, "mlflow server", log)


def up(directory: str | os.PathLike[str] = ".stack", workers: int = DEFAULT_WORKERS) -> Stack:
    """Bring the stack up in ``directory`` (or return it if it already runs).

    Raises:
        StackError: a part could not be started; what was started is stopped again.
    """
    if workers < 1:
        raise StackError(f"workers must be at least 1, got {workers}")
    path = Path(directory)
    with _locked(path):
        current = load(path)
        if current is not None:
            if is_running(current):
                return current
            _down(current)  # a stale or half-started stack: clear it, start afresh
        stack = _new_stack(path, workers)
        (path / "logs").mkdir(mode=0o700, exist_ok=True)
        _save(stack)
        try:
            stack.pg_port, stack.started_postgres = _start_postgres()
            _save(stack)
            _create_databases(stack)
            _start_s3(stack)
            _start_mlflow(stack)
        except BaseException:
            _down(stack)
            raise
        return stack


def _down(stack: Stack) -> list[str]:
    done = []
    if _ours(stack.mlflow_pid, f"--port {stack.port}"):
        _stop_group(stack.mlflow_pid, f"--port {stack.port}")
        done.append(f"stopped mlflow server (pid {stack.mlflow_pid})")
    if _ours(stack.s3_pid, f"-p {stack.s3_port}"):
        _stop_group(stack.s3_pid, f"-p {stack.s3_port}")
        done.append(f"stopped the S3 store (pid {stack.s3_pid})")
    if stack.pg_port and shutil.which("pg_lsclusters"):
        _drop_databases(stack)
        done.append(f"dropped databases {stack.pg_database}, {stack.pg_auth_database}")
        if stack.started_postgres and _stop_postgres_if_unused():
            done.append(f"stopped PostgreSQL {PG_VERSION}/{PG_CLUSTER}")
    for name in (STATE_FILE, "pgpass", "basic_auth.ini"):
        with contextlib.suppress(FileNotFoundError):
            (stack.path / name).unlink()
    return done


def down(directory: str | os.PathLike[str] = ".stack") -> list[str]:
    """Stop what ``up`` started in ``directory`` and drop its databases; returns what it did."""
    path = Path(directory)
    if not (path / STATE_FILE).exists():
        return []
    with _locked(path):
        stack = load(path)
        return [] if stack is None else _down(stack)


# -- command line -----------------------------------------------------------------------------
def _summary(stack: Stack, directory: str) -> str:
    here = shlex.quote(directory)
    return f"""\
stack up (state in {stack.directory}, readable by you only)
  tracking server  {stack.url}   mlflow server, basic auth, {stack.workers} workers
  backend store    {stack.backend_store_uri}   PostgreSQL {PG_VERSION}/{PG_CLUSTER}
  auth store       {stack.auth_database_uri}
  artifact store   {stack.artifacts_destination} on {stack.s3_endpoint} (moto), proxied by the server
  logs             {stack.directory}/logs/

export MLFLOW_TRACKING_URI={stack.url}
export MLFLOW_TRACKING_USERNAME={stack.admin_user}
export MLFLOW_TRACKING_PASSWORD=...   # not shown; to export all three:
  eval "$(python deploy/stack.py env --dir {here})"
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--dir", default=".stack", help="the stack's directory (default .stack)")
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help="mlflow server workers (up)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            stack = up(args.dir, workers=args.workers)
            print(_summary(stack, args.dir), end="")
        elif args.command == "down":
            for line in down(args.dir) or ["nothing to stop"]:
                print(line)
        else:
            current = load(args.dir)
            running = current is not None and is_running(current)
            if current is None or not running:
                print(f"no stack running in {args.dir}", file=sys.stderr)
                return 1
            assert current is not None
            if args.command == "status":
                print(_summary(current, args.dir), end="")
            else:  # env: the one place a password is printed, because it was asked for
                for key, value in current.client_env().items():
                    print(f"export {key}={shlex.quote(value)}")
    except StackError as e:
        print(f"stack {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
