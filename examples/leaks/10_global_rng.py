"""Leak 10, a global-RNG channel: the number of random draws depends on how much auxiliary data there is.

The leak: the critic shuffles all its rows with ``torch.randperm(len(rows))`` and the world model draws its
batch with ``torch.randint(...)``, both from torch's *global* generator.  ``randperm`` advances the global
generator by an amount that depends on the number of auxiliary rows, which shifts every later world-model
batch.  No auxiliary value reaches the world model; the auxiliary data *count* steers which primary rows
it sees.

Caught by the differential audit only: with another number of auxiliary rows or agents (and the global
generators reset identically before each run) the world model differs.  The dynamic layer cannot see it:
labels follow values, and a generator's state is not a labelled value (the world model's batch indices are
plain tensors).  Static types cannot see it either.

Fix: give every consumer its own seeded ``torch.Generator`` (as ``Streams`` and the library's buffers do)
and pass it to every draw.
"""

from __future__ import annotations

import sys

import torch
from _common import (
    BATCH,
    LR,
    STEPS,
    Amal,
    AuxInput,
    Leak,
    PrimaryInput,
    Streams,
    ValueHead,
    WorldModel,
    amal_example_inputs,
    entry_points,
    tag_aux,
    tag_primary,
    value_step,
    wm_step,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="global-RNG consumption depending on auxiliary counts", layer="differential")


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch, drawing every random number from the global generator; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    value = ValueHead(streams.init)
    value_opt = torch.optim.Adam(value.parameters(), lr=LR)
    v_obs = torch.cat([data.obs, *(a.obs for a in agents)])
    v_reward = torch.cat([data.reward, *(a.reward for a in agents)])
    for _ in range(STEPS):
        wm_step(model, wm_opt, data, torch.randint(0, len(data.obs), (BATCH,)))
        shuffle = torch.randperm(len(v_obs))  # leak: global generator advanced by the auxiliary row count
        value_step(value, value_opt, v_obs, v_reward, shuffle[:BATCH])
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
