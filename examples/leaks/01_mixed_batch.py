"""Leak 1, mixed batch: auxiliary transitions join the world model's training batches.

The leak: "more data is better", so the primary and the auxiliary transitions are concatenated into one
replay set and the world model samples its batches from it.  Theorem 1 asks for a world-model trajectory
that is a function of the primary data alone; here almost every batch holds auxiliary rows.

Caught by the static layer.  The world-model update takes ``Transitions``, whose fields are
``av.PrimaryData``; ``torch.cat`` returns a plain ``torch.Tensor``, so ``mypy --strict`` rejects the mixed
set on the line that builds it, before anything runs.  The dynamic layer catches it too (the gate refuses
the first update: its gradient carries ``aux:aux-0`` and ``aux:aux-1``), and so does the differential audit
(other auxiliary values give another world model), but only once the code runs.

Fix: sample the world model's batches from ``data`` alone; the auxiliary rows may train the policy.
"""

from __future__ import annotations

import sys

import torch
from _common import (
    LR,
    STEPS,
    Amal,
    AuxInput,
    Leak,
    PrimaryInput,
    Streams,
    Transitions,
    WorldModel,
    amal_example_inputs,
    batch_indices,
    entry_points,
    tag_aux,
    tag_primary,
    wm_step,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="mixed batch", layer="static")


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch on primary and auxiliary rows together; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    merged = (torch.cat(rows) for rows in zip(data, *agents, strict=True))
    everything = Transitions(*merged)  # leak: auxiliary rows in the world model's replay set
    for _ in range(STEPS):
        wm_step(model, wm_opt, everything, batch_indices(streams.batches, len(everything.obs)))
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
