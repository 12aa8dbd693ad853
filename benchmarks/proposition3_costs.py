"""Proposition 3 (paper §5.4): the trainer's measured cost exponents, as a table.

Runs the measurement of ``properties/test_proposition3_costs.py`` (the same series, grids, repeats and
fit: that file documents them, ``proofs/proposition3_costs.py`` says where the paper's cost model is
off) and prints one row per series: the grid, the median CPU seconds per point, the fitted exponent of
``time ∝ x^p`` and whether it lies within the tolerance of the expected one.

    .venv/bin/python benchmarks/proposition3_costs.py                       # all series, ~1-2 min of CPU
    .venv/bin/python benchmarks/proposition3_costs.py --series eig_vs_M --series eig_vs_K
    .venv/bin/python benchmarks/proposition3_costs.py --json benchmarks/results/proposition3_costs.json

Exit status 0 whatever the numbers unless ``--check`` (then 1 if any exponent is out of tolerance).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
MEASUREMENT = ROOT / "properties" / "test_proposition3_costs.py"


def load_measurement() -> ModuleType:
    """Import the property file by path (``properties/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("proposition3_costs_measurement", MEASUREMENT)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {MEASUREMENT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", action="append", default=[], help="run only this series (repeatable)")
    parser.add_argument("--json", type=Path, help="write the series and the machine's description here")
    parser.add_argument("--check", action="store_true", help="exit 1 if an exponent is out of tolerance")
    args = parser.parse_args(argv)

    m = load_measurement()
    known = {s.name: s for s in m.SERIES}
    unknown = [name for name in args.series if name not in known]
    if unknown:
        parser.error(f"unknown series {unknown}; choose from {sorted(known)}")
    chosen = [known[name] for name in args.series] if args.series else list(m.SERIES)

    load_before = os.getloadavg()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with m.single_thread():
        for series in chosen:
            t0 = time.perf_counter()
            row = m.measure(series)
            rows.append(row)
            verdict = (
                "ok" if abs(row["exponent"] - row["expected"]) <= row["tolerance"] else "OUT OF TOLERANCE"
            )
            print(
                f"{row['name']:30s} p = {row['exponent']:6.3f}  expected {row['expected']:.0f} "
                f"± {row['tolerance']}  {verdict}  ({time.perf_counter() - t0:.0f} s)"
            )
            print(f"    x: {row['x_label']}")
            print(
                "    "
                + "  ".join(f"{x}: {s * 1e3:.2f} ms" for x, s in zip(row["x"], row["seconds"], strict=True))
            )
    wall = time.perf_counter() - started
    failures = m.out_of_tolerance(rows)
    print(f"\n{len(rows) - len(failures)}/{len(rows)} series within tolerance; {wall:.0f} s wall")
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")

    if args.json is not None:
        document = {
            "benchmark": "proposition3_costs",
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": {
                "python": platform.python_version(),
                "torch": str(torch.__version__),
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "load_average_before": load_before[0],
                "load_average_after": os.getloadavg()[0],
            },
            "timer": "time.process_time (CPU seconds of this process), median of interleaved rounds",
            "wall_seconds": wall,
            "series": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 1 if args.check and failures else 0


if __name__ == "__main__":
    sys.exit(main())
