"""``trackkit sync``: replay journals left on disk to their backends.

A journal is left behind when a run ended while its backend was unreachable, when the
process was killed, or when operations were deferred (e.g. registry calls made offline).
Replay is idempotent: acknowledged operations were deleted from the journal, so nothing is
sent twice; a run whose process died without ending it is ended KILLED.

A journal is untrusted input (a trackkit directory may come from someone else), and may be
damaged. sync therefore replays only files trackkit created for this user
(:func:`trackkit.journal.untrusted_reason`), only to the address the user's own configuration
selects (unless told to trust the journal's, and then without the environment's
credentials), sets damaged journals aside after salvaging what they hold, and goes on with
the next journal whatever happened to this one. See ``docs/reliability.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackkit import journal as jn
from trackkit._secrets import redact
from trackkit.errors import InvalidInput, NotFound, UnsupportedOperation
from trackkit.writer import deliver

if TYPE_CHECKING:
    from trackkit.tracker import Tracker

logger = logging.getLogger("trackkit")

#: what ``SyncResult.outcome`` can be
OUTCOMES = ("delivered", "partial", "failed", "live", "damaged", "refused")
#: backend options that say where data goes (compared with the user's own configuration):
#: MLflow's ``tracking_uri`` and ``registry_uri``, Neptune's ``api_url``, W&B's
#: ``settings.base_url`` and proxies
_ADDRESS = re.compile(r"(?:^|_)(?:uri|url|host|address|endpoint|proxy)$", re.IGNORECASE)
#: environment variables that hold credentials, withheld from an address a journal names
_CREDENTIAL = re.compile(
    r"PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|ACCESS_KEY|KEY_ID|USERNAME|CREDENTIAL|AUTH|CERT",
    re.IGNORECASE,
)
#: files of credentials clients read by themselves, pointed at an empty file meanwhile
_CREDENTIAL_FILES = ("NETRC", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]*@")


@dataclass(frozen=True)
class SyncResult:
    """What ``sync`` did with one journal file.

    ``outcome`` is one of :data:`OUTCOMES`: ``delivered`` (everything sent; the journal is
    deleted), ``partial`` and ``failed`` (the rest stays for a later sync), ``live`` (another
    process holds it: its run, or another sync), ``damaged`` (moved aside to
    ``<name>.db.damaged``; what could be read was salvaged and delivered), ``refused`` (left
    untouched: ``error`` says why). ``error`` is a one-line reason or note.
    """

    path: Path
    kind: str  # "run" or "deferred"
    run_id: str | None
    outcome: str
    operations: int  # operations delivered
    error: str | None = None
    #: the backend the journal's metadata names (None when it could not be read): a run
    #: logged to several backends at once has one journal per backend, each replayed there
    backend: str | None = None


class _Refused(Exception):
    """This journal is not replayed (the reason is the message)."""


def _address_items(options: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in options.items():
        if isinstance(value, Mapping):
            yield from _address_items(value, f"{prefix}{key}.")
        elif _ADDRESS.search(str(key)) and value not in (None, ""):
            yield f"{prefix}{key}", value


def _without_addresses(options: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: _without_addresses(v) if isinstance(v, Mapping) else v
        for k, v in options.items()
        if isinstance(v, Mapping) or not _ADDRESS.search(str(k))
    }


def _without_credentials_named(options: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: _without_credentials_named(v) if isinstance(v, Mapping) else v
        for k, v in options.items()
        if not _CREDENTIAL.search(str(k))
    }


def _same_address(a: Any, b: Any) -> bool:
    """Equal as addresses: user information (credentials) and a trailing ``/`` aside."""

    def norm(value: Any) -> str | None:
        return None if value is None else _USERINFO.sub(r"\1", str(value)).rstrip("/")

    return norm(a) == norm(b)


@contextlib.contextmanager
def _without_credentials() -> Iterator[None]:
    """Withhold the environment's credentials (variables, netrc, AWS files) meanwhile."""
    saved = {k: v for k, v in os.environ.items() if _CREDENTIAL.search(k) or k in _CREDENTIAL_FILES}
    for key in saved:
        del os.environ[key]
    for key in _CREDENTIAL_FILES:
        os.environ[key] = os.devnull
    try:
        yield
    finally:
        for key in _CREDENTIAL_FILES:
            os.environ.pop(key, None)
        os.environ.update(saved)


def _get_tracker(
    cache: dict[str, Tracker], backend: str, options: dict[str, Any], trusted: bool
) -> Tracker:
    from trackkit.tracker import get_tracker

    key = json.dumps([backend, options, trusted], sort_keys=True, default=str)
    if key not in cache:
        cache[key] = get_tracker(backend, **options)
    return cache[key]


