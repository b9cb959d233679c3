"""The ``trackkit`` command: which backends and plugins are installed, and what they can do.

::

    trackkit backends [--json]   # each backend: SDK installed?, capabilities, providing plugin
    trackkit plugins [--json]    # each plugin: distribution, version, blocked?
    trackkit sync [--dir DIR] [--backend NAME] [-o KEY=VALUE] [--trust-journal-address]
    trackkit copy --from NAME [-o K=V] --to NAME [-o K=V] [--experiment E] [--run ID] [--models]
                  [--into E] [--dry-run] [--quiet] [--json] [--outside-files]
                                                    # or: copy NEPTUNE_PATH --to NAME
    trackkit runs [EXPERIMENT ...] [--filter F] [--order-by K] [--columns C] [--max N]
    trackkit compare RUN_ID [RUN_ID ...] [--only-changed]
    trackkit history RUN_ID KEY      # each: [--backend NAME] [-o KEY=VALUE] [--format F]
    trackkit --version

Every command is declared in :func:`build_parser`. Errors are one line; ``--debug`` or
``TRACKKIT_DEBUG=1`` shows the traceback.

It loads plugins but imports no SDK: whether a backend's SDK is installed is checked with
:func:`importlib.util.find_spec`, which locates a module without running it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any, TextIO

from trackkit import __version__, env, plugins
from trackkit._secrets import redact, scrub
from trackkit.errors import InvalidInput, NotFound, TrackkitError, UnknownBackendError

if TYPE_CHECKING:
    from trackkit.backend import Backend
    from trackkit.tracker import Tracker

PROG = "trackkit"


# -- what the commands report --------------------------------------------------------------------
def sdk_installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it (or any parent package)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    # find_spec("a.b") would import package "a"; walk the path finder instead.
    name = top
    for part in rest:
        if spec is None or spec.submodule_search_locations is None:
            return False
        name = f"{name}.{part}"
        spec = importlib.machinery.PathFinder.find_spec(name, list(spec.submodule_search_locations))
    return spec is not None


def install_command(cls: type[Backend]) -> str:
    """The command that installs a backend's SDK."""
    if cls.extra:
        return f"pip install 'trackkit[{cls.extra}]'"
    return f"pip install {cls.sdk}"


def backend_rows() -> list[dict[str, Any]]:
    """One dict per registered backend, in name order."""
    manager = plugins.get_plugin_manager()
    rows = []
    for name, cls in manager.backends().items():
        plugin = manager.provider(name)
        dist, version = manager.distributions.get(plugin, ("", ""))
        installed = None if cls.sdk is None else sdk_installed(cls.sdk)
        rows.append(
            {
                "name": name,
                "class": f"{cls.__module__}.{cls.__qualname__}",
                "sdk": cls.sdk,
                "sdk_installed": installed,
                "install": install_command(cls) if installed is False else None,
                "capabilities": cls.capabilities.as_dict(),
                "plugin": plugin,
                "distribution": dist,
                "version": version,
            }
        )
    return rows


def _entry_point_dists() -> dict[str, tuple[str, str]]:
    """Plugin name -> (distribution, version) of every declared entry point, none loaded."""
    found: dict[str, tuple[str, str]] = {}
    for ep in metadata.entry_points(group=plugins.ENTRY_POINT_GROUP):
        dist = ep.dist
        found.setdefault(ep.name, (dist.name, dist.version) if dist else ("", ""))
    return found


def plugin_rows() -> list[dict[str, Any]]:
    """One dict per registered plugin, then one per plugin blocked with the env variable."""
    manager = plugins.get_plugin_manager()
    rows: list[dict[str, Any]] = [
        {"name": name, "distribution": dist, "version": version, "blocked": False}
        for name, dist, version in manager.plugins()
    ]
    declared = _entry_point_dists()
    for name in plugins.blocked_names():
        dist, version = declared.get(name, ("", ""))
        rows.append({"name": name, "distribution": dist, "version": version, "blocked": True})
    return rows


# -- output ---------------------------------------------------------------------------------------
def _table(header: Sequence[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in [list(header), *rows]) for i in range(len(header))]
    for row in [list(header), *rows]:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _from(row: dict[str, Any]) -> str:
    dist = " ".join(p for p in (row["distribution"], row["version"]) if p)
    return f"{row['plugin']} ({dist})" if dist else row["plugin"]


