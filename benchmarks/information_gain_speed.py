"""Speed of the information-gain estimator: Python loop, the direct vectorised form, the quadratic form.

    .venv/bin/python benchmarks/information_gain_speed.py             # about 1 minute on 2 cores
    .venv/bin/python benchmarks/information_gain_speed.py --quick     # smoke run: 1 repeat, 32 states
    .venv/bin/python benchmarks/information_gain_speed.py --json out.json

What is measured
----------------
Three implementations of the same estimate (PCE, the trainer's default), on the same inputs and the
same generator state, at the trainer's sizes: K = 20 members, 5 samples per member (M = 100), a chunk
of 256 states (``agents/rollouts._EIG_CHUNK``), D = 4 (Pendulum: obs 3 + reward) and D = 18
(HalfCheetah: obs 17 + reward), float32 inputs as the trainer passes them, no autograd:

- **loop**: :func:`amal_tools.bench.ratios.loop_gaussian_ensemble_eig`, the estimator as its formula
  reads (Python loops over samples and members, vectorised over states), in the inputs' dtype;
- **direct**: the direct vectorised form the library used before the quadratic form (``_direct``
  below: one (N, K, K, B, D) tensor, in the inputs' dtype);
- **quadratic**: :func:`amal_verified.world_model.information_gain.gaussian_ensemble_eig` (float64).

Method: one process, ``torch.set_num_threads(1)``, one warm-up call of each, then ``--repeats``
rounds, each timing every implementation once in turn (so drifting machine load hits all three);
per call the thread's CPU time (``time.thread_time``: user + system, the headline) and wall time
(``time.perf_counter``).  Reported: medians, and speed-ups loop/x as the ratio of medians.  Also the
largest difference of each against the loop in nats.  Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from amal_tools.bench.ratios import loop_gaussian_ensemble_eig
from amal_tools.bench.runner import code_commit

from amal_verified.world_model.information_gain import gaussian_ensemble_eig

MEMBERS = 20
PER_MEMBER = 5
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _direct(
    means: torch.Tensor, stds: torch.Tensor, num_samples: int, generator: torch.Generator
) -> torch.Tensor:
    """The direct vectorised PCE estimate in the inputs' dtype (the library's previous form)."""
    k = means.shape[0]
    noise = torch.randn((num_samples, *means.shape), generator=generator, dtype=means.dtype)
    obs = means.unsqueeze(0) + stds.unsqueeze(0) * noise
    z = (obs.unsqueeze(2) - means.unsqueeze(0).unsqueeze(0)) / stds.unsqueeze(0).unsqueeze(0)
    log_lik = (-0.5 * z.square() - torch.log(stds).unsqueeze(0).unsqueeze(0) - _HALF_LOG_2PI).sum(dim=-1)
    own = torch.diagonal(log_lik, dim1=1, dim2=2)
    log_marginal = torch.logsumexp(log_lik, dim=2) - math.log(k)
    return (own.permute(0, 2, 1) - log_marginal).mean(dim=(0, 1))


def _inputs(states: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    centre = torch.randn((1, states, dim), generator=g)
    means = centre + 0.3 * torch.randn((MEMBERS, states, dim), generator=g)
    stds = torch.exp(-1.0 + 0.3 * torch.randn((MEMBERS, states, dim), generator=g))
    return means, stds


def measure(dim: int, states: int, repeats: int) -> dict[str, Any]:
    """Median CPU and wall milliseconds per call of each implementation, and agreement with the loop."""
    means, stds = _inputs(states, dim)

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(2)

    impls: dict[str, Callable[[], torch.Tensor]] = {
        "loop": lambda: loop_gaussian_ensemble_eig(means, stds, num_samples=PER_MEMBER, generator=gen()),
        "direct": lambda: _direct(means, stds, PER_MEMBER, gen()),
        "quadratic": lambda: gaussian_ensemble_eig(means, stds, num_samples=PER_MEMBER, generator=gen()),
    }
    cpu: dict[str, list[float]] = {name: [] for name in impls}
    wall: dict[str, list[float]] = {name: [] for name in impls}
    with torch.no_grad():
        results = {name: fn() for name, fn in impls.items()}  # warm-up, and the values compared
        for _ in range(repeats):
            for name, fn in impls.items():
                c0, w0 = time.thread_time(), time.perf_counter()
                fn()
                cpu[name].append(time.thread_time() - c0)
                wall[name].append(time.perf_counter() - w0)
    cpu_ms = {name: 1e3 * statistics.median(v) for name, v in cpu.items()}
    wall_ms = {name: 1e3 * statistics.median(v) for name, v in wall.items()}
    return {
        "dim": dim,
        "states": states,
        "cpu_ms": cpu_ms,
        "wall_ms": wall_ms,
        "speedup_cpu": {name: cpu_ms["loop"] / v for name, v in cpu_ms.items()},
        "speedup_wall": {name: wall_ms["loop"] / v for name, v in wall_ms.items()},
        "max_abs_diff_vs_loop": {
            name: float((r.double() - results["loop"].double()).abs().max()) for name, r in results.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    states, repeats = (32, 1) if args.quick else (256, args.repeats)
    rows = [measure(dim, states, repeats) for dim in (4, 18)]
    print(f"commit {code_commit()}, torch {torch.__version__}, 1 thread, K = {MEMBERS}, {PER_MEMBER}/member")
    print("| D | loop ms (CPU / wall) | direct ms | quadratic ms | direct speed-up | quadratic speed-up |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        c, w = r["cpu_ms"], r["wall_ms"]
        sc, sw = r["speedup_cpu"], r["speedup_wall"]
        print(
            f"| {r['dim']} | {c['loop']:.1f} / {w['loop']:.1f} | {c['direct']:.1f} / {w['direct']:.1f} "
            f"| {c['quadratic']:.1f} / {w['quadratic']:.1f} | {sc['direct']:.2f}× / {sw['direct']:.2f}× "
            f"| {sc['quadratic']:.2f}× / {sw['quadratic']:.2f}× |"
        )
    for r in rows:
        print(f"D = {r['dim']}: max |Δ| against the loop (nats): {r['max_abs_diff_vs_loop']}")
    if args.json:
        args.json.write_text(json.dumps({"commit": code_commit(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
