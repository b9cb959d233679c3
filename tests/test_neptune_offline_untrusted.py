"""Neptune offline directories are untrusted input: their logs name files by path.

A ``.neptune`` directory can arrive with a cloned repository or a copied folder. Its operation
logs name the files a run uploaded by absolute path (Neptune's ``upload("path")`` keeps the
path, not a copy), so a planted log could make ``trackkit copy`` read any file the user can
read and store it where the copy goes. The runs here are written by the neptune client itself,
offline; the planted lines are edits of its own log files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import neptune_offline_run
from trackkit.backends.neptune import read_offline_runs

pytest.importorskip("neptune")

WRITE = """
import neptune
run = neptune.init_run(mode="offline", project="ws/p")
run["inside"].upload("data/inside.txt")
run["set"].upload_files(["data/inside.txt"])
run.stop()
"""


def _offline_run(project: Path) -> Path:
    """A run made by plain neptune code in ``project``, uploading one of its files by path."""
    (project / "data").mkdir(parents=True)
    (project / "data" / "inside.txt").write_text("the project's own file")
    return neptune_offline_run(project, WRITE)


def _plant(run_dir: Path, ops: list[dict[str, object]]) -> None:
    """Append operations to the run's own log, numbered after the client's."""
    log = sorted(run_dir.glob("data-*.log"))[-1]
    last = max(json.loads(line)["version"] for line in log.read_text().splitlines() if line)
    with log.open("a") as out:
        for n, op in enumerate(ops, last + 1):
            out.write(json.dumps({"obj": op, "version": n, "at": 0}) + "\n")


def test_files_outside_the_runs_project_are_not_read_unless_asked(tmp_path: Path) -> None:
    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("PRIVATE KEY")
    run_dir = _offline_run(tmp_path / "project")
    upload_path = run_dir / "upload_path"
    upload_path.mkdir(exist_ok=True)
    (upload_path / "link").symlink_to(secret)  # a copy that is really a link out
    _plant(
        run_dir,
        [
            {"type": "UploadFile", "path": ["by_path"], "ext": "", "file_path": str(secret),
             "tmp_file_name": None, "clean_after_upload": False},
            {"type": "UploadFile", "path": ["traversal"], "ext": "",
             "file_path": None, "tmp_file_name": "../../../../../home/.ssh/id_rsa"},
            {"type": "UploadFile", "path": ["symlink"], "ext": "", "file_path": None,
             "tmp_file_name": "link"},
            {"type": "UploadFileSet", "path": ["glob"], "file_globs": [str(secret.parent / "*")],
             "reset": "False"},
        ],
    )  # fmt: skip

    [data] = read_offline_runs(tmp_path / "project" / ".neptune")
    # the project's own file, uploaded by path, is read as before
    assert set(data.files) == {"inside"} and data.file_sets["set"] == [
        tmp_path / "project" / "data" / "inside.txt"
    ]
    assert data.file_sets.get("glob", []) == []
    target = tmp_path / "copy.txt"
    data.files["inside"](target)
    assert target.read_text() == "the project's own file"
    # every planted one is skipped, each with its reason and how to include it
    refused = [s for s in data.skipped if "outside the folder the offline run was made in" in s]
    assert sorted(s.split(":")[0] for s in refused) == ["by_path", "glob", "symlink", "traversal"]
    assert all("outside_files=True" in s for s in refused)

    # asked for, files the user chose to trust are read
    [trusted] = read_offline_runs(tmp_path / "project" / ".neptune", outside_files=True)
    assert {"by_path", "symlink", "traversal"} <= set(trusted.files)
    trusted.files["by_path"](target)
    assert target.read_text() == "PRIVATE KEY"
    assert trusted.file_sets["glob"] == [secret]
