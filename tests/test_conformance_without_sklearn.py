"""The shipped conformance suite runs where scikit-learn is not installed.

Its model and registry checks need a fitted scikit-learn pipeline; without scikit-learn they
are reported as skipped with the reason, and every other check still runs. The example
plugin's suite runs in a child process in which ``import sklearn`` fails as it does when the
package is not installed (``sys.modules["sklearn"] = None``), whether or not it is installed
here.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from trackkit.testing import SKLEARN_MISSING

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_TESTS = ROOT / "examples" / "trackkit-example" / "tests"

_WITHOUT_SKLEARN = """
import sys
sys.modules["sklearn"] = None  # every `import sklearn...` now raises ModuleNotFoundError
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def _outcomes(report: Path) -> dict[str, tuple[str, str]]:
    """Each test case's name -> (outcome, message) from a JUnit XML report."""
    found = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("skipped", "failure", "error"):
                outcome, message = child.tag, child.get("message", "")
        found[case.get("name", "")] = (outcome, message)
    return found


def test_sklearn_checks_are_skipped_with_the_reason_not_failed(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    args = ["-p", "no:cacheprovider", "-q", f"--junitxml={report}", str(EXAMPLE_TESTS)]
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SKLEARN, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    outcomes = _outcomes(report)
    assert outcomes["test_model_round_trip"] == ("skipped", SKLEARN_MISSING)
    # the example backend has no registry: that check needs no model and still runs
    assert outcomes["test_registry_aliases_and_load_by_alias"] == ("passed", "")
    assert outcomes["test_params_are_flattened_and_typed"] == ("passed", "")
    assert not [name for name, (outcome, _) in outcomes.items() if outcome in ("failure", "error")]
    skipped_for_sklearn = [n for n, (o, m) in outcomes.items() if o == "skipped" and "scikit" in m]
    assert skipped_for_sklearn == ["test_model_round_trip"]
