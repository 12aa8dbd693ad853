"""Shared fixtures and options of the isolation audit (``pytest properties/``).

``evidence``: a property records what it measured or found (fitted slopes, curves, a
counterexample) with ``evidence.record(name, data)``.  Outside the report it does
nothing; under ``amal report`` (environment variable ``AMAL_EVIDENCE_DIR``) each record
is written as ``<dir>/<name>.json`` and ends up in ``report.json`` and its plots.
Names used by the report: ``counterexample`` (shown verbatim), ``seeds``, ``settings``,
and the plot inputs documented in ``tools/amal_tools/compliance/plots.py``.

``--run-benchmarks``: timing measurements (marker ``benchmark``) are deselected by
default -- speed is never asserted in the ordinary suite -- and run on request, or by
the full report.

``--leave-to-report``: deselect the tests the quick compliance report runs as checks of its
obligations (``proofs/*.py``).  ``make test`` runs the suite with it and then the report, so every
test runs once.

``--amal-target=module:function`` (an option of amal_verified's pytest plugin,
``amal_verified/audit/pytest_plugin.py``): the Theorem 1 audit (``test_theorem1_user_target.py``) runs
against *your* training function instead of the built-in example
(``examples/audit_target_example.py:train``).  The contract:

- ``function(primary, aux)`` trains from scratch and returns the world model: an ``nn.Module``
  (parameters and buffers are compared) or a mapping of names to tensors;
- the same module defines ``amal_example_inputs()`` returning one ``(primary, aux)`` pair;
- ``module`` is an importable module (the current directory is searched first) or a file path,
  ``path/to/file.py:function``.

The audit generates auxiliary variants (values 0, ±1e38, NaN, ±Inf; other row counts; other list
lengths), resets the global random generators identically before each call, and requires the
world model to come out bit for bit the same (``amal_verified.audit``).  A missing or
invalid target is a usage error, reported before any test runs.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

# The properties import their helpers (``_mutants``, ``_core_mutants``, ``_op_registry``) by name;
# pytest's importlib mode does not put a test's folder on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

EVIDENCE_DIR_VARIABLE = "AMAL_EVIDENCE_DIR"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _jsonable(value: Any) -> Any:
    """Plain JSON data; non-finite floats become strings ("nan", "inf", "-inf"): the JSON stays canonical."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return _jsonable(value.tolist())
    raise TypeError(
        f"evidence must be JSON data (dict/list/str/number/bool/None), got {type(value).__name__}"
    )


class Evidence:
    """Writes named JSON records into the report's evidence directory, if there is one."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    @property
    def active(self) -> bool:
        return self.directory is not None

    def record(self, name: str, data: Any) -> None:
        if not _NAME.match(name):
            raise ValueError(f"evidence name must be letters, digits, '_', '.', '-': got {name!r}")
        payload = _jsonable(data)  # validate even when inactive, so a bad record fails in CI too
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, sort_keys=True, indent=1, allow_nan=False), encoding="utf-8")
        os.replace(tmp, path)


@pytest.fixture
def evidence() -> Evidence:
    directory = os.environ.get(EVIDENCE_DIR_VARIABLE)
    return Evidence(Path(directory) if directory else None)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-benchmarks",
        action="store_true",
        default=False,
        help="run timing measurements (marker 'benchmark'); deselected by default",
    )
    parser.addoption(
        "--leave-to-report",
        action="store_true",
        default=False,
        help="deselect the tests the quick compliance report runs (make test runs them there, once)",
    )


DEFAULT_AUDIT_TARGET = (
    str(Path(__file__).resolve().parents[1] / "examples" / "audit_target_example.py") + ":train"
)


@pytest.fixture(scope="session")
def amal_target(pytestconfig: pytest.Config) -> Any:
    """The audited training function (``--amal-target``, else the built-in example), an
    ``amal_verified.audit.Target``; overrides the plugin's fixture, which skips without the option."""
    from amal_verified.audit import load_target
    from amal_verified.audit.pytest_plugin import configured_target

    return configured_target(pytestconfig) or load_target(DEFAULT_AUDIT_TARGET)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--leave-to-report"):
        from amal_tools.compliance.discovery import quick_pytest_targets, selects

        targets = quick_pytest_targets(Path(str(config.rootpath)))
        left = [item for item in items if any(selects(t, item.nodeid) for t in targets)]
        if left:
            config.hook.pytest_deselected(items=left)
            gone = {id(item) for item in left}
            items[:] = [item for item in items if id(item) not in gone]
    if config.getoption("--run-benchmarks"):
        return
    skip = pytest.mark.skip(reason="timing measurement: run with --run-benchmarks (the full report does)")
    for item in items:
        if "benchmark" in item.keywords:
            item.add_marker(skip)
