"""Secrets never leave: redaction of text, of exception chains, of log records, of journals.

The first part needs no SDK (it runs in the core env): the redaction table, the stand-in
exceptions that replace an SDK exception holding a secret, the logging filter, and the core's
raise and log paths on an SDK-free backend that fails with a password in its error text. The
last part runs user scripts in fresh interpreters against an unreachable MLflow server whose
URI holds a password, with DEBUG logging and ``TRACKKIT_DEBUG=1``, and reads every byte they
printed or wrote.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import pytest

import trackkit
from recording import RecordingBackend
from trackkit._secrets import MASK, RedactingFilter, redact, scrub, without_password
from trackkit.entities import Metric, ParamValue, RunHandle
from trackkit.tracker import Tracker


@pytest.fixture(autouse=True)
def _no_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secret-looking variables of the machine running the tests would be masked too."""
    for name in list(os.environ):
        if re.search(r"PASSWORD|PASSWD|TOKEN|API_?KEY|SECRET", name, re.IGNORECASE):
            monkeypatch.delenv(name)


# -- redact: a table of cases ----------------------------------------------------------------
REDACTED = [
    # (text, what must not show, what redact gives)
    ("http://user:pw@host:5000/api", ["pw@"], "http://user:***@host:5000/api"),
    ("postgresql://u:p4ss@h/db", ["p4ss"], "postgresql://u:***@h/db"),
    ("http://user:p@ss@host:5000/api", ["p@ss", "ss@host"], "http://user:***@host:5000/api"),
    ("http://user:p%40ss@w0rd:x@127.0.0.1:9", ["p%40ss", "w0rd"], "http://user:***@127.0.0.1:9"),
    ("http://u:a:b:c@host", [":b:c"], "http://u:***@host"),
    ("http://u:100%@host/x", ["100%"], "http://u:***@host/x"),
    ("http://u:pa/ss@host/x", ["pa/ss", "ss@"], "http://u:***@host/x"),
    ("http://u:p?a#s@host", ["p?a", "#s"], "http://u:***@host"),
    ("http://u:%2F%3A%40@host", ["%2F"], "http://u:***@host"),
    ("htpp://user:pw0rd@host", ["pw0rd"], "htpp://user:***@host"),
    ("http://:pw0rd@host", ["pw0rd"], "http://:***@host"),
    ("http://ana@example.com:pw0rd@host/api", ["pw0rd"], "http://ana@example.com:***@host/api"),
    (
        "'http://u:it\\'s@h:9' failed",
        ["it\\'s", "s@h"],
        "'http://u:***@h:9' failed",
    ),
    (
        "API request to http://u:s3cr3t@127.0.0.1:9/api/2.0/mlflow/runs/create failed",
        ["s3cr3t"],
        "API request to http://u:***@127.0.0.1:9/api/2.0/mlflow/runs/create failed",
    ),
    ("mysql+pymysql://root:hunter2@db:3306/x", ["hunter2"], "mysql+pymysql://root:***@db:3306/x"),
    ("see (http://u:pw0rd@h), then", ["pw0rd"], "see (http://u:***@h), then"),
    (
        "https://ghp_0123456789abcdefghij@github.com/x.git",
        ["ghp_0123456789abcdefghij"],
        "https://***@github.com/x.git",
    ),
    ("https://srv/api?token=abc123&x=1", ["abc123"], "https://srv/api?token=***&x=1"),
    ("https://srv/?a=1&API_KEY=k3y#frag", ["k3y"], "https://srv/?a=1&API_KEY=***#frag"),
    ("https://srv/?access_token=t0k", ["t0k"], "https://srv/?access_token=***"),
    (
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA1/x&X-Amz-Signature=f00d&X-Amz-Security-Token=tt",
        ["AKIA1", "f00d", "=tt"],
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***"
        "&X-Amz-Security-Token=***",
    ),
    ("https://acct.blob.core.windows.net/c/b?sv=1&sig=abc%2Fdef", ["abc%2Fdef"], None),
    ("host=db port=5432 password=hunter2 dbname=x", ["hunter2"], None),
    ("{'api_key': 'k-123', 'project': 'p'}", ["k-123"], "{'api_key': '***', 'project': 'p'}"),
    ('{"token": "t\\"ok", "x": 1}', ['t\\"ok'], '{"token": "***", "x": 1}'),
    ("Authorization: Basic dXNlcjpwYXNz", ["dXNlcjpwYXNz"], "Authorization: Basic ***"),
    ("Authorization: Bearer eyJhbGciOi.J9x_y-z", ["eyJhbGciOi"], "Authorization: Bearer ***"),
]


