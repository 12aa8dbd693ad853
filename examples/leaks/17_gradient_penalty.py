"""Leak 17, a gradient penalty on auxiliary samples: a WGAN-GP-style smoothness term added to the world
model's loss is evaluated between primary and auxiliary states.

The leak: the world model should be smooth in its inputs, so its loss gets a gradient penalty, the squared
norm of the input gradient of its prediction (WGAN-GP, R1).  As in WGAN-GP, the penalty is evaluated at
random interpolates between "real" and "other" samples, here primary and auxiliary observations, "to
cover the states between them".  No auxiliary row is in the prediction loss, but the penalty's gradient
(``torch.autograd.grad(..., create_graph=True)``, then ``backward`` through it) depends on where the
auxiliary states are, and it moves every world-model parameter the input gradient depends on.

Caught by the dynamic layer: the interpolates carry ``aux:aux-0``/``aux:aux-1``, so does the input
gradient that ``autograd.grad`` returns (a tracked tensor: higher-order gradients are labelled like first-
order ones), and so does the gradient the penalty sends to the world model's parameters: the
``GatedOptimizer`` refuses the step.  Static types cannot see it: the penalty is a plain ``torch.Tensor``.
The differential audit catches it too.

Fix: evaluate the penalty at primary states only (or interpolates between primary states).
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

LEAK = Leak(title="gradient penalty (WGAN-GP) on auxiliary samples", layer="dynamic")

PENALTY = 10.0


def gradient_penalty(model: WorldModel, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's term: the mean squared norm of the prediction's gradient with respect to the input."""
    x = model.inputs(obs, action).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.head(model.encoder(x)).sum(), x, create_graph=True)
    return grad.pow(2).sum(dim=-1).mean()


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch with a gradient penalty; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    for _ in range(STEPS):
        idx = batch_indices(streams.batches, len(data.obs))
        loss = wm_loss(model, data, idx)
        for agent in agents:
            other = agent.obs[batch_indices(streams.policy, len(agent.obs))]
            eps = torch.rand(len(idx), 1, generator=streams.policy)
            between = eps * data.obs[idx] + (1 - eps) * other  # leak: interpolates with auxiliary states
            loss = loss + PENALTY * gradient_penalty(model, between, data.action[idx]) / len(agents)
        wm_opt.zero_grad()
        loss.backward()
        wm_opt.step()
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
