"""Control: a trainer without a leak, which no layer may flag.

The world model learns from the primary transitions alone, through a gated optimizer, with its own
random stream; a critic learns from primary and auxiliary rows, as a policy may.  Every leak in this
gallery is this trainer with one change.  If any layer flagged it, "caught" in the table would mean
nothing: ``python examples/leaks/00_control.py`` runs all three layers and exits 0 when none of them
reports anything.
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

LEAK = Leak(title="control: no leak", layer=None)


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch; return the world model."""
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
        wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
        value_step(value, value_opt, v_obs, v_reward, batch_indices(streams.policy, len(v_obs)))
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
