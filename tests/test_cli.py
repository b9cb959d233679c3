"""The ``trackkit`` command: in-process through ``trackkit.cli.main``, and as a subprocess."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import trackkit
from trackkit import cli, plugins
from trackkit.backends.mlflow import MLflowBackend
from trackkit.cli import build_parser, main, sdk_installed
from trackkit.plugins import BLOCK_ENV

# What `backends` prints: the capabilities the class declares True, in declaration order.
MLFLOW_CAPABILITIES = ",".join(k for k, v in MLflowBackend.capabilities.as_dict().items() if v)


def rows(text: str) -> dict[str, list[str]]:
    """A table's rows by first column (columns are separated by two or more spaces)."""
    return {
        cells[0]: cells
        for line in text.splitlines()[1:]
        if (cells := re.split(r"\s{2,}", line.strip()))
    }


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- backends -----------------------------------------------------------------------------------
def test_backends_lists_mlflow_with_sdk_status_capabilities_and_plugin(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, "backends")
    assert (code, err) == (0, "")
    assert out.split()[:4] == ["BACKEND", "SDK", "CAPABILITIES", "PLUGIN"]
    _, sdk, capabilities, plugin = rows(out)["mlflow"]
    installed = importlib.util.find_spec("mlflow") is not None
    assert sdk == (
        "mlflow: installed" if installed else "mlflow: missing; pip install 'trackkit[mlflow]'"
    )
    assert capabilities == MLFLOW_CAPABILITIES
    assert {"artifacts", "models", "registry", "search_runs", "resume"} <= set(
        capabilities.split(",")
    )
    assert plugin == f"mlflow (trackkit {metadata.version('trackkit')})"


def test_backends_json_parses_and_carries_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "backends", "--json")
    assert code == 0
    [mlflow] = [b for b in json.loads(out) if b["name"] == "mlflow"]
    assert mlflow == {
        "name": "mlflow",
        "class": "trackkit.backends.mlflow.MLflowBackend",
        "sdk": "mlflow",
        "sdk_installed": sdk_installed("mlflow"),
        "install": None if sdk_installed("mlflow") else "pip install 'trackkit[mlflow]'",
        "capabilities": MLflowBackend.capabilities.as_dict(),
        "plugin": "mlflow",
        "distribution": "trackkit",
        "version": metadata.version("trackkit"),
    }


def test_backends_shows_the_install_command_when_the_sdk_is_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails
    code, out, _ = run_cli(capsys, "backends")
    assert code == 0
    assert rows(out)["mlflow"][1] == "mlflow: missing; pip install 'trackkit[mlflow]'"
    code, out, _ = run_cli(capsys, "backends", "--json")
    [mlflow] = [b for b in json.loads(out) if b["name"] == "mlflow"]
    assert mlflow["sdk_installed"] is False
    assert mlflow["install"] == "pip install 'trackkit[mlflow]'"


def test_sdk_check_finds_modules_without_importing_them() -> None:
    script = (
        "import sys; from trackkit.cli import sdk_installed; "
        "found = [sdk_installed(m) for m in ('xml.dom.minidom', 'xml.nope', 'no_such_sdk_xyz')]; "
        "print(found, [m for m in ('xml', 'xml.dom', 'xml.dom.minidom') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[True, False, False] []"


def test_backends_without_an_sdk_and_with_a_missing_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Subclasses of a real backend that differ only in their SDK declarations.
    no_sdk = type("NoSdk", (MLflowBackend,), {"name": "no-sdk", "sdk": None, "extra": None})
    missing_sdk = type(
        "MissingSdk",
        (MLflowBackend,),
        {"name": "missing-sdk", "sdk": "no_such_sdk_xyz", "extra": "xyz"},
    )

    class Plugin:
        @trackkit.hookimpl
        def trackkit_register_backends(self) -> list[type[MLflowBackend]]:
            return [no_sdk, missing_sdk]

    plugins.get_plugin_manager().register(Plugin(), "test-plugin", "test-dist", "9.9")
    code, out, _ = run_cli(capsys, "backends")
    assert code == 0
    table = rows(out)
    assert table["no-sdk"][1] == "none needed"
    assert table["missing-sdk"][1] == "no_such_sdk_xyz: missing; pip install 'trackkit[xyz]'"
    assert table["missing-sdk"][3] == "test-plugin (test-dist 9.9)"


# -- plugins ------------------------------------------------------------------------------------
def test_plugins_lists_the_builtin_plugin_from_trackkit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    assert out.split()[:4] == ["PLUGIN", "DISTRIBUTION", "VERSION", "STATUS"]
    assert rows(out)["mlflow"] == ["mlflow", "trackkit", metadata.version("trackkit"), "loaded"]
    code, out, _ = run_cli(capsys, "plugins", "--json")
    assert code == 0
    assert {
        "name": "mlflow",
        "distribution": "trackkit",
        "version": metadata.version("trackkit"),
        "blocked": False,
    } in json.loads(out)


def test_a_blocked_plugin_shows_as_blocked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BLOCK_ENV, "mlflow")
    plugins.reset()
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    assert rows(out)["mlflow"] == [
        "mlflow",
        "trackkit",
        metadata.version("trackkit"),
        f"blocked ({BLOCK_ENV})",
    ]
    assert len([line for line in out.splitlines() if line.startswith("mlflow ")]) == 1
    code, out, _ = run_cli(capsys, "plugins", "--json")
    [mlflow] = [p for p in json.loads(out) if p["name"] == "mlflow"]
    assert mlflow["blocked"] is True and mlflow["distribution"] == "trackkit"
    code, out, _ = run_cli(capsys, "backends")
    assert code == 0 and "mlflow" not in rows(out)


