"""What the flow tells its user to type next, so that each line runs as printed.

Every command is printed for the shell the flow was started from: the tools are those of the
Python environment running the flow (``.venv/bin/mlflow`` when it is not activated), paths are
relative to the current directory when they are below it, and the serving command carries the
settings that chose the backend, so that the service loads the model this run registered.
Secrets (API keys, tokens, passwords in URIs) are never printed. A line that is not a command
starts with ``#``, and a command's explanation follows it as a shell comment, so that a whole
line can be pasted.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import trackkit

#: the settings, read by ``trackkit.get_tracker()`` and the backends, that decide where a
#: process finds runs and models; the serving command repeats those that are set
SETTINGS = (
    "TRACKKIT_BACKEND",
    "TRACKKIT_OFFLINE",
    "TRACKKIT_DIR",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "WANDB_MODE",
    "WANDB_DIR",
    "WANDB_ENTITY",
    "WANDB_BASE_URL",
    "NEPTUNE_MODE",
    "NEPTUNE_PROJECT",
    "NEPTUNE_DATA_DIRECTORY",
    "PYTHONPATH",  # where `examples` was found, when not in the current directory
)
#: secrets the service needs as well, never printed
SECRETS = ("WANDB_API_KEY", "NEPTUNE_API_TOKEN", "MLFLOW_TRACKING_PASSWORD")
_PASSWORD = re.compile(r"://([^:/@\s]*):[^@/\s]*@")
_EXTRA = re.compile(r"pip install 'trackkit\[([\w,-]+)\]'")


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` as typed from the current directory: relative below it, else absolute."""
    absolute = Path(path).absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def command(name: str) -> str:
    """How to run the console script ``name`` of this Python environment, from this shell.

    The bare name when the shell finds this environment's script first (an activated venv),
    else the script's path, else ``<python> -m <name>``.
    """
    bindir = Path(sys.executable).parent
    script = bindir / name
    if name in ("python", "python3"):
        script = Path(sys.executable)
    found = shutil.which(name)
    if found and script.exists() and os.path.samefile(found, script):
        return name
    if script.exists():
        return shlex.quote(shown(script))
    return f"{command('python')} -m {name}"


def _no_password(uri: str) -> str:
    return _PASSWORD.sub(r"://\1@", uri)


def _quote(value: str) -> str:
    return shlex.quote(_no_password(value))


def _sqlite_uri(uri: str) -> str:
    """A ``sqlite:///`` URI with its path as typed from here (``sqlite:///mlflow.db``)."""
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{shown(uri[len('sqlite:///') :])}"
    return uri


def _mode(tracker: trackkit.Tracker) -> str | None:
    mode = getattr(tracker.backend, "mode", None)
    return mode if isinstance(mode, str) else None


def service_env(tracker: trackkit.Tracker) -> dict[str, str]:
    """The settings another process needs to find what ``tracker`` wrote, as text.

    The settings of this process that are set, the backend's name, and MLflow's store when the
    tracker was given one in code.
    """
    settings = {name: os.environ[name] for name in SETTINGS if os.environ.get(name)}
    if tracker.backend_name != "mlflow" or "TRACKKIT_BACKEND" in settings:
        settings["TRACKKIT_BACKEND"] = tracker.backend_name
    if tracker.backend_name == "mlflow":
        options = tracker.backend.replay_options()
        uri = str(options.get("tracking_uri") or "")
        if uri and _sqlite_uri(uri) != "sqlite:///mlflow.db":
            settings["MLFLOW_TRACKING_URI"] = _sqlite_uri(uri)
        registry = str(options.get("registry_uri") or "")
        if registry and registry != uri:
            settings["MLFLOW_REGISTRY_URI"] = _sqlite_uri(registry)
    return settings


def _prefix(settings: dict[str, str]) -> str:
    return "".join(f"{name}={_quote(value)} " for name, value in settings.items())


