"""How fast the differential audit runs: variants per second, and its cost per variant against a plain call.

    .venv/bin/python benchmarks/audit_throughput.py                       # default targets, 100 variants each
    .venv/bin/python benchmarks/audit_throughput.py --target my_pkg.training:train --variants 200
    .venv/bin/python benchmarks/audit_throughput.py --quick --json out.json

For each target ``module:function`` (whose module defines ``amal_example_inputs()``), in one process
with torch on one intra-op thread (as the audit runs it):

- **plain**: the median wall time of ``train(primary, aux)`` called directly on the example inputs
  (after one warm-up call) -- what one training run costs without any audit;
- **audit**: ``amal_verified.audit.check_noninterference`` with ``--variants`` variants: variants per
  second over the search, and the time per variant divided by the plain time.  That **ratio** is
  the audit's overhead per training run (deep copies of the inputs, resetting the global
  generators, generating the variant, snapshotting and comparing the world model); 1.0 would mean
  the audit costs nothing beyond running the trainer.

Variants that change row counts or agent counts make some training runs larger or smaller than the
plain one, so the ratio can fall below 1.  Nothing here is asserted; ``tests/test_benchmark_smoke.py``
runs ``--quick`` to check that the harness works.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from amal_verified.audit import check_noninterference, load_target

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TARGETS = (
    f"{ROOT / 'examples' / 'audit_target_example.py'}:train",
    f"{ROOT / 'examples' / 'integrations' / 'cleanrl_ppo_world_model.py'}:train_world_model",
    f"{ROOT / 'examples' / 'integrations' / 'sb3_world_model_callback.py'}:replay_world_model",
)


def measure(spec: str, variants: int, plain_calls: int) -> dict[str, Any]:
    target = load_target(spec)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        target.train(copy.deepcopy(target.primary), copy.deepcopy(target.aux))  # warm-up
        times = []
        for _ in range(plain_calls):
            primary, aux = copy.deepcopy(target.primary), copy.deepcopy(target.aux)
            started = time.perf_counter()
            target.train(primary, aux)
            times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    plain = statistics.median(times)
    result = check_noninterference(target.train, target.primary, target.aux, max_examples=variants, name=spec)
    per_variant = result.search_seconds / result.examples if result.examples else float("nan")
    return {
        "target": Path(spec.rpartition(":")[0]).name + ":" + spec.rpartition(":")[2],
        "ok": result.ok,
        "variants": result.examples,
        "variants_per_second": result.examples_per_second,
        "audit_seconds": result.seconds,
        "plain_train_seconds": plain,
        "seconds_per_variant": per_variant,
        "ratio_per_variant_to_plain": per_variant / plain,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", default=[], help="module:function (repeatable)")
    parser.add_argument("--variants", type=int, default=100, help="variants per audit (default 100)")
    parser.add_argument("--plain-calls", type=int, default=20, help="plain calls timed (default 20)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 5 variants, 3 plain calls")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if args.variants < 1 or args.plain_calls < 1:
        parser.error("--variants and --plain-calls must be at least 1")
    variants, calls = (5, 3) if args.quick else (args.variants, args.plain_calls)
    targets = args.target or [t for t in DEFAULT_TARGETS if Path(t.rpartition(":")[0]).is_file()]
    rows = [measure(spec, variants, calls) for spec in targets]
    print(f"torch {torch.__version__}, 1 intra-op thread, {variants} variants per audit")
    header = ("target", "verdict", "variants/s", "plain train", "per variant", "ratio")
    print(f"{header[0]:<50} {header[1]:<7} {header[2]:>10} {header[3]:>12} {header[4]:>12} {header[5]:>6}")
    for r in rows:
        print(
            f"{r['target']:<50} {'passed' if r['ok'] else 'FAILED':<7} {r['variants_per_second']:>10.1f} "
            f"{r['plain_train_seconds'] * 1e3:>9.1f} ms {r['seconds_per_variant'] * 1e3:>9.1f} ms "
            f"{r['ratio_per_variant_to_plain']:>6.2f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