def _sdk_text(row: dict[str, Any]) -> str:
    if row["sdk"] is None:
        return "none needed"
    if row["sdk_installed"]:
        return f"{row['sdk']}: installed"
    return f"{row['sdk']}: missing; {row['install']}"


def cmd_backends(args: argparse.Namespace, out: TextIO) -> int:
    rows = backend_rows()
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    if not rows:
        out.write(f"no backends registered (see `{PROG} plugins`)\n")
        return 0
    table = [
        [
            r["name"],
            _sdk_text(r),
            ",".join(k for k, v in r["capabilities"].items() if v) or "-",
            _from(r),
        ]
        for r in rows
    ]
    _table(["BACKEND", "SDK", "CAPABILITIES", "PLUGIN"], table, out)
    return 0


def cmd_plugins(args: argparse.Namespace, out: TextIO) -> int:
    rows = plugin_rows()
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    table = [
        [
            r["name"],
            r["distribution"] or "-",
            r["version"] or "-",
            f"blocked ({plugins.BLOCK_ENV})" if r["blocked"] else "loaded",
        ]
        for r in rows
    ]
    if table:
        _table(["PLUGIN", "DISTRIBUTION", "VERSION", "STATUS"], table, out)
    else:
        out.write("no plugins registered\n")
    return 0


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


#: ``trackkit sync``'s exit status when journals were refused (left untouched) and none failed
SYNC_REFUSED = 3


def cmd_sync(args: argparse.Namespace, out: TextIO) -> int:
    """Replay journals; one line each. Exit 1 if one failed or was partly delivered (a later
    sync retries it), else 3 if one was refused (it needs your decision), else 0."""
    from trackkit.replay import sync

    # what a backend's SDK prints while replaying (MLflow: a "View run" line per run ended)
    # goes to stderr: stdout holds one line per journal
    with contextlib.redirect_stdout(sys.stderr):
        results = sync(
            args.dir,
            args.backend,
            trust_addresses=args.trust_journal_address,
            **dict(args.option),
        )
    if args.json:
        rows = [{**r.__dict__, "path": str(r.path)} for r in results]
        json.dump(rows, out, indent=2)
        out.write("\n")
    elif not results:
        out.write("nothing to sync\n")
    else:
        table = [
            [
                r.path.name,
                r.kind,
                r.run_id or "-",
                r.outcome,
                str(r.operations),
                r.backend or "-",  # a run logged to several backends: one journal per backend
                r.error or "",
            ]
            for r in results
        ]
        _table(["JOURNAL", "KIND", "RUN", "OUTCOME", "SENT", "BACKEND", "REASON"], table, out)
    if any(r.outcome in ("failed", "partial") for r in results):
        return 1
    return SYNC_REFUSED if any(r.outcome == "refused" for r in results) else 0


class _Side(argparse.Action):
    """``--from NAME`` / ``--to NAME``: the ``-o`` options after it belong to that side."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} is given twice")
        setattr(namespace, self.dest, values)
        namespace.side = "from" if self.dest == "source_backend" else "to"


class _SideOption(argparse.Action):
    """``-o KEY=VALUE``: an option of the backend named just before it (--from or --to)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        side = getattr(namespace, "side", None)
        if side is None:
            parser.error(
                f"{option_string} {values[0]}={values[1]}: put each -o after the --from NAME "
                "or --to NAME it belongs to"
            )
        # a new list: the parser's default one is shared by every parse
        setattr(namespace, f"{side}_options", [*getattr(namespace, f"{side}_options"), values])


def _copy_line(r: Any) -> str:
    target = r.run_id or "-"
    return (
        f"{r.source_id} -> {target} ({r.experiment}): {r.outcome}, {r.params} params, "
        f"{r.metric_points} metric points, {r.tags} tags, {r.files} files, {r.models} models, "
        f"{r.status}" + (f"; ERROR {r.error}" if r.error else "")
    )


