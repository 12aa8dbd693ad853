"""Leak 30, prioritised replay: which primary transitions train the world model is chosen by a critic
that learnt from auxiliary data.

The leak: prioritised experience replay samples transitions in proportion to a critic's TD error, and the
critic learns from every source (it is the policy's, and the auxiliary agents' transitions are plentiful).
Every row the world model sees is primary, and each index is drawn from the run's own generator, but the
distribution the indices are drawn from is a function of the auxiliary data: change it and the world model
trains on other rows.

Caught by the dynamic layer: the priorities carry the auxiliary labels, ``torch.multinomial`` gives its
indices their label, and rows gathered with them carry it too (labels join the indices' into the values
they select), so the gradients do and the ``GatedOptimizer`` refuses the step.  Static types cannot see
it: the gathered rows are typed as the primary fields they came from.  The differential audit catches it
too.

Fix: prioritise the world model's batches by primary quantities only (its own prediction error on the
primary rows), or sample them uniformly; the critic may keep its own prioritised replay.
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
    batch_indices,
    entry_points,
    tag_aux,
    tag_primary,
    value_step,
    wm_step,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="prioritised replay by a critic trained on auxiliary data", layer="dynamic")


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch, drawing each world-model batch by the critic's error on it; return the model."""
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
        value_step(value, value_opt, v_obs, v_reward, batch_indices(streams.policy, len(v_obs)))
        with torch.no_grad():
            priority = (value(data.obs) - data.reward).abs() + 1e-3  # leak: a critic of every source
        idx = torch.multinomial(priority, BATCH, replacement=True, generator=streams.batches)
        wm_step(model, wm_opt, data, idx)
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
