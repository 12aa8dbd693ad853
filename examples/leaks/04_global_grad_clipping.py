"""Leak 4, global gradient clipping: one ``clip_grad_norm_`` over the world model and the critic.

The leak: both losses are summed, back-propagated once, and the gradients of *all* parameters are clipped
to a common norm.  The clipping factor ``max_norm / total_norm`` depends on the critic's gradients, which
depend on auxiliary data, and it multiplies the world model's gradients: larger auxiliary rewards, smaller
world-model steps.  No auxiliary row ever enters the world model's loss.

Caught by the dynamic layer: ``clip_grad_norm_`` multiplies each world-model gradient by an aux-labelled
factor, so the gradients carry ``aux:aux-0`` and ``aux:aux-1`` and the ``GatedOptimizer`` refuses the step.
Static types cannot see it (the gradients are plain tensors to mypy).  The differential audit catches it
too.

Fix: clip each model's gradients separately (``clip_grad_norm_(world_model.parameters(), ...)`` and
``clip_grad_norm_(critic.parameters(), ...)``).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
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
    wm_loss,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="global gradient clipping", layer="dynamic")

MAX_NORM = 0.1


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch, clipping all gradients together; return the world model."""
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
        pick = batch_indices(streams.policy, len(v_obs))
        loss = wm_loss(model, data, batch_indices(streams.batches, len(data.obs)))
        loss = loss + F.mse_loss(value(v_obs[pick]), v_reward[pick])
        wm_opt.zero_grad()
        value_opt.zero_grad()
        loss.backward()
        everything = [*model.parameters(), *value.parameters()]
        nn.utils.clip_grad_norm_(everything, max_norm=MAX_NORM)  # leak: one norm over both models
        wm_opt.step()
        value_opt.step()
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