def cmd_copy(args: argparse.Namespace, out: TextIO) -> int:
    """Copy runs (and registered models) between backends; exit status 1 if any failed."""
    from trackkit import copy_runs, get_tracker

    if (args.source is None) == (args.source_backend is None):
        raise InvalidInput(
            "name the source once: --from BACKEND [-o KEY=VALUE ...], or the path of Neptune "
            "offline data"
        )
    if args.source is not None and args.experiments and args.into:
        raise InvalidInput("with a Neptune offline path, --experiment is the destination: use one")
    if args.source is None and args.include_system:
        raise InvalidInput("--include-system applies to Neptune offline data (a path) only")
    from_options = dict(args.from_options)
    if args.outside_files:
        if args.source is None and args.source_backend != "neptune":
            raise InvalidInput(
                "--outside-files applies to Neptune offline data: a path, or --from neptune"
            )
        if args.source is None:
            from_options["outside_files"] = True
    # the copy can always be done again (it resumes), so it needs no journal for replay: the
    # destination's journals go to a directory of their own, and a failure is an error
    with tempfile.TemporaryDirectory(prefix="trackkit-copy-") as journals:
        destination = get_tracker(
            args.backend, strict=True, journal_dir=journals, **dict(args.to_options)
        )
        source: Any = args.source
        try:
            if source is None:
                source = get_tracker(args.source_backend, journal_dir=journals, **from_options)
            legacy = args.source is not None
            into = args.into or (args.experiments[0] if legacy and args.experiments else None)
            with contextlib.redirect_stdout(sys.stderr):  # what SDKs print is not the report
                report = copy_runs(
                    source,
                    destination,
                    experiments=None if legacy else args.experiments or None,
                    run_ids=args.runs,
                    into=into,
                    models=args.models,
                    dry_run=args.dry_run,
                    progress=False if args.quiet else None,
                    include_system=args.include_system,
                    outside_files=args.outside_files and args.source is not None,
                )
        finally:
            if args.source is None and not isinstance(source, (str, type(None))):
                source.close()
            destination.close()
    if args.json:
        rows = {
            "runs": [r.__dict__ for r in report.runs],
            "models": [m.__dict__ for m in report.models],
            "dry_run": report.dry_run,
        }
        json.dump(rows["runs"] if args.source is not None else rows, out, indent=2, default=list)
        out.write("\n")
    elif not report.runs:
        out.write("no runs found to copy\n")
    else:
        if report.dry_run:
            out.write("dry run: nothing was written\n")
        for r in report.runs:
            out.write(_copy_line(r) + "\n")
            for note in r.notes:
                out.write(f"  note: {note}\n")
        for m in report.models:
            out.write(
                f"model {m.name}: versions created {list(m.created)}, skipped "
                f"{list(m.skipped)}, aliases {list(m.aliases)}"
                + (f"; ERROR {m.error}" if m.error else "")
                + "\n"
            )
            for note in m.notes:
                out.write(f"  note: {note}\n")
    return 1 if report.failed else 0


# -- reading runs: runs, compare, history ----------------------------------------------------------
def _reader(args: argparse.Namespace) -> Tracker:
    """A Tracker on the backend and options the command line names."""
    from trackkit import get_tracker

    return get_tracker(args.backend, **dict(args.option))


#: the columns ``trackkit runs`` shows without --columns (then every metric and param)
DEFAULT_RUN_COLUMNS = ("run_id", "run_name", "status", "start_time")


