"""Smoke test for ``benchmarks/tracker_floor.py``: one round of one configuration runs every stand-in
and the library, each worker imports its own package, and all train bit for bit as plain PyTorch.
No timing is asserted: timings on shared machines are noise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "tracker_floor.py"
VARIANTS = ["dispatch floor", "function floor", "hooks floor", "design floor", "library"]


@pytest.mark.slow
def test_tracker_floor_one_round(tmp_path: Path) -> None:
    summary_file = tmp_path / "floor.json"
    argv = ["--rounds", "1", "--workloads", "wm", "--batches", "32", "--steps", "3", "--warmup", "1"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *argv, "--json", str(summary_file)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    header = next(line for line in proc.stdout.splitlines() if line.startswith("workload"))
    assert all(variant in header for variant in VARIANTS), header
    summary = json.loads(summary_file.read_text())
    assert summary["parameter_differences"] == []
    (row,) = summary["rows"]
    assert (row["workload"], row["batch"]) == ("wm", 32)
    assert sorted(row["ratios"]) == sorted(VARIANTS) == sorted(row["fast_ratios"])
    assert all(len(r) == 1 and r[0] > 0 for r in row["ratios"].values())
    # Each stand-in ran from its temporary package, the library from this checkout.
    imported = {variant: Path(path) for variant, path in summary["imported_from"].items()}
    assert sorted(imported) == sorted(VARIANTS)
    assert imported["library"] == ROOT / "amal_verified"
    assert all(not path.is_relative_to(ROOT) for variant, path in imported.items() if variant != "library")
