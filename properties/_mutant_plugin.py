"""pytest plugin for core-mutant runs (``-p _mutant_plugin``; see ``properties/_core_mutants.py``).

- Loads the ``default`` Hypothesis profile without its shrink phase (the same examples, in the
  same order: the first counterexample is the measurement, not its shrunk form).
- Writes ``$AMAL_MUTANT_REPORT`` (JSON): the node ids that passed, and the first failure -- its node
  id, the wall-clock time (``time.time()``) at which it was reported, and the end of its report.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, settings

_state: dict[str, Any] = {"passed": [], "failure": None}


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    settings.register_profile(
        "default-no-shrink",
        parent=settings.get_profile("default"),
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
    )
    settings.load_profile("default-no-shrink")


def _write() -> None:
    path = os.environ.get("AMAL_MUTANT_REPORT")
    if path:
        Path(path).write_text(json.dumps(_state), encoding="utf-8")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and _state["failure"] is None:
        text = report.longreprtext or ""
        _state["failure"] = {"nodeid": report.nodeid, "at": time.time(), "detail": text[-1500:]}
        _write()
    elif report.when == "call" and report.passed:
        _state["passed"].append(report.nodeid)
        _write()


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed and _state["failure"] is None:
        _state["failure"] = {
            "nodeid": "collection",
            "at": time.time(),
            "detail": (report.longreprtext or "")[-1500:],
        }
        _write()