def _pick_columns(available: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """The columns ``--columns`` names, in its order; a name may hold ``*`` (``metrics.*``).

    Raises:
        InvalidInput: a name matches no column (the message suggests the closest).
    """
    import difflib
    import fnmatch

    if not wanted:
        keys = [c for c in available if c.startswith(("metrics.", "params."))]
        return [*DEFAULT_RUN_COLUMNS, *keys]
    picked: list[str] = []
    for name in wanted:
        found = [c for c in available if fnmatch.fnmatchcase(c, name)]
        if not found and not any(ch in name for ch in "*?["):
            close = difflib.get_close_matches(name, available, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidInput(f"no run found has a column {name!r}{hint}")
        picked += [c for c in found if c not in picked]
    return picked


def cmd_runs(args: argparse.Namespace, out: TextIO) -> int:
    """Print the runs a search finds, one per row (columns as in ``search_runs``'s DataFrame)."""
    from trackkit import frames, output

    tracker = _reader(args)
    try:
        runs = tracker.search_runs(
            args.experiments or None,
            filter=args.filter,
            order_by=args.order_by or None,
            max_results=args.max,
        )
    finally:
        tracker.close()
    records = [frames.run_record(r, tracker.backend.name) for r in runs]
    wanted = [c.strip() for text in args.columns for c in text.split(",") if c.strip()]
    columns = _pick_columns(frames.columns(records), wanted) if records else []
    if not records and args.format == "table":
        where = ", ".join(args.experiments) if args.experiments else "the default experiment"
        out.write(f"no runs found in {where}\n")
        return 0
    rows = [[r.get(c) for c in columns] for r in records]
    title = f"{len(rows)} run{'' if len(rows) == 1 else 's'}"
    output.write(columns, rows, args.format, out, title=title)
    return 0


def cmd_compare(args: argparse.Namespace, out: TextIO) -> int:
    """Print runs side by side: one column per run; their name, status, params and metrics."""
    from trackkit import output

    ids = list(dict.fromkeys(args.run_ids))
    tracker = _reader(args)
    try:
        runs = [tracker.get_run(run_id) for run_id in ids]
    finally:
        tracker.close()
    fields: dict[str, list[Any]] = {
        "run_name": [r.name for r in runs],
        "status": [r.status for r in runs],
    }
    for kind in ("params", "metrics"):
        keys = sorted({k for r in runs for k in getattr(r, kind)})
        for key in keys:
            fields[f"{kind}.{key}"] = [getattr(r, kind).get(key) for r in runs]
    if args.only_changed:
        fields = {
            name: values
            for name, values in fields.items()
            if name == "run_name" or len({repr(v) for v in values}) > 1
        }
    rows = [[name, *values] for name, values in fields.items()]
    output.write(["field", *ids], rows, args.format, out)
    return 0


def cmd_history(args: argparse.Namespace, out: TextIO) -> int:
    """Print every point of one metric of a run, in step order."""
    from datetime import datetime, timezone

    from trackkit import output

    tracker = _reader(args)
    try:
        points = tracker.get_metric_history(args.run_id, args.key)
    finally:
        tracker.close()
    rows = [
        [p.step, p.value, datetime.fromtimestamp(p.timestamp / 1000, tz=timezone.utc)]
        for p in points
    ]
    output.write(["step", "value", "timestamp"], rows, args.format, out, title=args.key)
    return 0


def _backend_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--backend",
        metavar="NAME",
        help="the backend to read (default $TRACKKIT_BACKEND, else mlflow)",
    )
    command.add_argument(
        "--option",
        "-o",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a backend option, as get_tracker takes it, e.g. "
        "-o tracking_uri=sqlite:///mlflow.db (repeat for more)",
    )
    command.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="a table (drawn with rich on a terminal, plain text in a pipe), CSV, or JSON "
        "(a list of objects)",
    )


# -- the parser: every command is declared here --------------------------------------------------
DEBUG_ENV = "TRACKKIT_DEBUG"
EPILOG = (
    "Errors are printed as one line; --debug (or TRACKKIT_DEBUG=1) shows the traceback. "
    "Exit status: 0 done, 1 failed, 2 usage error (a bad option, an unknown backend, "
    "invalid input, something named that does not exist); a command's --help tells its own."
)


