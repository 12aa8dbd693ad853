"""``pytest --leave-to-report`` leaves to the report exactly what it runs: ``make test`` runs each once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from amal_tools.compliance.discovery import quick_pytest_targets, selects

ROOT = Path(__file__).resolve().parents[2]


def _collected(*options: str) -> set[str]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "properties",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            *options,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {line for line in done.stdout.splitlines() if "::" in line}


@pytest.mark.slow
def test_the_suite_beside_the_report_and_the_report_together_run_every_property_once() -> None:
    targets = quick_pytest_targets(ROOT)
    everything = _collected()
    beside = _collected("--leave-to-report")
    left = everything - beside
    assert beside < everything
    for nodeid in left:
        assert any(selects(t, nodeid) for t in targets), f"{nodeid}: the report never runs it"
    for nodeid in beside:
        assert not any(selects(t, nodeid) for t in targets), f"{nodeid} would run twice"
    for target in targets:
        assert any(selects(target, nodeid) for nodeid in left), f"{target} selects no test"
