"""Smoke test for ``benchmarks/gate_bytecodes.py``: both workers run, the plain one without the
library, the gated one counts more Python and names the library's functions that add it, and two
runs count exactly the same (the property the script exists for)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gate_bytecodes.py"


def _count(tmp_path: Path, name: str, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    argv = ["--workloads", "wm", "--steps", "2", "--warmup", "1", "--top", "5", "--json", str(out), *extra]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "world-model update" in proc.stdout
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary


@pytest.mark.slow
def test_counts_are_exact_and_name_the_library(tmp_path: Path) -> None:
    first = _count(tmp_path, "first")
    wm = first["workloads"]["wm"]
    assert 0 < wm["plain"]["bytecodes"] < wm["gated"]["bytecodes"]
    assert 0 < wm["plain"]["calls"] < wm["gated"]["calls"]
    added = wm["added"]
    library = [row for row in added if row["library"]]
    assert library and all(row["file"].startswith("amal_verified/") for row in library)
    assert any(row["function"] == "_dispatch" and row["bytecodes"] > 0 for row in library)
    assert first["counted"] == "repository"
    assert "/" not in str(first["commit"])  # a commit, not a path of this machine
    second = _count(tmp_path, "second")
    assert second["workloads"] == first["workloads"]


@pytest.mark.slow
def test_with_auxiliary_data_present_the_gate_reads_every_label_of_the_step(tmp_path: Path) -> None:
    summary = _count(tmp_path, "aux", "--aux-present")
    assert summary["aux_present"] is True
    library = {row["function"] for row in summary["workloads"]["wm"]["added"] if row["library"]}
    assert {"protected_reads", "any_aux"} <= library


@pytest.mark.slow
def test_a_batch_tagged_in_memory_only_runs_no_tracked_operation(tmp_path: Path) -> None:
    summary = _count(tmp_path, "memory", "--aux-present", "--no-follow-primary")
    assert summary["follow_primary"] is False
    library = {row["function"] for row in summary["workloads"]["wm"]["added"] if row["library"]}
    assert "any_aux" in library and "_dispatch" not in library