@pytest.mark.parametrize(
    ("text", "hidden", "expected"), REDACTED, ids=[r[0][:40] for r in REDACTED]
)
def test_redact_masks_every_form_of_credential(
    text: str, hidden: list[str], expected: str | None
) -> None:
    masked = redact(text)
    assert MASK in masked
    for part in hidden:
        assert part not in masked
    if expected is not None:
        assert masked == expected
    assert redact(masked) == masked  # idempotent: text redacted twice reads the same


@pytest.mark.parametrize(
    "text",
    [
        "http://host:5000/api",
        "http://ana@host:5000",  # a short user name without a password is not a secret
        "sqlite:///tmp/mlflow.db",
        "plain text, a:b@c",
        "models:/model@champion",
        "runs:/0123/model",
        "Basic authentication required",
        "the token expired; log in again",
        "mlflow (http://user:***@host)",
    ],
)
def test_redact_leaves_secret_free_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_masks_secret_environment_values_also_percent_encoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "p@ss/w0rd:x")
    monkeypatch.setenv("MY_SERVICE_API_TOKEN", "zz-s3cr3t-zz")
    assert redact("auth with zz-s3cr3t-zz failed") == "auth with *** failed"
    assert redact("password p@ss/w0rd:x refused") == "password *** refused"
    encoded = quote("p@ss/w0rd:x", safe="")
    assert "w0rd" not in redact(f"GET /login?u=ana&pw={encoded}")
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to mask without masking words
    assert redact("abc") == "abc"


@pytest.mark.parametrize(
    ("uri", "kept"),
    [
        ("http://ana:pw@127.0.0.1:9", "http://ana@127.0.0.1:9"),
        ("http://ana:p%40ss@w0rd:x@127.0.0.1:9", "http://ana@127.0.0.1:9"),
        ("http://ana:p@ss@127.0.0.1:9/x", "http://ana@127.0.0.1:9/x"),
        ("http://:pw@host", "http://host"),
        ("https://ghp_0123456789abcdefghij@github.com", "https://github.com"),
        (
            "postgresql://u:pw@h/db?sslmode=require&password=pw",
            "postgresql://u@h/db?sslmode=require&password=",
        ),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////tmp/a@b/mlflow.db", "sqlite:////tmp/a@b/mlflow.db"),
    ],
)
def test_without_password_keeps_the_address_and_drops_the_credentials(uri: str, kept: str) -> None:
    assert without_password(uri) == kept


# -- scrub: exception chains -----------------------------------------------------------------
class ServiceError(Exception):
    """Stands for an SDK exception: its text names the URI it failed on."""

    def __init__(self, message: str, code: str = "UNAVAILABLE") -> None:
        super().__init__(message)
        self.message = message
        self.error_code = code


def _raise_chain(uri: str) -> BaseException:
    def sdk_call() -> None:
        try:
            raise ConnectionRefusedError(111, f"connect to {uri} refused")
        except OSError as e:
            raise ServiceError(f"API request to {uri}/api/2.0 failed") from e

    try:
        sdk_call()
    except ServiceError as e:
        return e
    raise AssertionError("unreachable")


def test_scrub_redacts_the_whole_chain_and_keeps_types_and_frames() -> None:
    error = _raise_chain("http://ana:p@ss:w0rd@host:9")
    assert "w0rd" in "".join(traceback.format_exception(error))  # the SDK's own text leaks
    clean = scrub(error)
    shown = "".join(traceback.format_exception(clean))
    assert "w0rd" not in shown and "p@ss" not in shown
    assert "ServiceError: API request to http://ana:***@host:9/api/2.0 failed" in shown
    assert "ConnectionRefusedError: [Errno 111] connect to http://ana:***@host:9 refused" in shown
    assert isinstance(clean, ServiceError) and type(clean).__name__ == "ServiceError"
    assert f"{type(clean).__module__}.{type(clean).__qualname__}" == (
        f"{ServiceError.__module__}.{ServiceError.__qualname__}"
    )
    assert isinstance(clean.__cause__, ConnectionRefusedError)
    assert clean.message == "API request to http://ana:***@host:9/api/2.0 failed"  # type: ignore[attr-defined]
    assert clean.error_code == "UNAVAILABLE"  # type: ignore[attr-defined]
    # the original frames are kept: the traceback still points at the SDK's code
    assert traceback.extract_tb(clean.__traceback__) == traceback.extract_tb(error.__traceback__)
    assert "sdk_call" in shown
    assert error.message.endswith("failed") and "w0rd" in str(error)  # the original is untouched


def test_scrub_returns_a_clean_exception_itself() -> None:
    error = _raise_chain("http://127.0.0.1:9")
    assert scrub(error) is error


