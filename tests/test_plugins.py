"""Plugin mechanics: registration, conflicts, suggestions, blocking, entry points, broken plugins.

Most tests build their own ``PluginManager(load_entry_points=False)`` so that what is installed
in the environment does not matter; the entry-point tests use the real discovery.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import site
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import trackkit
from trackkit import plugins
from trackkit.backend import Backend
from trackkit.entities import Metric, ParamValue, RunHandle
from trackkit.plugins import BLOCK_ENV, PluginManager

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "trackkit-example"


class FakeBackend(Backend):
    """A backend that only remembers what it was given."""

    name = "fake"

    def start_run(self, experiment: str | None, name: str | None, run_id: str | None) -> RunHandle:
        return RunHandle(id="1", name=name or "run", experiment=experiment or "Default")

    def end_run(self, run_id: str, status: str) -> None:
        pass

    def log_batch(
        self,
        run_id: str,
        params: Sequence[tuple[str, ParamValue]],
        metrics: Sequence[Metric],
        tags: Sequence[tuple[str, str]],
    ) -> None:
        pass


class OtherFakeBackend(FakeBackend):
    """A different class under the same name."""


class Provides:
    """A plugin object whose hook implementation returns the given classes."""

    def __init__(self, *classes: Any) -> None:
        self.classes = list(classes)

    @trackkit.hookimpl
    def trackkit_register_backends(self) -> list[Any]:
        return self.classes


def write_broken_plugin(tmp: Path) -> Path:
    """An installed distribution whose ``trackkit`` entry point raises on import."""
    (tmp / "broken_plugin.py").write_text('raise ImportError("needs the missing SDK xyz")\n')
    info = tmp / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[trackkit]\nbroken = broken_plugin\n")
    return tmp


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    monkeypatch.syspath_prepend(str(write_broken_plugin(site_dir)))
    importlib.invalidate_caches()


# -- registration -------------------------------------------------------------------------------
def test_registering_a_plugin_object_adds_its_backend() -> None:
    pm = PluginManager(load_entry_points=False)
    assert pm.backends() == {}
    pm.register(Provides(FakeBackend), "fake-plugin", "fake-dist", "1.2")
    assert pm.backends() == {"fake": FakeBackend}
    assert pm.backend_class("fake") is FakeBackend
    assert pm.plugins() == [("fake-plugin", "fake-dist", "1.2")]


def test_a_plugin_registered_on_the_process_manager_serves_get_tracker() -> None:
    plugins.get_plugin_manager().register(Provides(FakeBackend), "fake-plugin")
    assert "fake" in trackkit.available_backends()
    tracker = trackkit.get_tracker("fake")
    assert isinstance(tracker.backend, FakeBackend)
    with tracker.start_run(experiment="e") as run:
        run.log_metric("m", 1.0)
    assert run.status == "FINISHED"


def test_two_plugins_registering_one_name_raise_naming_both() -> None:
    pm = PluginManager(load_entry_points=False)
    pm.register(Provides(FakeBackend), "first-plugin")
    pm.register(Provides(OtherFakeBackend), "second-plugin")
    with pytest.raises(trackkit.TrackkitError) as info:
        pm.backends()
    message = str(info.value)
    assert "'fake'" in message
    assert "first-plugin" in message and "second-plugin" in message
    assert BLOCK_ENV in message


def test_one_class_registered_by_two_plugins_is_not_a_conflict() -> None:
    pm = PluginManager(load_entry_points=False)
    pm.register(Provides(FakeBackend), "first-plugin")
    pm.register(Provides(FakeBackend), "second-plugin")
    assert pm.backends() == {"fake": FakeBackend}


@pytest.mark.parametrize(
    "registered", [dict, "fake", FakeBackend()], ids=["other-class", "string", "instance"]
)
def test_registering_something_other_than_a_backend_class_raises(registered: Any) -> None:
    pm = PluginManager(load_entry_points=False)
    pm.register(Provides(registered), "odd-plugin")
    with pytest.raises(
        trackkit.TrackkitError, match=r"'odd-plugin'.*not a trackkit\.backend\.Backend"
    ):
        pm.backends()


def test_an_unknown_name_suggests_the_closest_backend() -> None:
    pm = PluginManager(load_entry_points=False)
    pm.register(importlib.import_module("trackkit.backends.mlflow"), "mlflow", "trackkit")
    with pytest.raises(trackkit.UnknownBackendError, match=r"did you mean 'mlflow'\?") as info:
        pm.backend_class("mlfow")
    assert isinstance(info.value, LookupError)
    assert "Available: mlflow" in str(info.value)
    with pytest.raises(trackkit.UnknownBackendError, match=r"did you mean 'mlflow'\?"):
        trackkit.get_tracker("mlfow")


# -- blocking -----------------------------------------------------------------------------------
def test_blocking_the_builtin_plugin_removes_its_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "mlflow" in trackkit.available_backends()
    monkeypatch.setenv(BLOCK_ENV, "some-other, mlflow")
    plugins.reset()
    assert plugins.blocked_names() == ["some-other", "mlflow"]
    assert "mlflow" not in trackkit.available_backends()
    manager = plugins.get_plugin_manager()
    assert manager.pm.is_blocked("mlflow") and manager.pm.get_plugin("mlflow") is None
    with pytest.raises(trackkit.UnknownBackendError, match="'mlflow'"):
        trackkit.get_tracker("mlflow")


# -- entry points -------------------------------------------------------------------------------
def test_the_builtin_backend_comes_from_trackkits_own_entry_point() -> None:
    [ep] = [ep for ep in metadata.entry_points(group="trackkit") if ep.name == "mlflow"]
    assert ep.value == "trackkit.backends.mlflow"
    assert ep.dist is not None and ep.dist.name == "trackkit"
    pm = PluginManager()
    assert ("mlflow", "trackkit", metadata.version("trackkit")) in pm.plugins()
    assert pm.backend_class("mlflow").__module__ == "trackkit.backends.mlflow"


@pytest.mark.usefixtures("broken_plugin")
def test_a_broken_plugin_names_itself_and_how_to_block_it() -> None:
    assert "broken" in {ep.name for ep in metadata.entry_points(group="trackkit")}
    with pytest.raises(trackkit.TrackkitError) as info:
        PluginManager()
    message = str(info.value)
    assert "'broken'" in message and "broken-plugin" in message
    assert f"{BLOCK_ENV}=broken" in message
    assert "needs the missing SDK xyz" in message
    assert isinstance(info.value.__cause__, ImportError)
    with pytest.raises(trackkit.TrackkitError, match="'broken'"):
        trackkit.available_backends()


@pytest.mark.usefixtures("broken_plugin")
def test_a_blocked_broken_plugin_is_never_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BLOCK_ENV, "broken")
    plugins.reset()
    assert "mlflow" in trackkit.available_backends()
    assert "broken_plugin" not in sys.modules


# -- an installed third-party plugin -------------------------------------------------------------
def _install_example() -> None:
    """Install examples/trackkit-example (editable) into this interpreter's environment."""
    path = str(EXAMPLE)
    if importlib.util.find_spec("pip") is not None:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "-e", path]
    elif shutil.which("uv"):
        cmd = ["uv", "pip", "install", "--python", sys.executable, "--no-deps", "-e", path]
    elif importlib.util.find_spec("uv") is not None:  # the uv package, without uv on PATH
        cmd = [sys.executable, "-m", "uv", "pip", "install", "--python", sys.executable]
        cmd += ["--no-deps", "-e", path]
    else:
        pytest.fail("installing the example plugin needs pip or uv in this environment")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    # The editable install is a .pth file, which Python reads only at start-up: read it now,
    # for the rest of this process, which from now on has the plugin's entry point installed.
    importlib.invalidate_caches()
    site.addsitedir(sysconfig.get_paths()["purelib"])
    if importlib.util.find_spec("trackkit_example") is None:
        sys.path.append(str(EXAMPLE / "src"))
    importlib.invalidate_caches()