def build_parser() -> argparse.ArgumentParser:
    """The ``trackkit`` parser with every subcommand (the CLI reference is generated from it)."""
    # --debug is accepted before and after the command; SUPPRESS keeps a subcommand's default
    # from overwriting a --debug given before it
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help=f"show the traceback of an error (also {DEBUG_ENV}=1)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect trackkit's backends and plugins; replay journals with `sync`; "
        "copy runs between backends with `copy`; read runs back with `runs`, `compare` and "
        "`history`.",
        epilog=EPILOG,
        parents=[debug],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    backends = commands.add_parser(
        "backends",
        parents=[debug],
        help="list backends: SDK status, install command, capabilities, plugin",
        description="List every registered backend: whether its SDK is installed (found "
        "without importing it), the command that installs it, what it can do, and the plugin "
        "that provides it.",
    )
    backends.add_argument("--json", action="store_true", help="print JSON")
    backends.set_defaults(run=cmd_backends)

    plugin_cmd = commands.add_parser(
        "plugins",
        parents=[debug],
        help=f"list plugins: distribution, version, blocked by {plugins.BLOCK_ENV}",
        description="List every trackkit plugin with its distribution and version, and the "
        f"plugins blocked with {plugins.BLOCK_ENV}.",
    )
    plugin_cmd.add_argument("--json", action="store_true", help="print JSON")
    plugin_cmd.set_defaults(run=cmd_plugins)

    sync_cmd = commands.add_parser(
        "sync",
        parents=[debug],
        help="replay journaled operations (after an outage, a kill, or offline work)",
        description="Replay the journals left in the trackkit directory: the rest of runs "
        "whose backend was unreachable or whose process was killed (such runs are ended "
        "KILLED), and registry calls made offline (W&B and Neptune). Nothing is sent twice. "
        "One line per journal: delivered, partial, failed, live (in use by another process), "
        "damaged (moved aside to <name>.db.damaged after salvaging what it held) or refused "
        "(left untouched: not your journal, read-only, or naming another address than your "
        "configuration selects), with the reason. Exit status 1 if a journal failed or was "
        "only partly delivered, else 3 if one was refused, else 0.",
    )
    sync_cmd.add_argument(
        "--dir", help="the trackkit directory (default $TRACKKIT_DIR or ./.trackkit)"
    )
    sync_cmd.add_argument("--backend", help="only journals of this backend (e.g. mlflow)")
    sync_cmd.add_argument(
        "--option",
        "-o",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a backend option of your configuration, e.g. -o tracking_uri=http://host:5000 "
        "(a journal naming another address is refused)",
    )
    sync_cmd.add_argument(
        "--trust-journal-address",
        action="store_true",
        help="replay a journal that names another address than your configuration to that "
        "address (shown first), without the credentials in your environment",
    )
    sync_cmd.add_argument("--json", action="store_true", help="print JSON")
    sync_cmd.set_defaults(run=cmd_sync)

    copy_cmd = commands.add_parser(
        "copy",
        parents=[debug],
        help="copy runs and registered models from one backend to another",
        description="Copy runs from one backend to another: params, every metric point at "
        "its step with its timestamp, tags, status, artifacts, models and parent links; with "
        "--models, registered models too. Each -o KEY=VALUE belongs to the --from or --to "
        "given before it, e.g. `trackkit copy --from mlflow -o tracking_uri=sqlite:///a.db "
        "--to wandb -o mode=offline`. Copying again creates nothing new and finishes a copy "
        "that was interrupted. The older form `trackkit copy PATH --to BACKEND` copies Neptune "
        "offline data read from disk (there, --experiment names the destination experiment). "
        "Exit status 1 if a run or model failed to copy.",
    )
    copy_cmd.set_defaults(side=None, from_options=[], to_options=[], source_backend=None)
    copy_cmd.add_argument(
        "source",
        nargs="?",
        help="Neptune offline data: a .neptune directory, a directory containing one, or one "
        "offline run directory (instead of --from)",
    )
    copy_cmd.add_argument(
        "--from",
        dest="source_backend",
        action=_Side,
        metavar="BACKEND",
        help="the source backend (its -o options follow it)",
    )
    copy_cmd.add_argument(
        "--to",
        dest="backend",
        required=True,
        action=_Side,
        metavar="BACKEND",
        help="the destination backend (its -o options follow it)",
    )
    copy_cmd.add_argument(
        "--option",
        "-o",
        type=_option,
        action=_SideOption,
        metavar="KEY=VALUE",
        help="an option of the backend named before it, as get_tracker takes it, e.g. "
        "-o tracking_uri=sqlite:///mlflow.db (repeat for more)",
    )
    copy_cmd.add_argument(
        "--experiment",
        dest="experiments",
        action="append",
        default=[],
        metavar="NAME",
        help="copy the runs of this source experiment (repeat; default: every experiment)",
    )
    copy_cmd.add_argument(
        "--run", dest="runs", action="append", metavar="ID", help="copy only this run (repeat)"
    )
    copy_cmd.add_argument(
        "--into",
        metavar="NAME",
        help="put every run into this destination experiment (default: its own)",
    )
    copy_cmd.add_argument(
        "--models",
        action="store_true",
        help="also copy the registered models whose versions come from the copied runs",
    )
    copy_cmd.add_argument(
        "--dry-run", action="store_true", help="read everything, write nothing; report the plan"
    )
    copy_cmd.add_argument(
        "--quiet", "-q", action="store_true", help="no progress bar (shown on a terminal only)"
    )
    copy_cmd.add_argument(
        "--include-system",
        action="store_true",
        help="Neptune offline data: also copy sys/, monitoring/ and source_code/ fields",
    )
    copy_cmd.add_argument(
        "--outside-files",
        action="store_true",
        help="Neptune offline data (a path, or --from neptune): also copy the files a run's "
        "logs name outside the folder it was made in; only for data you trust (an offline "
        "directory from elsewhere could name any file). A warning names each file read so",
    )
    copy_cmd.add_argument("--json", action="store_true", help="print JSON")
    copy_cmd.set_defaults(run=cmd_copy)

    runs_cmd = commands.add_parser(
        "runs",
        parents=[debug],
        help="list runs: a search, as a table, CSV or JSON",
        description="List the runs of one or more experiments, found and ordered as "
        "Tracker.search_runs finds them (MLflow's filter syntax, the same answer on every "
        "backend). Columns are named as in search_runs's DataFrame: run_id, run_name, status, "
        "start_time, end_time, metrics.<key>, params.<key>, tags.<key>, parent_id...",
    )
    runs_cmd.add_argument(
        "experiments",
        nargs="*",
        metavar="EXPERIMENT",
        help="the experiments to search (default $TRACKKIT_EXPERIMENT, else Default)",
    )
    runs_cmd.add_argument("--filter", help="e.g. \"metrics.rmse < 6.8 and params.model = 'lasso'\"")
    runs_cmd.add_argument(
        "--order-by",
        action="append",
        default=[],
        metavar="KEY",
        help="e.g. 'metrics.rmse ASC' (repeat for more keys; default: newest first)",
    )
    runs_cmd.add_argument(
        "--columns",
        action="append",
        default=[],
        metavar="C[,C...]",
        help="the columns to show, in order; * matches any characters (e.g. "
        "run_name,metrics.*,params.alpha; default: run_id, run_name, status, start_time, "
        "every metric and param)",
    )
    runs_cmd.add_argument(
        "--max", type=int, default=100, metavar="N", help="at most N runs (1 to 50000)"
    )
    _backend_options(runs_cmd)
    runs_cmd.set_defaults(run=cmd_runs)

    compare_cmd = commands.add_parser(
        "compare",
        parents=[debug],
        help="compare runs side by side: params and final metrics",
        description="Show runs side by side, one column per run: name, status, every param "
        "and the final value of every metric (a dash where a run has none).",
    )
    compare_cmd.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="the runs to compare")
    compare_cmd.add_argument(
        "--only-changed",
        action="store_true",
        help="show only the rows whose values differ between the runs",
    )
    _backend_options(compare_cmd)
    compare_cmd.set_defaults(run=cmd_compare)

    history_cmd = commands.add_parser(
        "history",
        parents=[debug],
        help="print every point of one metric of a run",
        description="Print every stored point of one metric of a run, in step order: its "
        "step, value and timestamp (UTC).",
    )
    history_cmd.add_argument("run_id", metavar="RUN_ID", help="the run")
    history_cmd.add_argument("key", metavar="KEY", help="the metric, e.g. rmse")
    _backend_options(history_cmd)
    history_cmd.set_defaults(run=cmd_history)
    return parser


#: errors that mean the command line asked for something that cannot be: exit status 2
USAGE_ERRORS = (UnknownBackendError, InvalidInput, NotFound)


def _debug(args: argparse.Namespace | None) -> bool:
    return env.flag(DEBUG_ENV) or bool(getattr(args, "debug", False))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    A trackkit error is printed as one line (``trackkit: error: ...``), with status 2 for a
    usage error (see :data:`USAGE_ERRORS`) and 1 otherwise; ``--debug`` or ``TRACKKIT_DEBUG=1``
    lets it raise, with its traceback (secrets in it and in its causes masked). Other
    exceptions are bugs and always raise.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        status: int = args.run(args, sys.stdout)
        sys.stdout.flush()
    except TrackkitError as e:
        if _debug(args):
            # raised below, outside this handler, so the stand-in keeps its own chain
            shown = scrub(e)
        else:
            print(f"{PROG}: error: {' '.join(redact(str(e)).split())}", file=sys.stderr)
            return 2 if isinstance(e, USAGE_ERRORS) else 1
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly, as other tools do
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        if _debug(args):
            raise
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    else:
        return status
    raise shown  # the traceback of a trackkit error, its SDK causes redacted too


if __name__ == "__main__":
    raise SystemExit(main())
