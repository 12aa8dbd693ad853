"""Leak 27, a value-aware latent target: the encoder's features moved along a gradient captured there.

The leak: each world-model update also pulls the encoder's features of the primary states towards
features that predict the *simulated* return of those states better: a critic head reads the features, its
error against the return the auxiliary simulators estimate from their rollouts is differentiated with
respect to the features (``torch.autograd.grad(loss, features)``), and the features moved one step along
that gradient, detached, become a regression target for the encoder.  Only primary rows enter the world
model's batches, yet the target depends on the simulator's returns.

Caught by the dynamic layer: the critic's call on the features is tracked at its boundary, and the gradient
it hands back towards them leaves the call through a hooked alias of its input, which autograd runs before
it returns a gradient captured at the input: the captured gradient carries the simulator's label, so does
the target, and the world model's gated step refuses the encoder's gradients.  Static types cannot see it:
the target is a plain ``torch.Tensor``.  The differential audit catches it too.

Fix: build latent targets from primary data only (returns of real episodes), or keep the value-aware term
on the policy's own encoder.
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
    wm_loss,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="value-aware latent target from a gradient captured at the features", layer="dynamic")

TARGET_STEP = 0.1


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train with a value-aware latent target; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    rollouts = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    critic = nn.Linear(HIDDEN, 1)
    with torch.no_grad():
        for p in critic.parameters():
            p.copy_(torch.randn(p.shape, generator=streams.policy) * 0.3)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    for _ in range(STEPS):
        features = model.features(data.obs, data.action)  # of every primary state
        # leak: the simulators' estimate of the return, from their rollouts
        simulated = torch.stack([r.reward.mean() for r in rollouts]).mean() if rollouts else torch.zeros(())
        value_error = F.mse_loss(critic(features).squeeze(-1), simulated.expand(len(data.obs)))
        (step,) = torch.autograd.grad(value_error, features)
        target = (features - TARGET_STEP * step).detach()
        idx = batch_indices(streams.batches, len(data.obs))
        wm_opt.zero_grad()
        latent_error = (model.features(data.obs[idx], data.action[idx]) - target[idx]).pow(2).mean()
        (wm_loss(model, data, idx) + latent_error).backward()
        wm_opt.step()
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
