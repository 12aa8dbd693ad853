"""Leak 21, weights loaded mid-training: ``world_model.load_state_dict`` of a model trained on auxiliary data.

The leak: a pooled model of the world model's architecture is trained alongside it on every source's
transitions (the policy imagines with it, which is allowed).  Halfway through, it has seen three times as
much data and predicts better, so the world model is "warm-restarted" from it,
``model.load_state_dict(pooled.state_dict())``, and fine-tuned on primary data from there.  Everything the
pooled model learnt from auxiliary data is now in the world model; the fine-tuning that follows is on
primary data only, which makes the world model look clean.

Caught by the dynamic layer: the pooled model was stepped with aux-labelled gradients, so its parameters
carry ``aux:aux-0``/``aux:aux-1``; the world model's parameters are protected by its ``GatedOptimizer``, and
``load_state_dict`` into protected parameters is checked before anything is copied: it raises
``IsolationViolation`` naming the parameters, and leaves every one of them as it was (the load is atomic).
Static types cannot see it: a state dict is a ``dict[str, Any]``.  The differential audit catches it too.

Fix: keep the world model's weights its own; if warm starts are wanted, warm-start from checkpoints of the
gated world model itself.
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
    pooled_step,
    tag_aux,
    tag_primary,
    wm_step,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="weights of an auxiliary-trained model loaded mid-training", layer="dynamic")


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train the world model and a pooled model, warm-restarting the first from the second; return it."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    pooled = WorldModel(streams.init)  # the policy's model: it learns from every source
    pooled_opt = torch.optim.Adam(pooled.parameters(), lr=LR)
    for step in range(STEPS):
        if step == STEPS // 2:
            model.load_state_dict(pooled.state_dict())  # leak: weights learnt from auxiliary data
        wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
        pooled_step(pooled, pooled_opt, [data, *agents], streams.policy)
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
