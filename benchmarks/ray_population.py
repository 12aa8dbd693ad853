"""Cost model of the auxiliary population on Ray (``aux_backend="ray"``) against in-process stepping.

For each cell — ``agents`` auxiliary agents, ``actors`` Ray actors (agents split evenly), chunks of
``chunk`` steps (``flush_every`` = the boundary period = ``chunk``), an environment costing ``env_us``
microseconds of CPU per agent-step (``BusyCartPole-<µs>us-v0``, ``benchmarks/_busy_env.py``), and
``driver_us`` microseconds of driver work per primary step (a busy wait standing for the primary
step and the updates, with which the chunks overlap) — it steps the population ``steps`` primary steps
and reports, per agent-step, the wall time and the driver's CPU time (``time.process_time``: the
driver's own cost, which is what stays on the training machine), in-process and on Ray side by side.
Actor start-up (a process importing torch and the environments) is measured apart, once per cell,
and excluded from the per-step numbers.  ``pad`` is the cost of the policy's batched call at the
population's size (each actor computes its agents' actions in a batch of the whole population, see
``amal_verified.agents.aux_population.step_runners``), measured in process.

Usage::

    python benchmarks/ray_population.py              # the grid of benchmarks/README.md (minutes)
    python benchmarks/ray_population.py --quick      # a few cells
    RAY_ADDRESS=... python benchmarks/ray_population.py --agents 64 --actors 16   # on a cluster

Prints a Markdown table (and ``--json FILE`` writes the rows).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _busy_env  # noqa: F401  (registers BusyCartPole-<µs>us-v0 here)
import torch

from amal_verified.agents.aux_population import AuxPopulation
from amal_verified.agents.ray_population import RayAuxPopulation
from amal_verified.common.rng_streams import RunStreams
from amal_verified.envs import task_info


def _settings(agents: int, chunk: int) -> dict[str, Any]:
    return {
        "num_agents": agents,
        "population": max(agents, 8),
        "elite_fraction": 0.25,
        "std_floor": 0.05,
        "beta": 1.0,
        "hidden": 32,
        "buffer_size": 100_000,
        "obs_noise": None,
        "flush_every": chunk,
    }


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class _Clock:
    def __init__(self, chunk: int) -> None:
        self.k = 0
        self.chunk = chunk

    def __call__(self) -> int:
        return self.k

    def boundary(self, k: int) -> bool:
        return k % self.chunk == 0


def _run(pop: Any, clock: _Clock, steps: int, driver_us: float) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        clock.k += 1
        _spin(driver_us * 1e-6)
        pop.step()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(
    agents: int, actors: int, chunk: int, env_us: int, driver_us: float, steps: int
) -> dict[str, Any]:
    """One cell, in process and on Ray (see the module docstring); times in µs per agent-step."""
    env_id = f"_busy_env:BusyCartPole-{env_us}us-v0"
    task = task_info(env_id)
    settings = _settings(agents, chunk)
    local = AuxPopulation(task, RunStreams(0), **settings)
    local_wall, local_cpu = _run(local, _Clock(chunk), steps, driver_us)
    clock = _Clock(chunk)
    started = time.perf_counter()
    remote = RayAuxPopulation(
        task,
        RunStreams(0),
        **settings,
        clock=clock,
        boundary=clock.boundary,
        agents_per_actor=-(-agents // actors),
        timeout=600.0,
    )
    start_s = time.perf_counter() - started
    try:
        ray_wall, ray_cpu = _run(remote, clock, steps, driver_us)
        identical = _same_rows(local, remote)
    finally:
        remote.close()
    policy = local.policy
    params = local.params
    obs = torch.zeros((agents, 1, policy.obs_dim))
    t = time.perf_counter()
    for _ in range(200):
        policy.act(params, obs)
    pad_us = (time.perf_counter() - t) / 200 * 1e6
    per = 1e6 / (steps * agents)
    return {
        "agents": agents,
        "actors": len(remote.groups),
        "chunk": chunk,
        "env_us": env_us,
        "driver_us": driver_us,
        "steps": steps,
        "local_wall_us": local_wall * per,
        "local_cpu_us": local_cpu * per,
        "ray_wall_us": ray_wall * per,
        "ray_driver_cpu_us": ray_cpu * per,
        "actor_start_s": start_s,
        "pad_us_per_call": pad_us,
        "identical": identical,
    }


def _same_rows(local: AuxPopulation, remote: RayAuxPopulation) -> bool:
    from amal_verified.isolation.escapes import declassify

    with declassify(reason="the benchmark compares stored auxiliary rows"):
        return all(
            torch.equal(a.state_dict()["obs"], b.state_dict()["obs"])
            for a, b in zip(local.buffers, remote.buffers, strict=True)
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few cells")
    parser.add_argument("--agents", type=int, nargs="*", default=None)
    parser.add_argument("--actors", type=int, nargs="*", default=None)
    parser.add_argument("--chunks", type=int, nargs="*", default=None)
    parser.add_argument("--env-us", type=int, nargs="*", default=None)
    parser.add_argument("--driver-us", type=float, nargs="*", default=None)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if args.quick:
        grid = {"agents": [8], "actors": [2], "chunks": [25], "env_us": [0, 200], "driver_us": [0.0]}
    else:
        grid = {
            "agents": [8],
            "actors": [1, 2, 4],
            "chunks": [25, 200],
            "env_us": [0, 200, 1000],
            "driver_us": [0.0, 2000.0],
        }
    for key in grid:
        given = getattr(args, key.replace("-", "_"))
        if given:
            grid[key] = given
    import ray

    if not ray.is_initialized() and not os.environ.get("RAY_ADDRESS"):
        ray.init(
            num_cpus=max(grid["actors"]), include_dashboard=False, log_to_driver=False, logging_level="ERROR"
        )
    rows = []
    print(
        "| agents | actors | chunk | env µs | driver µs | in-process wall | in-process CPU | Ray wall "
        "| Ray driver CPU | actor start s | identical |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for agents, actors, chunk, env_us, driver_us in itertools.product(
        grid["agents"], grid["actors"], grid["chunks"], grid["env_us"], grid["driver_us"]
    ):
        steps = max(args.steps, 2 * chunk)
        row = measure(agents, actors, chunk, env_us, driver_us, steps)
        rows.append(row)
        print(
            f"| {agents} | {row['actors']} | {chunk} | {env_us} | {driver_us:g} | {row['local_wall_us']:.0f} "
            f"| {row['local_cpu_us']:.0f} | {row['ray_wall_us']:.0f} | {row['ray_driver_cpu_us']:.1f} "
            f"| {row['actor_start_s']:.1f} | {row['identical']} |",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
