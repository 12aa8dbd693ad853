"""Leak 3, shared encoder: the critic reuses the world model's encoder and trains it on auxiliary data.

The leak: ``Q(s, a) = q_head(world_model.encoder(s, a))`` saves parameters, and the critic's optimizer
holds the encoder's parameters as well as its own head.  The critic learns from auxiliary transitions (as
a policy may), so every critic step moves the encoder, which is part of the world model.  The world
model's own loss never sees an auxiliary row.

Caught by the dynamic layer: the encoder's parameters are protected by the world model's
``GatedOptimizer``, and a global optimizer hook refuses the critic's plain ``Adam`` step because their
gradients carry ``aux:aux-0`` and ``aux:aux-1``.  Static types cannot see it: every loss here is a plain
``torch.Tensor`` and no ``PrimaryData`` boundary is crossed.  The differential audit catches it too.

Fix: give the critic its own encoder, or feed it ``world_model.features(...).detach()`` and leave the
encoder out of its optimizer.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from _common import (
    HIDDEN,
    LR,
    STEPS,
    Amal,
    AuxInput,
    Leak,
    PrimaryInput,
    Streams,
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

LEAK = Leak(title="shared encoder", layer="dynamic")


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch; the critic shares the world model's encoder.  Return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    q_head = nn.Linear(HIDDEN, 1)
    critic_params = [*model.encoder.parameters(), *q_head.parameters()]  # leak: the encoder is shared
    critic_opt = torch.optim.Adam(critic_params, lr=LR)
    q_obs = torch.cat([data.obs, *(a.obs for a in agents)])
    q_action = torch.cat([data.action, *(a.action for a in agents)])
    q_reward = torch.cat([data.reward, *(a.reward for a in agents)])
    for _ in range(STEPS):
        wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
        pick = batch_indices(streams.policy, len(q_obs))
        q = q_head(model.features(q_obs[pick], q_action[pick])).squeeze(-1)
        critic_opt.zero_grad()
        F.mse_loss(q, q_reward[pick]).backward()
        critic_opt.step()
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
