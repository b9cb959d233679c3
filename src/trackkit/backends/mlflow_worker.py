"""MLflow's batch writes in a worker process, off the interpreter the training loop runs in.

MLflow's store is Python (SQLAlchemy for a database, ``requests`` for a server), so a
``log_batch`` costs the calling process's interpreter lock and cycle collector about as much
as the rest of trackkit's delivery together. With another backend's lane in the same process
the two senders take turns on one lock and one heap (docs/multiple-backends.md, "Measured").

:class:`BatchProcess` starts ``python -m trackkit.backends.mlflow_worker`` in the background
(no ``fork`` of a threaded process; the user's ``__main__`` is never imported), which opens its
own MLflow store for the same URIs and answers ``log_batch`` requests over a pipe. The sender
thread then only waits on the pipe. The journal, acknowledgements, backoff and order are the
writer's, as before: the worker is only where one backend's ``log_batch`` runs.

- A worker that is not ready yet, has died, or runs in a forked child is not used: the call
  returns False and the backend sends in-process. A batch whose answer never came (the worker
  died during it) is sent again in-process at once: MLflow stores identical metric points once
  and takes equal param and tag values again, as for any batch retried after a failure.
- An error in the worker comes back as a chain of the same exception types (resolved among
  the modules this process has imported, else a stand-in class of the same name) with redacted
  texts and MLflow's ``error_code``, so the backend maps it and the writer classifies it
  (outage or refusal) exactly as an error raised in-process.
- The worker has its own session (a terminal's Ctrl-C does not reach it) and ignores SIGINT;
  it exits when its request pipe closes: on :meth:`BatchProcess.close`, at interpreter exit,
  or when this process dies in any way.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from trackkit import env
from trackkit._secrets import redact

logger = logging.getLogger("trackkit")

#: the environment variable that turns the worker on (1) or off (0) when the option is not given
ENV = "TRACKKIT_MLFLOW_BATCH_PROCESS"
#: how many times a worker that died is replaced before the backend stays in-process
MAX_RESTARTS = 3
#: seconds a closing worker gets to finish its batch and exit before it is killed
CLOSE_TIMEOUT = 10.0
_HEADER = struct.Struct(">Q")

Link = tuple[str, str, str, dict[str, Any]]  # module, qualname, redacted text, attributes
MetricRow = tuple[str, float, int, int]  # key, value, timestamp (ms), step


# -- framing: pickled messages with a length prefix, over raw pipe descriptors ---------------------
def _write(fd: int, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError("the pipe closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read(fd: int) -> Any:
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size))
    return pickle.loads(_read_exactly(fd, size))


# -- errors across the pipe --------------------------------------------------------------------------
def _links(error: BaseException) -> list[Link]:
    """(worker) ``error`` and its chain of causes, as plain data with redacted texts."""
    links: list[Link] = []
    seen: set[int] = set()
    at: BaseException | None = error
    while at is not None and id(at) not in seen and len(links) < 20:
        seen.add(id(at))
        try:
            text = str(at)
        except Exception:
            text = "<exception str() failed>"
        # plain attributes callers read (MLflow's ``message``, ``error_code``, ``sqlstate``)
        attributes = {
            name: redact(value) if isinstance(value, str) else value
            for name, value in getattr(at, "__dict__", {}).items()
            if isinstance(value, (str, int, float, bool)) and not name.startswith("__")
        }
        kind = type(at)
        links.append((kind.__module__, kind.__qualname__, redact(text), attributes))
        at = at.__cause__ or (None if at.__suppress_context__ else at.__context__)
    return links


def _known_type(module: str, qualname: str) -> type[BaseException] | None:
    """An exception type this process has already imported (never imports anything)."""
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return None


_STAND_INS: dict[tuple[str, str], type[Exception]] = {}


def _stand_in(module: str, qualname: str) -> type[Exception]:
    key = (module, qualname)
    if key not in _STAND_INS:
        name = qualname.rpartition(".")[2]
        _STAND_INS[key] = type(name, (Exception,), {"__module__": module, "__qualname__": qualname})
    return _STAND_INS[key]


def _made(link: Link) -> BaseException:
    module, qualname, text, attributes = link
    text = redact(text)  # this process's own secrets too (its environment may differ)
    for kind in (_known_type(module, qualname), _stand_in(module, qualname)):
        if kind is None:
            continue
        try:
            error = kind.__new__(kind)
            error.args = (text,)
            for name, value in attributes.items():
                setattr(error, name, redact(value) if isinstance(value, str) else value)
            str(error)  # a type whose text needs its own constructor's state: the stand-in
        except Exception:
            continue
        return error
    return RuntimeError(text)  # pragma: no cover - the stand-in always works


def rebuild(links: Sequence[Link]) -> BaseException:
    """(this process) The worker's error: the same types, chained as causes, texts redacted."""
    error: BaseException | None = None
    for link in reversed(links):
        made = _made(link)
        made.__cause__ = error
        error = made
    return error if error is not None else RuntimeError("the MLflow worker failed")


