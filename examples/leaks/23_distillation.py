"""Leak 23, distillation: the world model's reward head is distilled from a critic trained on auxiliary data.

The leak: the critic estimates the reward of a state from primary and auxiliary transitions (as a policy
may), three times as many as the world model sees, so its estimates are smoother.  The world model's
reward prediction is regularised towards them on the *primary* states of its batch, a distillation term
with the critic as the teacher (``value(obs).detach()``: "the teacher is not trained by it").  Only primary
states go into either model, but the teacher's weights were learnt from auxiliary data: its soft targets
carry what it learnt, and the world model learns them.

Caught by the dynamic layer: the critic was stepped with aux-labelled gradients, so its parameters carry
``aux:aux-0``/``aux:aux-1``; a module call's output is labelled with its inputs *and its parameters*, so the
soft targets are labelled ``primary:real-env, aux:aux-0, aux:aux-1`` (``detach`` and ``no_grad`` stop
gradients, not labels), so is the distillation term's gradient, and the ``GatedOptimizer`` refuses the
step.  Static types cannot see it: the teacher's output is a plain ``torch.Tensor``.  The differential
audit catches it too.

Fix: distil only from teachers trained on primary data (or drop the term).
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
    value_step,
    wm_loss,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="distillation from a teacher trained on auxiliary data", layer="dynamic")

DISTILL = 0.5


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch, distilling the critic's reward estimates into the world model; return it."""
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
        idx = batch_indices(streams.batches, len(data.obs))
        soft_reward = value(data.obs[idx]).detach()  # leak: the teacher learnt from auxiliary data
        predicted_reward = model(data.obs[idx], data.action[idx])[:, -1]
        loss = wm_loss(model, data, idx) + DISTILL * F.mse_loss(predicted_reward, soft_reward)
        wm_opt.zero_grad()
        loss.backward()
        wm_opt.step()
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
