"""After a tracking SDK is imported, its objects are frozen out of Python's cyclic collector.

Each case runs in a fresh interpreter: freezing is process-wide and happens once per import.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def run_python(code: str, tmp_path: Path, **env: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object, returned here."""
    import os

    environ = {k: v for k, v in os.environ.items() if k != "TRACKKIT_GC_FREEZE"}
    environ.update(env)
    environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(tmp_path), environ.get("PYTHONPATH")])
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def big_package(tmp_path: Path) -> Path:
    """A real package whose import loads 40 modules, each holding some objects."""
    package = tmp_path / "bigsdk"
    package.mkdir()
    for i in range(40):
        (package / f"part{i}.py").write_text(f"TABLE = [{{'k': [{i}]}} for _ in range(500)]\n")
    imports = "".join(f"from bigsdk import part{i}\n" for i in range(40))
    (package / "__init__.py").write_text(imports)
    return tmp_path


IMPORT = """
    import gc, json
    from trackkit._lazy import import_sdk
    sdk = import_sdk("bigsdk", extra="bigsdk", purpose="the test")
    frozen = gc.get_freeze_count()
    print(json.dumps({"frozen": frozen}))
"""


def test_a_first_import_of_a_large_sdk_freezes_its_objects(big_package: Path) -> None:
    out = run_python(IMPORT, big_package)
    assert out["frozen"] >= 40 * 500  # every dict and list the import made, at least


def test_trackkit_gc_freeze_0_leaves_the_collector_alone(big_package: Path) -> None:
    out = run_python(IMPORT, big_package, TRACKKIT_GC_FREEZE="0")
    assert out["frozen"] == 0


def test_a_program_that_disabled_the_collector_is_left_alone(big_package: Path) -> None:
    code = "import gc; gc.disable()\n" + textwrap.dedent(IMPORT)
    out = run_python(code, big_package)
    assert out["frozen"] == 0


def test_an_invalid_trackkit_gc_freeze_names_the_variable(big_package: Path) -> None:
    code = """
        import json
        from trackkit._lazy import import_sdk
        from trackkit.errors import InvalidInput
        try:
            import_sdk("bigsdk", extra="bigsdk", purpose="the test")
        except InvalidInput as e:
            print(json.dumps({"error": str(e)}))
    """
    out = run_python(code, big_package, TRACKKIT_GC_FREEZE="sometimes")
    assert "TRACKKIT_GC_FREEZE" in str(out["error"])


def test_a_small_import_does_not_collect(tmp_path: Path) -> None:
    (tmp_path / "smallsdk.py").write_text("X = [[1]]\n")
    code = """
        import gc, json
        from trackkit._lazy import import_sdk
        import_sdk("smallsdk", extra="x", purpose="the test")
        print(json.dumps({"frozen": gc.get_freeze_count()}))
    """
    assert run_python(code, tmp_path)["frozen"] == 0


def test_an_mlflow_tracker_leaves_few_objects_for_the_collector(tmp_path: Path) -> None:
    """MLflow and its sqlite store (SQLAlchemy, Alembic) leave >300,000 objects; a full
    collection walks them all unless they are frozen."""
    pytest.importorskip("mlflow")
    code = f"""
        import gc, json, trackkit
        tracker = trackkit.get_tracker(
            "mlflow", tracking_uri="sqlite:///{tmp_path}/m.db", journal_dir="{tmp_path}/tk"
        )
        with tracker.start_run(experiment="heap") as run:
            run.log_metric("loss", 1.0)
        tracker.close()
        print(json.dumps({{"frozen": gc.get_freeze_count(), "walked": len(gc.get_objects())}}))
    """
    out = run_python(code, tmp_path)
    assert out["frozen"] > 200_000
    assert out["walked"] < 50_000