def _tracker(
    cache: dict[str, Tracker],
    meta: dict[str, Any],
    overrides: dict[str, Any],
    trust: bool,
) -> tuple[Tracker, str | None]:
    """The tracker to replay a journal with, and the journal's address if it is trusted.

    The journal's recorded addresses must be those the user's configuration (environment,
    defaults, ``overrides``) selects; otherwise it is refused, unless ``trust``.
    """
    from trackkit.tracker import TRACKER_OPTIONS

    backend, recorded = meta.get("backend"), meta.get("options")
    if not isinstance(backend, str) or not isinstance(recorded, dict):
        raise InvalidInput("the journal's metadata names no backend and options")
    # trackkit never records secrets nor its own options: a journal naming them is ignored
    # there (its own credentials would send the replay to its author's account)
    recorded = _without_credentials_named(
        {str(k): v for k, v in recorded.items() if k not in TRACKER_OPTIONS}
    )
    mine = _get_tracker(cache, backend, {**_without_addresses(recorded), **overrides}, False)
    ours = dict(_address_items(mine.backend.replay_options()))
    differ = [(k, v) for k, v in _address_items(recorded) if not _same_address(v, ours.get(k))]
    if not differ:
        return mine, None
    named = ", ".join(f"{k}={redact(str(v))}" for k, v in differ)
    if not trust:
        selected = ", ".join(f"{k}={redact(str(ours.get(k) or '(none)'))}" for k, _ in differ)
        raise _Refused(
            f"it names {named}, but your configuration selects {selected}; sync sends a "
            "journal only there. Give that address (-o, or the backend's environment "
            "variable), or replay it to the journal's address without your credentials with "
            "--trust-journal-address"
        )
    own = {k: v for k, v in overrides.items() if not _ADDRESS.search(k)}
    with _without_credentials():
        return _get_tracker(cache, backend, {**recorded, **own}, True), named


def _replay_deferred(journal: jn.Journal, tracker: Tracker) -> int:
    from trackkit.tracker import DEFERRABLE

    if tracker.backend.offline_registry() is not None:
        raise UnsupportedOperation(
            f"cannot replay registry changes to {tracker.backend.describe()}: its registry is "
            "offline in this mode too; run `trackkit sync` with the backend online"
        )
    done = 0
    while rows := journal.pending(100):
        for row in rows:
            seq, _, operation, _, _, _, args = row
            # a journal is untrusted input: replay only the registry calls trackkit defers,
            # with keyword arguments; anything else is set aside with the reason
            if operation not in DEFERRABLE:
                journal.reject(
                    [row],
                    f"{operation!r} is not a registry call trackkit defers "
                    f"({', '.join(DEFERRABLE)})",
                )
                continue
            try:
                arguments = json.loads(args or "{}")
                if not isinstance(arguments, dict):
                    raise InvalidInput("its arguments are not keyword arguments")
                getattr(tracker, operation)(**arguments)
            except (InvalidInput, NotFound, TypeError, ValueError) as e:
                journal.reject([row], redact(f"{type(e).__name__}: {e}"))
                continue
            journal.ack([seq])
            done += 1
    return done


def _named(meta: Mapping[str, Any]) -> str | None:
    """The backend a journal's (untrusted) metadata names, if it is a plain name."""
    name = meta.get("backend")
    return name if isinstance(name, str) and name.isidentifier() else None


def _one_line(text: str) -> str:
    return " ".join(redact(text).split())