def test_scrub_redacts_context_notes_and_keeps_suppression() -> None:
    try:
        try:
            raise KeyError("token=s3cr3t")
        except KeyError:
            raise RuntimeError("while handling") from None
    except RuntimeError as e:
        e.add_note("retried http://u:n0te@h")
        error = e
    clean = scrub(error)
    assert clean.__suppress_context__ is True
    assert clean.__notes__ == ["retried http://u:***@h"]  # type: ignore[attr-defined]
    assert "s3cr3t" not in repr(clean.__context__)
    shown = "".join(traceback.format_exception(clean))
    assert "n0te" not in shown and "s3cr3t" not in shown


class _NeedsArguments(Exception):
    def __new__(cls, a: int, b: int) -> _NeedsArguments:
        return super().__new__(cls, a, b)

    def __str__(self) -> str:
        return f"failed at http://u:{self.args[0]}{self.args[1]}@h"


def test_scrub_of_a_type_that_cannot_be_made_keeps_its_name() -> None:
    try:
        raise _NeedsArguments(4242, 77)
    except _NeedsArguments as e:
        clean = scrub(e)
    assert type(clean).__name__ == "_NeedsArguments"
    assert str(clean) == "failed at http://u:***@h"
    assert "424277" not in "".join(traceback.format_exception(clean))


def test_scrub_of_an_os_error_keeps_its_kind() -> None:
    path = "/nonexistent/http://u:pw0rd@h"  # (a source line shows in a traceback as it is)
    try:
        open(path)  # noqa: SIM115
    except OSError as e:
        clean = scrub(e)
    assert isinstance(clean, FileNotFoundError)
    assert "pw0rd" not in "".join(traceback.format_exception(clean))


# -- the logging filter ----------------------------------------------------------------------
def test_trackkit_log_records_are_redacted_with_their_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = _raise_chain("http://ana:l0gged@host")
    with caplog.at_level(logging.DEBUG, logger="trackkit"):
        logging.getLogger("trackkit").debug(
            "send to %s failed", "http://ana:l0gged@host", exc_info=error
        )
        logging.getLogger("trackkit").warning("plain %r", {"api_key": "l0gged-key"})
    assert len(caplog.records) == 2
    formatter = logging.Formatter("%(levelname)s %(message)s")
    text = "\n".join(formatter.format(r) for r in caplog.records)
    assert "l0gged" not in text
    assert "send to http://ana:***@host failed" in text
    assert "ServiceError: API request to http://ana:***@host/api/2.0 failed" in text
    assert any(isinstance(f, RedactingFilter) for f in logging.getLogger("trackkit").filters)


# -- the core's raise and log paths, on an SDK-free backend ------------------------------------
SECRET_URI = "http://ana:p%40ss@c0re-s3cr3t:x@127.0.0.1:9"
CORE_SECRETS = ("c0re-s3cr3t", "p%40ss", "p@ss")


class FailingBackend(RecordingBackend):
    """Fails every call the way an SDK does: with the tracking URI (and its password) in its
    exception's text, chained to a lower-level error that holds it too."""

    name = "failing"

    def _fail(self) -> None:
        try:
            raise ConnectionRefusedError(111, f"connection to {SECRET_URI} refused")
        except OSError as e:
            raise ServiceError(f"API request to {SECRET_URI}/api/2.0 failed") from e

    def describe(self) -> str:
        return f"failing ({SECRET_URI})"

    def start_run(self, experiment: str | None, name: str | None, run_id: str | None) -> RunHandle:
        if getattr(self, "refuse_start", True):
            self._fail()
        return super().start_run(experiment, name, run_id)

    def log_batch(
        self,
        run_id: str,
        params: Sequence[tuple[str, ParamValue]],
        metrics: Sequence[Metric],
        tags: Sequence[tuple[str, str]],
    ) -> None:
        self._fail()


def _assert_clean(text: str) -> None:
    for secret in CORE_SECRETS:
        assert secret not in text, f"{secret!r} leaked into: {text[:2000]}"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def _shown_logs(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(r) for r in caplog.records)


