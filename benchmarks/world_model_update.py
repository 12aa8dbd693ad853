"""CPU time of one world-model update at Table 1's sizes, and of its parameter digest.

    .venv/bin/python benchmarks/world_model_update.py              # about 2 minutes on 2 cores
    .venv/bin/python benchmarks/world_model_update.py --quick      # smoke run: tiny model, 1 repeat

What is measured
----------------
:meth:`amal_verified.world_model.learner.WorldModelLearner.update` as the trainer calls it (gated Adam,
bootstrapped batch of 256 from a primary buffer, parameter and batch digests), with the paper's world
model at Table 1's size: 20 full members (encoder 256-256-128, GRU 256, decoder 128-256-256),
HalfCheetah's dimensions (obs 17, action 6), one thread.  Variants, each its own learner built from
the same seed:

- ``product``: the first GRU step computes ``0 · weight_hh`` (the model is called with an explicit zero
  initial state), the learner's Adam (per-tensor loop, torch's CPU default): the update before the
  GRU skip;
- ``skip``: the learner as it is (``hidden=None``: the GRU skips that product);
- ``skip+foreach``: the same with the optimizer stepping ``foreach=True`` (bit-identical, tested);
- ``skip+fused``: ``torch.optim.Adam(fused=True)`` behind the same gate (NOT bit-identical to the
  others: measured for the record, not used).

All but ``skip+fused`` must end with bit-identical parameter digests; the script checks it.  Method:
one warm-up update per variant, then ``--repeats`` rounds each running one update of every variant in
turn (so drifting load hits all of them); per update the thread's CPU time (``time.thread_time``) and
wall time.  Separately, the parameter digest (``record.ledger.state_digest`` of the model's
``state_dict``, SHA-256, what every ledger record carries) is timed, with BLAKE2b over the same bytes
for comparison (not used: the digest's definition is the ledger's).  Reported: medians.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import struct
import time
from collections.abc import Callable
from typing import Any

import torch
from amal_tools.bench.runner import code_commit

from amal_verified.common.rng_streams import RunStreams
from amal_verified.isolation.buffers import PrimaryBuffer
from amal_verified.isolation.gate import GatedOptimizer
from amal_verified.record.ledger import state_digest
from amal_verified.world_model.ensemble import EnsembleWorldModel
from amal_verified.world_model.learner import WorldModelLearner, WorldModelSpec

OBS, ACT = 17, 6


def _buffer(rows: int) -> PrimaryBuffer:
    g = torch.Generator().manual_seed(0)
    buf = PrimaryBuffer(rows, obs_shape=(OBS,), action_shape=(ACT,), seed=1)
    buf.add(
        torch.randn(rows, OBS, generator=g),
        torch.randn(rows, ACT, generator=g),
        torch.randn(rows, generator=g),
        torch.randn(rows, OBS, generator=g),
        torch.zeros(rows, dtype=torch.bool),
    )
    return buf


def _learner(spec: WorldModelSpec, variant: str) -> WorldModelLearner:
    learner = WorldModelLearner(spec, RunStreams(0))
    model = learner.model
    assert isinstance(model, EnsembleWorldModel)
    if variant == "product":
        hidden = torch.zeros(spec.batch_size, spec.gru_hidden)

        def with_zero_state(obs: torch.Tensor, action: torch.Tensor, h: torch.Tensor | None = None) -> Any:
            return EnsembleWorldModel.forward(model, obs, action, hidden if h is None else h)

        setattr(model, "forward", with_zero_state)  # noqa: B010 (an instance override, measurement only)
    if variant == "skip+foreach":
        for group in learner.optimizer.param_groups:
            group["foreach"] = True
    if variant == "skip+fused":
        fused = torch.optim.Adam(model.parameters(), lr=spec.lr, fused=True)
        object.__setattr__(learner, "optimizer", GatedOptimizer(fused, names=model))
    return learner


def _blake2b(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.blake2b(b"comparison only")
    for name in sorted(state):
        h.update(struct.pack("<Q", len(name)))
        h.update(name.encode())
        h.update(state[name].detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def _median_ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        spec = WorldModelSpec(
            obs_dim=OBS,
            action_dim=ACT,
            discrete=False,
            members=3,
            batch_size=16,
            encoder_sizes=(8, 8, 4),
            gru_hidden=8,
            decoder_sizes=(4, 8, 8),
        )
        repeats = 1
    else:
        spec, repeats = WorldModelSpec(obs_dim=OBS, action_dim=ACT, discrete=False), args.repeats
    primary = _buffer(4 * spec.batch_size)
    variants = ("product", "skip", "skip+foreach", "skip+fused")
    learners = {v: _learner(spec, v) for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    wall: dict[str, list[float]] = {v: [] for v in variants}
    digests: dict[str, str] = {}
    for v in variants:
        digests[v] = learners[v].update(primary).param_digest  # warm-up
    for _ in range(repeats):
        for v in variants:
            c0, w0 = time.thread_time(), time.perf_counter()
            digests[v] = learners[v].update(primary).param_digest
            cpu[v].append(time.thread_time() - c0)
            wall[v].append(time.perf_counter() - w0)
    model_state = learners["skip"].model.state_dict()
    digest_cpu: dict[str, list[float]] = {"sha256 (state_digest)": [], "blake2b": []}
    hashers: dict[str, Callable[[], str]] = {
        "sha256 (state_digest)": lambda: state_digest(model_state),
        "blake2b": lambda: _blake2b(model_state),
    }
    for _ in range(max(3, repeats)):
        for name, fn in hashers.items():
            c0 = time.thread_time()
            fn()
            digest_cpu[name].append(time.thread_time() - c0)

    params = sum(p.numel() for p in learners["skip"].model.parameters())
    print(
        f"commit {code_commit()}, torch {torch.__version__}, 1 thread, {spec.members} members, "
        f"{params:,} parameters, batch {spec.batch_size}, {repeats} updates per variant (median)"
    )
    print("| variant | CPU ms / update | wall ms / update | CPU vs product | final digest = product's |")
    print("|---|---|---|---|---|")
    base = _median_ms(cpu["product"])
    for v in variants:
        same = "yes" if digests[v] == digests["product"] else "no"
        print(
            f"| {v} | {_median_ms(cpu[v]):.0f} | {_median_ms(wall[v]):.0f} | "
            f"{base / _median_ms(cpu[v]):.2f}× | {same} |"
        )
    for name, values in digest_cpu.items():
        print(f"parameter digest, {name}: {_median_ms(values):.1f} ms CPU")
    for v in variants[:3]:
        if digests[v] != digests["product"]:
            raise SystemExit(f"variant {v} is not bit-identical to the product variant")


if __name__ == "__main__":
    main()
