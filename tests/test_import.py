"""Import cost, checked in fresh interpreters: trackkit imports no SDK until a backend is used.

Each check runs a small script in a subprocess, since this test process has long since
imported MLflow, scikit-learn and pandas.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

SDKS = ("mlflow", "wandb", "neptune", "sklearn", "pandas", "numpy")


def run_python(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def report(script: str) -> dict[str, Any]:
    """Run ``script`` (which prints one JSON object last) and return that object."""
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


SDKS_LOADED = f"""
def sdks_loaded():
    return sorted(
        m for m in sys.modules
        if m.split(".")[0] in {SDKS!r} and m not in already and sys.modules[m] is not None
    )
"""


def test_import_trackkit_imports_no_sdk_and_loads_no_plugin() -> None:
    found = report(
        "import json, sys\nalready = set(sys.modules)\n"
        + SDKS_LOADED
        + """
import trackkit
sdks = sdks_loaded()
plugins_imported = "trackkit.plugins" in sys.modules
import trackkit.plugins
print(json.dumps({
    "sdks": sdks,
    "plugins_imported": plugins_imported,
    "manager": trackkit.plugins._manager is not None,
    "mlflow_backend": "trackkit.backends.mlflow" in sys.modules,
}))
"""
    )
    assert found == {
        "sdks": [],
        "plugins_imported": False,
        "manager": False,
        "mlflow_backend": False,
    }


def test_available_backends_loads_plugins_but_imports_no_sdk() -> None:
    found = report(
        "import json, sys\nalready = set(sys.modules)\n"
        + SDKS_LOADED
        + """
import trackkit
backends = trackkit.available_backends()
print(json.dumps({
    "backends": backends,
    "sdks": sdks_loaded(),
    "mlflow_backend": "trackkit.backends.mlflow" in sys.modules,
}))
"""
    )
    assert "mlflow" in found["backends"]
    assert found["mlflow_backend"] is True  # the plugin module is loaded...
    assert found["sdks"] == []  # ...and still no SDK


def test_the_cli_imports_no_sdk() -> None:
    # ``python -X importtime`` does not see modules imported with importlib.import_module (as
    # plugins and SDKs are), so the check runs ``python -m trackkit`` through runpy, as the
    # interpreter does, and then looks at sys.modules.
    done = run_python(
        "import json, sys, runpy\nalready = set(sys.modules)\n"
        + SDKS_LOADED
        + """
sys.argv = ["trackkit", "backends"]
try:
    runpy.run_module("trackkit", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
print(json.dumps({
    "code": code,
    "sdks": sdks_loaded(),
    "cli": "trackkit.cli" in sys.modules,
    "mlflow_backend": "trackkit.backends.mlflow" in sys.modules,
}))
"""
    )
    assert done.returncode == 0, done.stderr
    *listing, last = done.stdout.splitlines()
    assert any(line.split()[:1] == ["mlflow"] for line in listing)  # it listed the backends
    found = json.loads(last)
    assert found == {"code": 0, "sdks": [], "cli": True, "mlflow_backend": True}


HIDE_BY_FINDER = """
import sys
class NoMlflow:
    def find_spec(self, name, path=None, target=None):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NoMlflow())
"""
HIDE_BY_NONE = "import sys\nsys.modules['mlflow'] = None\n"


@pytest.mark.parametrize("hide", [HIDE_BY_FINDER, HIDE_BY_NONE], ids=["meta_path", "sys.modules"])
def test_a_missing_sdk_raises_missing_dependency_with_the_install_command(hide: str) -> None:
    found = report(
        hide
        + """
import json
import trackkit
try:
    trackkit.get_tracker("mlflow")
except Exception as e:
    error = e
print(json.dumps({
    "type": type(error).__name__,
    "missing_dependency": isinstance(error, trackkit.MissingDependencyError),
    "trackkit_error": isinstance(error, trackkit.TrackkitError),
    "import_error": isinstance(error, ImportError),
    "message": str(error),
}))
"""
    )
    assert found["type"] == "MissingDependencyError"
    assert found["missing_dependency"] and found["trackkit_error"] and found["import_error"]
    assert "pip install 'trackkit[mlflow]'" in found["message"]
    assert "the mlflow backend" in found["message"]