def test_strict_errors_chain_no_secret(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    tracker = Tracker(FailingBackend(), strict=True, journal_dir=tmp_path / "j", end_timeout=2)
    with pytest.raises(trackkit.BackendError) as caught:
        tracker.start_run(experiment="e")
    shown = "".join(traceback.format_exception(caught.value))
    assert "ServiceError" in shown and "ConnectionRefusedError" in shown  # the causes show
    assert "ana:***@127.0.0.1:9" in shown
    _assert_clean(shown)
    _assert_clean(repr(tracker))

    backend = FailingBackend()
    backend.refuse_start = False  # type: ignore[attr-defined]
    tracker = Tracker(backend, strict=True, journal_dir=tmp_path / "k", end_timeout=2)
    run = tracker.start_run(experiment="e")
    run.log_metric("m", 1.0)
    with pytest.raises(trackkit.BackendError) as caught:
        run.flush(timeout=5)
    shown = "".join(traceback.format_exception(caught.value))
    assert "ServiceError" in shown
    _assert_clean(shown)
    _assert_clean(_shown_logs(logs))
    with warnings.catch_warnings(), pytest.raises(trackkit.BackendError):
        warnings.simplefilter("ignore")
        run.end()


def test_default_mode_warns_and_logs_no_secret(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    tracker = Tracker(FailingBackend(), journal_dir=tmp_path / "j", end_timeout=1)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        run = tracker.start_run(experiment="e")
        run.log_param("a", 1)
        run.log_metric("m", 1.0)
        run.end()
    assert warned and logs.records
    _assert_clean("\n".join(str(w.message) for w in warned))
    _assert_clean(_shown_logs(logs))
    assert any(r.levelno == logging.DEBUG for r in logs.records)
    for path in (tmp_path / "j").rglob("*"):
        if path.is_file():
            _assert_clean(path.read_bytes().decode("latin-1"))


# -- from outside: user scripts against an unreachable server, with everything verbose ---------
SCRIPT = """
import json, logging, os, sys, traceback, warnings

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
logging.captureWarnings(True)
warnings.simplefilter("always")
import trackkit

for case in json.loads(os.environ["CASES"]):
    print("== case", case["id"], case["strict"], flush=True)
    try:
        tracker = trackkit.get_tracker(
            "mlflow", tracking_uri=case["uri"], strict=case["strict"], end_timeout=1,
            journal_dir=case["id"],
        )
        print(repr(tracker), tracker.backend.describe(), flush=True)
        run = tracker.start_run(experiment="e")
        print(repr(run), flush=True)
        run.log_param("a", 1)
        run.log_metric("m", 1.0)
        run.end()
        tracker.close()
    except Exception as e:
        traceback.print_exc()
        print("".join(traceback.format_exception(e)), file=sys.stderr, flush=True)
"""


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, never listening) for the test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def _every_byte(directory: Path, skip: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("latin-1")
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p != skip
    )


def test_scripts_with_debug_logging_print_and_write_no_password(
    tmp_path: Path, closed_port: int
) -> None:
    pytest.importorskip("mlflow")
    at = f"127.0.0.1:{closed_port}"
    marker = "Xy9s3cr3t"  # in every password below, and nowhere else
    cases = [
        ("encoded-at", f"http://ana:p%40ss@{marker}:x@{at}"),
        ("raw-at", f"http://ana:p@ss@{marker}@{at}"),
        ("colon-percent", f"http://ana:{marker}:50%@{at}"),
        ("mistyped-scheme", f"htpp://ana:{marker}@{at}"),
        ("slash", f"http://ana:{marker}/x@{at}"),
        ("token-user", f"http://{marker}0123456789abcdef@{at}"),
    ]
    runs = [
        {"id": f"{name}-{'strict' if strict else 'default'}", "uri": uri, "strict": strict}
        for name, uri in cases
        for strict in (False, True)
    ]
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {
        **os.environ,
        "CASES": json.dumps(runs),
        "TRACKKIT_DEBUG": "1",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
        "PYTHONWARNINGS": "always",
    }
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert output.count("== case") == len(runs)
    # each way of failing was reached, and shown with its causes
    assert "Traceback" in output and "BackendError" in output and "InvalidInput" in output
    assert "ConnectionRefusedError" in output or "Connection refused" in output
    assert "DEBUG:trackkit" in output and "WARNING:trackkit" in output
    assert "ana:***@" in output
    assert marker not in output, output[output.index(marker) - 1500 : output.index(marker) + 200]
    del env["CASES"]
    # the journals left behind: delivered by `trackkit sync`, which fails the same way
    journals = sorted(p for p in tmp_path.rglob("*.db") if p.parent.name == "journal")
    assert journals, sorted(str(p) for p in tmp_path.rglob("*"))
    for name, uri in cases[:1]:  # one sync process: each costs an interpreter and mlflow
        synced = subprocess.run(
            [sys.executable, "-m", "trackkit", "sync", "--debug", "--dir", f"{name}-default"],
            cwd=tmp_path, env={**env, "MLFLOW_TRACKING_URI": uri}, capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip
        shown = synced.stdout + synced.stderr
        assert "***" in shown or "ana@" in shown, shown[-2000:]
        assert marker not in shown, shown[-3000:]
    written = _every_byte(tmp_path, skip=script)
    assert "ana@127.0.0.1" in written  # the journals name the server, without the password
    assert marker not in written