# -- version, usage and errors ------------------------------------------------------------------
def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert (code, out) == (0, f"trackkit {trackkit.__version__}\n")


def test_usage_errors_return_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "no-such-command")[0] == 2
    code, _, err = run_cli(capsys)
    assert code == 2 and "usage: trackkit" in err


def test_a_broken_plugin_gives_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "broken_plugin.py").write_text('raise ImportError("needs the missing SDK xyz")\n')
    info = tmp_path / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[trackkit]\nbroken = broken_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    for command in ("backends", "plugins"):
        code, out, err = run_cli(capsys, command)
        assert (code, out) == (1, "")  # not a usage error: the installation is broken
        assert err.count("\n") == 1 and err.startswith("trackkit: error: ")
        assert "'broken'" in err and f"{BLOCK_ENV}=broken" in err
        assert "Traceback" not in err


def test_every_command_is_declared_in_build_parser_with_a_description() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {
        "backends", "plugins", "sync", "copy", "runs", "compare", "history",
    }  # fmt: skip
    for name, sub in commands.choices.items():
        assert sub.description and len(sub.description) > 40, name
        assert sub.get_default("run") is getattr(cli, f"cmd_{name}"), name


def test_sync_help_has_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "sync", "--help")
    assert code == 0
    assert "Replay the journals left in the trackkit directory" in " ".join(out.split())
    assert "--debug" in out


def test_an_unknown_backend_is_a_usage_error_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run_cli(capsys, "copy", str(tmp_path), "--to", "mlflw")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith("trackkit: error: unknown trackkit backend 'mlflw'")
    assert "'mlflow'" in err  # the closest name


def test_invalid_input_and_a_missing_run_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, "sync", "--dir", str(tmp_path), "-o", "novalue")
    assert code == 2 and "expected KEY=VALUE" in err
    # a directory without Neptune data: InvalidInput from the library, one line, status 2
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    code, out, err = run_cli(
        capsys, "copy", str(tmp_path), "--to", "mlflow", "-o", f"tracking_uri={uri}"
    )
    assert (code, out) == (2, "")
    # MLflow logs its own lines on stderr when it creates the store; trackkit adds one line
    (line,) = [x for x in err.splitlines() if x.startswith("trackkit:")]
    assert line.startswith("trackkit: error: ") and "holds no Neptune offline data" in line
    assert "Traceback" not in err


def test_a_missing_sdk_names_the_extra_in_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails
    code, out, err = run_cli(capsys, "copy", str(tmp_path), "--to", "mlflow")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("trackkit: error: ")
    assert "pip install 'trackkit[mlflow]'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("how", ["flag before", "flag after", "env"])
def test_debug_brings_the_traceback_back(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    argv = ["copy", str(tmp_path), "--to", "mlflw"]
    if how == "flag before":
        argv.insert(0, "--debug")
    elif how == "flag after":
        argv.append("--debug")
    else:
        monkeypatch.setenv("TRACKKIT_DEBUG", "1")
    with pytest.raises(trackkit.UnknownBackendError, match="mlflw"):
        main(argv)


def test_debug_off_by_default_and_with_a_false_env_value(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRACKKIT_DEBUG", "0")
    assert run_cli(capsys, "copy", str(tmp_path), "--to", "mlflw")[0] == 2


# -- as a real command --------------------------------------------------------------------------
def test_python_dash_m_trackkit_backends() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trackkit", "backends"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    _, sdk, capabilities, plugin = rows(done.stdout)["mlflow"]
    assert sdk.startswith("mlflow: ")
    assert capabilities == MLFLOW_CAPABILITIES
    assert plugin.startswith("mlflow (trackkit ")


def test_an_error_from_the_real_command_is_one_line_without_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trackkit", "copy", str(tmp_path), "--to", "no-such-backend"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("trackkit: error: unknown trackkit backend 'no-such-backend'")


def test_python_dash_m_trackkit_cli_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trackkit.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (0, f"trackkit {trackkit.__version__}\n")