def test_the_installed_example_plugin_is_found_through_its_entry_point(tmp_path: Path) -> None:
    declared = any(ep.name == "example" for ep in metadata.entry_points(group="trackkit"))
    if not declared or importlib.util.find_spec("trackkit_example") is None:
        _install_example()
    [ep] = [ep for ep in metadata.entry_points(group="trackkit") if ep.name == "example"]
    assert ep.value == "trackkit_example"
    assert ep.dist is not None and ep.dist.name == "trackkit-example"
    assert "example" in trackkit.available_backends()
    assert ("example", "trackkit-example") in [
        p[:2] for p in plugins.get_plugin_manager().plugins()
    ]

    tracker = trackkit.get_tracker("example", root=tmp_path / "runs")
    with tracker.start_run(experiment="plugin-check") as run:
        run.log_param("alpha", 0.5)
        run.log_metric("loss", 0.25)
    run_dir = tmp_path / "runs" / "plugin-check" / run.id
    assert json.loads((run_dir / "params.json").read_text()) == {"alpha": "0.5"}
    [point] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert (point["key"], point["value"], point["step"]) == ("loss", 0.25, 0)
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "FINISHED"

    # A fresh interpreter finds it through the entry point too.
    fresh = subprocess.run(
        [sys.executable, "-c", "import trackkit; print(trackkit.available_backends())"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fresh.returncode == 0, fresh.stderr
    assert "'example'" in fresh.stdout