def look_hints(tracker: trackkit.Tracker, experiment: str) -> list[str]:
    """Where to look at the runs and the registered model, one line each."""
    name, mode = tracker.backend_name, _mode(tracker)
    options = tracker.backend.replay_options()
    if name == "mlflow":
        uri = str(options.get("tracking_uri") or "sqlite:///mlflow.db")
        if uri.startswith(("http://", "https://")):
            return [f"# open {_no_password(uri)} in a browser"]
        return [
            f"{command('mlflow')} ui --backend-store-uri {_quote(_sqlite_uri(uri))}"
            "   # then open http://127.0.0.1:5000"
        ]
    if name == "wandb":
        runs = Path(str(options.get("dir") or ".trackkit")) / "wandb"
        if mode == "offline":
            return [
                f"{command('wandb')} leet {shlex.quote(shown(runs))}"
                "   # browse the offline runs in the terminal",
                f"{command('wandb')} sync {shlex.quote(shown(runs))}/offline-run-*"
                f" && {command('trackkit')} sync"
                "   # upload the runs, then the registry calls (needs a W&B API key)",
            ]
        base = os.environ.get("WANDB_BASE_URL") or "https://wandb.ai"
        return [f"# open {base}: the W&B project '{experiment}' (one project per experiment)"]
    if name == "neptune":
        if mode == "debug":
            return [
                "# nothing: Neptune's debug mode kept the runs in this process's memory only; "
                "run with TRACKKIT_OFFLINE=1 to keep them on disk"
            ]
        data = Path(str(options.get("data_dir") or ".trackkit/.neptune"))
        if mode == "offline":
            lines = []
            if importlib.util.find_spec("mlflow") is not None:
                lines.append(
                    f"{command('trackkit')} copy {shlex.quote(shown(data))} --to mlflow "
                    "-o tracking_uri=sqlite:///.trackkit/neptune-runs.db && "
                    f"{command('mlflow')} ui --backend-store-uri sqlite:///.trackkit/neptune-runs.db"
                    "   # the offline runs, copied into MLflow's UI"
                )
            where = shlex.quote(shown(data.parent)) if data.name == ".neptune" else "."
            lines.append(
                f"{command('neptune')} sync --path {where} --project WORKSPACE/PROJECT"
                f" && {command('trackkit')} sync"
                "   # upload to a Neptune server, then the registry calls"
            )
            return lines
        project = str(options.get("project") or "")
        return [f"# open the Neptune project {project} on your Neptune server"]
    return [f"# the {name} backend's own UI ({tracker!r})"]


def serve_hints(tracker: trackkit.Tracker, model_uri: str, default_uri: str) -> list[str]:
    """The commands that serve the production model and ask it for a prediction."""
    if tracker.backend_name == "neptune" and _mode(tracker) == "debug":
        return [
            "# not from another process: Neptune's debug mode keeps the model in this process's "
            "memory (run with TRACKKIT_OFFLINE=1 to serve it)"
        ]
    settings = service_env(tracker)
    if model_uri != default_uri:
        settings["RIDE_DURATION_MODEL_URI"] = model_uri
    lines = [
        f"{_prefix(settings)}{command('gunicorn')} --bind 127.0.0.1:9696 "
        "examples.ride_duration.service:app"
    ]
    secrets = [name for name in SECRETS if os.environ.get(name)]
    if secrets:
        lines.append(f"# with {' and '.join(secrets)} set in this shell, as for this run")
    return lines


def error_lines(error: trackkit.TrackkitError) -> list[str]:
    """A trackkit error as one line, and the install command for this environment if one is missing."""
    lines = [f"error: {' '.join(str(error).split())}"]
    found = _EXTRA.search(str(error))
    if isinstance(error, trackkit.MissingDependencyError) and found:
        extra = found[1]
        source = Path(trackkit.__file__).resolve().parents[2]
        if (source / "pyproject.toml").is_file():  # installed from a checkout (pip install -e)
            target = "-e " + shlex.quote(f"{shown(source)}[{extra}]")
        else:
            target = f"'trackkit[{extra}]'"
        lines.append(f"install it here with: {command('python')} -m pip install {target}")
    return lines
