"""Leak 6, auxiliary rows written into the primary store through a view.

The leak: the critic's batch is "the newest primary observations, with an auxiliary agent's rows swapped
in".  It starts as ``data.obs[-MIX:]``, and a slice is a *view*: the swap writes the auxiliary rows into
the primary store itself.  The rewards were cloned first, the observations were not.  From the next step
on, the world model trains on "primary" transitions some of whose observations are auxiliary ones.

Caught by the dynamic layer: labels live with the memory, so the write labels those rows of the primary
store ``aux:aux-0`` (then ``aux:aux-1``, whose rows replace them), and the next world-model gradient
carries the label; the
``GatedOptimizer`` refuses the step (``isinstance(data.obs, av.PrimaryData)`` is false from then on,
too).  Static types cannot see it: an in-place write does not change the static type of ``data.obs``.  The
differential audit catches it too.

Fix: ``critic_obs = data.obs[-MIX:].clone()``.
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

LEAK = Leak(title="auxiliary rows written into the primary store through a view", layer="dynamic")

MIX = 8


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch; the critic's batch aliases the primary store.  Return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    value = ValueHead(streams.init)
    value_opt = torch.optim.Adam(value.parameters(), lr=LR)
    for _ in range(STEPS):
        wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
        for agent in agents:
            critic_obs = data.obs[-MIX:]
            critic_reward = data.reward[-MIX:].clone()
            rows = slice(0, len(agent.obs[:MIX]))
            critic_obs[rows] = agent.obs[rows]  # leak: a slice is a view, this writes into the primary store
            critic_reward[rows] = agent.reward[rows]
            value_step(value, value_opt, critic_obs, critic_reward, batch_indices(streams.policy, MIX))
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
