"""Leak 15, updates silently skipped when auxiliary data is corrupt.

The leak: auxiliary collectors sometimes crash and deliver NaN or Inf, so each round's auxiliary data is
validated when it arrives, and a round whose data fails is skipped, world-model update included ("nothing
sensible can be done this round").  Corrupt auxiliary data thereby removes world-model updates: their
number depends on auxiliary values.

Caught by the differential audit only: auxiliary variants with NaN or Inf give a world model trained on
fewer updates.  The dynamic layer cannot see it: the validation runs on the raw, plain tensors as they
arrive, before tagging, and operations on plain tensors run untracked (had the check run on the tagged
data, its ``bool()`` would be an escape, refused in strict mode).  Static types cannot see it either.

Fix: the world-model update does not depend on the auxiliary data: drop the bad auxiliary rows (or the
round's *auxiliary* work) and run the world-model update regardless.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import torch
from _common import (
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
    batch_indices,
    entry_points,
    tag_aux,
    tag_primary,
    value_step,
    wm_step,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="updates skipped when auxiliary data is corrupt", layer="differential")


def is_finite(agent: Mapping[str, torch.Tensor]) -> bool:
    """True when every value an auxiliary agent delivered is finite."""
    return all(bool(torch.isfinite(v).all()) for v in agent.values())


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch in rounds, skipping those with corrupt auxiliary data; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    value = ValueHead(streams.init)
    value_opt = torch.optim.Adam(value.parameters(), lr=LR)
    for _ in range(STEPS):
        arrived = [{field: v.clone() for field, v in agent.items()} for agent in aux]  # this round's delivery
        if not all(is_finite(agent) for agent in arrived):
            continue  # leak: the world-model update of this round is skipped with the auxiliary data
        agents = tag_aux(amal, arrived)
        v_obs = torch.cat([data.obs, *(a.obs for a in agents)])
        v_reward = torch.cat([data.reward, *(a.reward for a in agents)])
        value_step(value, value_opt, v_obs, v_reward, batch_indices(streams.policy, len(v_obs)))
        wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
