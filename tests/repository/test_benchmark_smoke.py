"""Smoke test for ``benchmarks/gate_overhead.py --quick``.

Runs the benchmark harness end to end (one plain and one gated worker, each in
a fresh process) and checks that it completes, prints a ratio, and that gated
and plain training end with bit-identical parameters.  No timing is asserted:
timings on shared CI machines are noise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gate_overhead.py"


@pytest.mark.slow
def test_gate_overhead_quick(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(summary_file)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "ratio (median of pairwise):" in proc.stdout
    assert "parameters: bit-identical" in proc.stdout
    assert "plain workers never imported amal_verified: yes" in proc.stdout
    assert "ratio gated/plain (interleaved):" in proc.stdout
    assert "parameters: bit-identical across the three models" in proc.stdout

    summary = json.loads(summary_file.read_text())
    assert summary["ratio"] > 0
    assert summary["params_identical"] is True
    assert summary["plain_never_imported_amal"] is True
    sides = sorted(w["side"] for w in summary["workers"])
    assert sides == ["gated", "plain"]
    assert len({w["param_sha256"] for w in summary["workers"]}) == 1


@pytest.mark.slow
def test_audit_throughput_quick(tmp_path: Path) -> None:
    rows_file = tmp_path / "rows.json"
    target = f"{ROOT / 'examples' / 'audit_target_example.py'}:train"
    script = ROOT / "benchmarks" / "audit_throughput.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--target", target, "--json", str(rows_file)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "audit_target_example.py:train" in proc.stdout and "passed" in proc.stdout
    (row,) = json.loads(rows_file.read_text())
    assert row["ok"] is True and row["variants"] == 5
    assert row["variants_per_second"] > 0 and row["ratio_per_variant_to_plain"] > 0