def _sync_one(
    path: Path,
    backend: str | None,
    overrides: dict[str, Any],
    trust: bool,
    trackers: dict[str, Tracker],
) -> SyncResult | None:
    """Replay one journal file; None when there is nothing to report (gone, other backend)."""
    kind = "deferred" if path.name.startswith("deferred-") else "run"
    why = jn.untrusted_reason(path)
    if why == "gone":
        return None
    if why is not None:
        return SyncResult(path, kind, None, "refused", 0, _one_line(why))
    try:
        journal = jn.Journal(path, create=False, tolerant=True)
    except BlockingIOError:
        return SyncResult(path, kind, None, "live", 0, "in use by another process")
    except FileNotFoundError:
        return None  # another sync delivered it since the directory was listed
    except jn.Refused as e:
        return SyncResult(path, kind, None, "refused", 0, _one_line(str(e)))
    except sqlite3.DatabaseError as e:
        if not jn.is_damage(e):  # busy, or an I/O error: nothing wrong with the file itself
            return SyncResult(path, kind, None, "failed", 0, _one_line(f"{type(e).__name__}: {e}"))
        aside = jn.set_aside_unreadable(path)
        if aside is None:
            return None
        note = f"damaged: unreadable ({e}); moved to {aside.name}; nothing could be salvaged"
        return SyncResult(path, kind, None, "damaged", 0, _one_line(note))

    notes: list[str] = []
    damaged = False
    run_id: str | None = None
    try:
        try:
            meta = journal.meta()
        except (sqlite3.DatabaseError, ValueError):
            meta = {}
        if backend is not None and "backend" in meta and meta["backend"] != backend:
            journal.close()
            return None
        found = journal.examine()
        if found.problems:
            damaged = True
            reason = "; ".join(found.problems)
            aside, salvaged, saved = journal.set_aside(reason)
            notes.append(f"damaged: {reason}; moved to {aside.name}")
            if salvaged is None:
                notes.append("nothing can be replayed without its metadata")
                return SyncResult(path, kind, None, "damaged", 0, _one_line("; ".join(notes)))
            notes.append(f"{saved} operations salvaged, {found.lost} lost")
            journal = salvaged
            meta = journal.meta()
        journal.probe_write()
        kind = "deferred" if meta.get("kind") == "deferred" else "run"
        run_id = meta.get("run_id")
        tracker, trusted = _tracker(trackers, meta, overrides, trust)
    except (jn.Refused, _Refused) as e:
        journal.close()
        outcome = "damaged" if damaged else "refused"
        text = _one_line("; ".join([*notes, str(e)]))
        return SyncResult(path, kind, run_id, outcome, 0, text, _named(meta))
    except Exception as e:
        journal.close()
        notes.append(f"{type(e).__name__}: {e}")
        text = _one_line("; ".join(notes))
        return SyncResult(path, kind, run_id, "failed", 0, text, _named(meta))

    if trusted is not None:
        logger.warning(
            "trackkit: replaying %s to %s, the address it names (--trust-journal-address); "
            "no credentials from your environment are sent",
            path.name,
            trusted,
        )
        notes.append(f"sent to {trusted}, the journal's own address, without your credentials")
    before, refused_before = journal.count(), len(journal.rejected())
    try:
        with _without_credentials() if trusted is not None else contextlib.nullcontext():
            if kind == "deferred":
                _replay_deferred(journal, tracker)
                done = True
            else:
                if not meta.get("ended") and journal.count(jn.END) == 0:
                    # we hold its lock, so the process that logged this run is gone
                    journal.append([jn.Op(jn.END, ts=jn.now_ms(), text="KILLED")])
                    before += 1
                done = deliver(journal, tracker.backend, meta) or bool(meta.get("ended"))
        refused = len(journal.rejected())
        sent = before - journal.count() - (refused - refused_before)
        if refused:
            notes.append(f"{refused} operations refused, kept in {path.name}.rejected")
        run_id = meta.get("run_id") or run_id
        if done:
            journal.remove()
            outcome = "damaged" if damaged else "delivered"
        else:
            journal.close()
            outcome = "partial"
        shown = _one_line("; ".join(notes)) or None
        return SyncResult(path, kind, run_id, outcome, sent, shown, _named(meta))
    except Exception as e:
        sent = before - journal.count() - (len(journal.rejected()) - refused_before)
        journal.close()
        notes.append(f"{type(e).__name__}: {e}")
        text = _one_line("; ".join(notes))
        return SyncResult(path, kind, meta.get("run_id"), "failed", sent, text, _named(meta))


def sync(
    directory: str | os.PathLike[str] | None = None,
    backend: str | None = None,
    *,
    trust_addresses: bool = False,
    **options: Any,
) -> list[SyncResult]:
    """Replay every journal under the trackkit directory.

    Each journal is handled on its own: a damaged, foreign or unreadable one is reported and
    never stops the others.

    Args:
        directory: the trackkit directory (default ``$TRACKKIT_DIR``, else ``./.trackkit``).
        backend: only replay journals of this backend (default: all).
        trust_addresses: replay a journal that names another address than your configuration
            selects to that address (logged first), without the environment's credentials.
            By default such a journal is refused.
        **options: backend options, as for ``get_tracker`` (e.g. ``tracking_uri``); they
            make your configuration, with the environment. Give ``backend`` too when the
            directory holds journals of several backends.

    Returns:
        One SyncResult per journal file, in name order. Fully delivered journals are deleted.
    """
    results: list[SyncResult] = []
    trackers: dict[str, Tracker] = {}
    try:
        for path in sorted(jn.journal_dir(directory).glob("*.db")):
            try:
                result = _sync_one(path, backend, options, trust_addresses, trackers)
            except Exception as e:  # never let one journal stop the others
                text = _one_line(f"{type(e).__name__}: {e}")
                result = SyncResult(path, "run", None, "failed", 0, text)
            if result is not None:
                results.append(result)
    finally:
        for tracker in trackers.values():
            with contextlib.suppress(Exception):
                tracker.close()
    return results
