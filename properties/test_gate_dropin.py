"""``GatedOptimizer`` is a drop-in for ``torch.optim``, and what it costs on small world models.

Two measurements behind the obligation ``proofs/gate_dropin.py``:

* the optimizer × feature matrix of ``benchmarks/optimizer_matrix.py`` over torch's own optimizer
  database (``optim_db``): every cell PASS (gated and plain PyTorch bit for bit the same, refusals
  atomic) or N/A (plain PyTorch rejects the configuration itself).  The default profile runs the
  matrix's quick rows; the audit profile (``--hypothesis-profile=audit``) or
  ``AMAL_FULL_OPTIMIZER_MATRIX=1`` runs every CPU configuration;
* the small-model overhead of ``benchmarks/small_model_overhead.py`` (marker ``benchmark``: it
  runs only in the full report or with ``--run-benchmarks``): the CPU-time ratio gated / plain in
  alternating fresh processes (median of eleven pairs), with auxiliary data in the gated process,
  within the targets (≤ 1.30 at batch 32, ≤ 1.10 at batch 256) for the world-model update and the
  whole SAC step with the batch tagged as the README advises for small models
  (``av.primary(x, follow=False)``), and with bit-identical parameters both so and with the batch
  followed (``av.primary(x)``), whose ratios are recorded beside them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _full_matrix() -> bool:
    return os.environ.get("AMAL_FULL_OPTIMIZER_MATRIX") == "1" or settings.default.max_examples >= 1000


def test_gated_optimizer_is_a_dropin_over_optim_db(evidence: Any) -> None:
    om = _load("optimizer_matrix")
    full = _full_matrix()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script does: tiny tensors, intra-op threads only add overhead
    try:
        matrix = om.build_matrix(quick=not full, jobs=2 if full else 1)
    finally:
        torch.set_num_threads(threads)
    data = matrix.to_json()
    failures = [
        f"{row['name']} / {key}: {cell.get('reason', '')}"
        for table in ("rows", "scheduler_rows")
        for row in data[table]
        for key, cell in row["cells"].items()
        if cell["status"] == "FAIL"
    ]
    evidence.record(
        "optimizer_matrix",
        {
            "mode": data["mode"],
            "torch": data["torch"],
            "counts": data["counts"],
            "failures": failures,
        },
    )
    assert not failures, f"{len(failures)} cells differ from plain PyTorch:\n" + "\n".join(failures[:20])


def _small_model_overhead(tmp_path: Path, *flags: str) -> list[dict[str, Any]]:
    summary_file = tmp_path / f"summary{''.join(flags)}.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "small_model_overhead.py"), "--aux-present", *flags]
    proc = subprocess.run(
        [*command, "--json", str(summary_file)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1500,
        check=False,
    )
    assert proc.returncode == 0, f"the benchmark failed:\n{proc.stdout}\n{proc.stderr}"
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    keys = (
        "workload",
        "batch",
        "plain_cpu_ms",
        "gated_cpu_ms",
        "cpu_ratio",
        "wall_ratio",
        "cpu_pair_ratios",
        "cpu_min_ratio",
        "target",
        "params_identical",
    )
    loads = {"loadavg_after": summary["loadavg_after"]}  # the host is shared: the load beside the ratios
    return [{**{key: config[key] for key in keys}, **loads} for config in summary["configs"]]


@pytest.mark.benchmark
def test_small_model_overhead_within_targets(evidence: Any, tmp_path: Path) -> None:
    memory_only = _small_model_overhead(tmp_path, "--no-follow-primary", "--pairs", "11")
    followed = _small_model_overhead(tmp_path)
    evidence.record("small_model_overhead", {"configs": memory_only, "followed_primary": followed})
    assert all(c["params_identical"] for c in memory_only + followed), "gated and plain parameters differ"
    over = [c for c in memory_only if c["target"] is not None and c["cpu_ratio"] > c["target"]]
    assert not over, "CPU-time ratio over target: " + "; ".join(
        f"{c['workload']} batch {c['batch']}: {c['cpu_ratio']:.3f} > {c['target']:.2f}" for c in over
    )