# -- this process's side -------------------------------------------------------------------------
_LIVE: weakref.WeakSet[BatchProcess] = weakref.WeakSet()


class BatchProcess:
    """A worker process that runs ``log_batch`` on its own MLflow store for the same URIs.

    Created by the MLflow backend; the worker is started in the background at once, so its
    ``import mlflow`` overlaps the caller's setup. Until it is ready, :meth:`log_batch`
    returns False and the backend sends in-process.
    """

    def __init__(self, tracking_uri: str, registry_uri: str) -> None:
        self._uris = (tracking_uri, registry_uri)
        self._lock = threading.Lock()  # one request at a time on the pipe
        self._state = threading.Lock()  # guards the fields below
        self._process: subprocess.Popen[bytes] | None = None
        self._send = self._receive = -1
        self._ready = False
        self._closed = False
        self._pid = os.getpid()
        self.restarts = 0
        #: batches the worker wrote (for describe and tests)
        self.sent = 0
        _LIVE.add(self)
        self._start()

    def __repr__(self) -> str:
        state = "ready" if self._ready else "closed" if self._closed else "starting"
        return f"<BatchProcess {state} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        """The worker's process id; None when there is none."""
        process = self._process
        return None if process is None else process.pid

    @property
    def ready(self) -> bool:
        """True while a worker is up and answering."""
        return self._ready and not self._closed and os.getpid() == self._pid

    def _start(self) -> None:
        threading.Thread(target=self._launch, name="trackkit-mlflow-worker", daemon=True).start()

    def _launch(self) -> None:
        """(a helper thread) Start a worker and wait until it has opened its store."""
        if not sys.executable:  # an embedded interpreter: no Python to start
            return
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        env = dict(os.environ)
        # the worker imports trackkit and MLflow as this process does
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(request_read), str(reply_write)],
                pass_fds=(request_read, reply_write),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            for fd in (request_read, request_write, reply_read, reply_write):
                os.close(fd)
            logger.debug("trackkit: no MLflow worker process (%s); sending in-process", e)
            return
        finally:
            with contextlib.suppress(OSError):
                os.close(request_read)
                os.close(reply_write)
        with self._state:
            if self._closed:
                closing = True
            else:
                closing = False
                self._process, self._send, self._receive = process, request_write, reply_read
        if closing:
            self._stop(process, request_write, reply_read)
            return
        try:
            _write(request_write, ("open", *self._uris))
            answer = _read(reply_read)
        except (OSError, EOFError, pickle.UnpicklingError) as e:
            self._dead(f"it ended while starting ({type(e).__name__})")
            return
        if answer[0] != "ready":
            self._dead(f"it could not open the store: {redact(str(answer[1]))}")
            return
        with self._state:
            self._ready = not self._closed

    def log_batch(
        self,
        run_id: str,
        params: Sequence[tuple[str, str]],
        metrics: Sequence[MetricRow],
        tags: Sequence[tuple[str, str]],
        model_id: str | None,
    ) -> bool:
        """Send one batch through the worker; False if it cannot take it (send in-process).

        Raises the worker's error (rebuilt, see :func:`rebuild`) when MLflow refused or failed
        the batch there.
        """
        if not self.ready:
            return False
        with self._lock:
            if not self.ready:
                return False
            try:
                _write(self._send, ("log_batch", run_id, params, metrics, tags, model_id))
                answer = _read(self._receive)
            except (OSError, EOFError, pickle.UnpicklingError) as e:
                # no answer: whether the worker wrote the batch is unknown; it is sent again
                # in-process, which MLflow takes as a retry (identical points are kept once)
                self._dead(f"it ended during a batch ({type(e).__name__})")
                return False
        if answer[0] == "ok":
            self.sent += 1
            return True
        raise rebuild(answer[1])

    def _dead(self, why: str) -> None:
        """The worker is gone: reap it, and start another unless closed or too many died."""
        with self._state:
            process, send, receive = self._process, self._send, self._receive
            self._process, self._send, self._receive, self._ready = None, -1, -1, False
            again = not self._closed and self.restarts < MAX_RESTARTS
            if again:
                self.restarts += 1
        if process is not None:
            self._stop(process, send, receive)
        logger.debug(
            "trackkit: the MLflow worker process %s; %s",
            why,
            "starting another" if again else "sending in-process from now on",
        )
        if again:
            self._start()

    @staticmethod
    def _stop(process: subprocess.Popen[bytes], send: int, receive: int) -> None:
        """Close the pipes (the worker exits once its batch is done), then reap it."""
        for fd in (send, receive):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        try:
            process.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the worker: it finishes the batch it has, then exits; no process is left."""
        with self._state:
            if self._closed:
                return
            self._closed, self._ready = True, False
        if os.getpid() != self._pid:
            return  # a forked child: the worker is its parent's
        # wait for a batch in flight (its answer is acknowledged as usual), not forever
        took = self._lock.acquire(timeout=CLOSE_TIMEOUT)
        try:
            with self._state:
                process, send, receive = self._process, self._send, self._receive
                self._process, self._send, self._receive = None, -1, -1
            if process is not None:
                if not took:
                    process.kill()  # a stuck batch: its sender gets no answer and keeps it
                self._stop(process, send, receive)
        finally:
            if took:
                self._lock.release()
        _LIVE.discard(self)

    def _forget_in_child(self) -> None:
        """(a forked child) Drop this process's copies of the pipes, so the worker still sees
        its parent close them; the child sends in-process."""
        self._closed, self._ready = True, False
        for fd in (self._send, self._receive):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._process, self._send, self._receive = None, -1, -1


def _close_all() -> None:
    for batch_process in list(_LIVE):
        with contextlib.suppress(Exception):
            batch_process.close()


def _after_fork_in_child() -> None:
    for batch_process in list(_LIVE):
        with contextlib.suppress(Exception):
            batch_process._forget_in_child()
    _LIVE.clear()


atexit.register(_close_all)
os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the worker process --------------------------------------------------------------------------
class _Store:
    """(worker) One MLflow store, written as the backend writes in-process."""

    def __init__(self, tracking_uri: str, registry_uri: str) -> None:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        self._types = (Metric, Param, RunTag)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
        found: Any = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        self.store = found if callable(getattr(found, "log_batch", None)) else None

    def log_batch(
        self,
        run_id: str,
        params: Sequence[tuple[str, str]],
        metrics: Sequence[MetricRow],
        tags: Sequence[tuple[str, str]],
        model_id: str | None,
    ) -> None:
        metric, param, tag = self._types
        batch: dict[str, Any] = {
            "metrics": [metric(k, v, t, s, model_id=model_id) for k, v, t, s in metrics],
            "params": [param(k, v) for k, v in params],
            "tags": [tag(k, v) for k, v in tags],
        }
        if self.store is not None:
            self.store.log_batch(run_id, **batch)
        else:
            self.client.log_batch(run_id, **batch, synchronous=True)


def serve(receive: int, send: int) -> None:
    """(worker) Answer requests until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the worker ends
    store: _Store | None = None
    while True:
        try:
            request = _read(receive)
        except EOFError:
            return
        try:
            if request[0] == "open":
                store = _Store(request[1], request[2])
                # everything imported so far lives as long as the process: the cycle
                # collector need not walk it again on every full collection
                gc.collect()
                gc.freeze()
                answer: tuple[Any, ...] = ("ready", os.getpid())
            elif request[0] == "log_batch" and store is not None:
                store.log_batch(*request[1:])
                answer = ("ok",)
            else:
                answer = ("error", _links(RuntimeError(f"unknown request {request[0]!r}")))
        except Exception as e:
            answer = ("failed", redact(f"{type(e).__name__}: {e}"))
            if request[0] != "open":
                answer = ("error", _links(e))
        try:
            _write(send, answer)
        except OSError:
            return


def main(argv: Sequence[str]) -> int:
    receive, send = int(argv[0]), int(argv[1])
    try:
        serve(receive, send)
    except BaseException:  # the parent sees the pipe close and sends in-process
        return 1
    return 0


def enabled(option: bool | None, default: bool) -> bool:
    """Whether the worker is wanted: the option, else ``$TRACKKIT_MLFLOW_BATCH_PROCESS``
    (on/off), else ``default``.

    Raises:
        InvalidInput: the variable is set to something other than an on/off value.
    """
    if option is not None:
        return bool(option)
    return env.switch(ENV, default)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
