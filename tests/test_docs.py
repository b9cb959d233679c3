"""The Python code blocks of README.md and docs/ run, as written, on MLflow's sqlite default.

Each file's ``python`` blocks run in order, in one namespace, in a fresh directory and a fresh
interpreter, with no tracking settings inherited: what a reader who pastes them one after
the other into a new session gets. A block of ``>>>`` lines is run as a doctest, so its
printed output must match too. Blocks in other languages (``bash``, ``text``, ``toml``...)
are commands or output and are not run.

A block that needs what this test does not have is marked by an HTML comment on the line
before it (invisible on the rendered page)::

    <!-- requires: server -->      a tracking server or service: never run here
    <!-- requires: neptune -->     an importable module (an SDK): run when it is installed

See docs/index.md, "Code in these pages".
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<lang>[\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*requires:\s*(?P<what>[\w.-]+)\s*-->\s*$")
PYTHON = ("python", "py", "pycon")
#: settings that would send the blocks elsewhere than MLflow's sqlite default
INHERITED = re.compile(r"^(TRACKKIT_|MLFLOW_|WANDB_|NEPTUNE_)")

pytest.importorskip("mlflow")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    requires: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    def runnable(self) -> tuple[bool, str]:
        """Whether this test runs the block here, and why not."""
        if self.requires is None:
            return True, ""
        if self.requires == "server":
            return False, "needs a server"
        if importlib.util.find_spec(self.requires) is None:
            return False, f"needs {self.requires}, not installed"
        return True, ""


def blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file, with the marker on the line before it."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        start = i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            i += 1
        previous = next((line for line in reversed(lines[:start]) if line.strip()), "")
        marker = MARKER.match(previous)
        found.append(
            Block(
                path=path,
                line=start + 1,
                lang=opening["lang"].lower(),
                code="\n".join(body) + "\n",
                requires=marker["what"] if marker else None,
            )
        )
        i += 1
    return found


def python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.lang in PYTHON]


# What runs in the fresh interpreter: each block in order, in one namespace; `>>>` blocks
# through doctest. On the first failure, it names the block and exits 1.
RUNNER = r"""
import doctest, json, sys, traceback
blocks = json.load(open(sys.argv[1], encoding="utf-8"))
namespace = {"__name__": "__main__"}
for block in blocks:
    where, code = block["where"], block["code"]
    try:
        if code.lstrip().startswith(">>>"):
            test = doctest.DocTestParser().get_doctest(code, namespace, where, where, 0)
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
            runner.run(test, clear_globs=False)
            if runner.failures:
                raise AssertionError(f"the doctest's output differs (above)")
        else:
            exec(compile(code, where, "exec"), namespace)
    except BaseException:
        print(f"\nFAILED: the block at {where}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
    print(f"ran {where}", file=sys.stderr)
"""


def with_python() -> list[Path]:
    return [p for p in FILES if python_blocks(p)]


@pytest.mark.parametrize("path", with_python(), ids=lambda p: str(p.relative_to(REPO)))
def test_the_python_blocks_of_a_page_run(path: Path, tmp_path: Path) -> None:
    runs = [b for b in python_blocks(path) if b.runnable()[0]]
    if not runs:
        pytest.skip(", ".join(f"{b.where} {b.runnable()[1]}" for b in python_blocks(path)))
    script = tmp_path / "blocks.json"
    script.write_text(json.dumps([{"where": b.where, "code": b.code} for b in runs]))
    env = {k: v for k, v in os.environ.items() if not INHERITED.match(k)}
    env.update(MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    ran = [line[4:] for line in done.stderr.splitlines() if line.startswith("ran ")]
    assert ran == [b.where for b in runs]


def test_the_block_parser_and_the_markers() -> None:
    """The parser finds what the pages hold, and every marker is one this test knows."""
    every = [b for path in FILES for b in blocks(path)]
    python = [b for b in every if b.lang in PYTHON]
    assert len(python) >= 15, [b.where for b in python]
    assert {"bash", "toml", "json", ""} <= {b.lang for b in every}
    readme = python_blocks(REPO / "README.md")
    assert readme and readme[0].requires is None and "import trackkit" in readme[0].code
    for block in every:
        if block.requires is not None:
            assert block.lang in PYTHON, f"{block.where}: a marker on a block that never runs"
            assert block.requires == "server" or re.fullmatch(r"[\w.]+", block.requires)
    # no python block is left out silently: each one runs or is marked
    assert all(b.runnable()[0] or b.requires for b in python)


def test_a_marker_applies_only_to_the_next_block(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Intro.\n\n<!-- requires: server -->\n```python\nprint(1)\n```\n\n"
        "```python\nprint(2)\n```\n\n   ```bash\n   echo 3\n   ```\n"
    )
    first, second, shell = blocks(page)
    assert (first.requires, first.code, first.line) == ("server", "print(1)\n", 4)
    assert (second.requires, second.code) == (None, "print(2)\n")
    assert (shell.lang, shell.code) == ("bash", "echo 3\n")
    assert not first.runnable()[0] and second.runnable()[0]
