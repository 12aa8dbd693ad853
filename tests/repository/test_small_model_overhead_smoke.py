"""Smoke test for ``benchmarks/small_model_overhead.py --quick``.

Runs the harness end to end (a plain and a gated worker, each a fresh process, for the
world-model update and the whole SAC step at batch 32 and 256) and checks that it completes,
prints the CPU-time and wall-time ratios of every configuration, that the plain side never
imported ``amal_verified`` and that gated and plain training end with bit-identical parameters.
No timing is asserted: timings on shared machines are noise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "small_model_overhead.py"


def _run_quick(tmp_path: Path, *extra: str) -> tuple[str, dict[str, Any]]:
    """``--quick`` with ``extra`` arguments: its standard output and its JSON summary."""
    summary_file = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(summary_file), *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    summary: dict[str, Any] = json.loads(summary_file.read_text())
    return proc.stdout, summary


@pytest.mark.slow
def test_small_model_overhead_quick(tmp_path: Path) -> None:
    stdout, summary = _run_quick(tmp_path)
    for workload in ("wm", "sac"):
        for batch in (32, 256):
            assert f"CPU ratio ({workload}, batch {batch}):" in stdout
            assert f"wall ratio ({workload}, batch {batch}):" in stdout
    assert "plain workers never imported amal_verified: yes" in stdout
    assert "parameters: bit-identical between plain and gated in every configuration" in stdout

    configs = {(c["workload"], c["batch"]): c for c in summary["configs"]}
    assert sorted(configs) == [("sac", 32), ("sac", 256), ("wm", 32), ("wm", 256)]
    for config in configs.values():
        assert config["cpu_ratio"] > 0
        assert config["wall_ratio"] > 0
        assert config["params_identical"] is True
        assert config["plain_never_imported_amal"] is True
        assert sorted(w["side"] for w in config["workers"]) == ["gated", "plain"]
        assert len({w["param_sha256"] for w in config["workers"]}) == 1
        assert not any(w["amal_imported"] for w in config["workers"] if w["side"] == "plain")


@pytest.mark.slow
def test_auxiliary_data_present_in_the_gated_worker_only(tmp_path: Path) -> None:
    """``--aux-present``: the gated worker tags auxiliary data first; the plain one still never imports
    the library, and training stays bit-identical."""
    stdout, summary = _run_quick(tmp_path, "--workloads", "wm", "--batches", "32", "--aux-present")
    assert "auxiliary data present in the gated workers" in stdout
    assert "plain workers never imported amal_verified: yes" in stdout
    assert summary["aux_present"] is True
    (config,) = summary["configs"]
    assert config["params_identical"] is True


@pytest.mark.slow
def test_primary_batches_tagged_in_memory_only(tmp_path: Path) -> None:
    """``--no-follow-primary``: the gated worker tags its batch ``av.primary(..., follow=False)``;
    training stays bit-identical and the summary says how the batch was tagged."""
    stdout, summary = _run_quick(
        tmp_path, "--workloads", "sac", "--batches", "32", "--aux-present", "--no-follow-primary"
    )
    assert "primary batches tagged with follow=False" in stdout
    assert summary["follow_primary"] is False and summary["aux_present"] is True
    (config,) = summary["configs"]
    assert config["params_identical"] is True
