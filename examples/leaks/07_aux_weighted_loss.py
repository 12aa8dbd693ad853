"""Leak 7, auxiliary-weighted loss: per-row weights of the world-model loss computed from auxiliary data.

The leak: "focus the world model on the states the auxiliary agents have not covered", so each primary row
is weighted by its distance to the nearest auxiliary state.  The batches are purely primary, but the
weights, and so every gradient, are functions of the auxiliary observations.

Caught by the dynamic layer: the weights carry ``aux:aux-0`` and ``aux:aux-1``, the weighted loss and its
gradients too, and the ``GatedOptimizer`` refuses the step.  Static types cannot see it: the loss is a plain
``torch.Tensor`` whatever it was computed from.  The differential audit catches it too.

Fix: weight the rows with primary quantities only (e.g. the world model's own ensemble disagreement), or
leave the loss unweighted.
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
    prediction_errors,
    tag_aux,
    tag_primary,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="auxiliary-weighted loss", layer="dynamic")


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch with loss weights from auxiliary coverage; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    distance = torch.cdist(data.obs, torch.cat([a.obs for a in agents])).min(dim=1).values
    weights = distance / distance.mean()  # leak: loss weights computed from auxiliary observations
    for _ in range(STEPS):
        idx = batch_indices(streams.batches, len(data.obs))
        wm_opt.zero_grad()
        (weights[idx] * prediction_errors(model, data, idx)).mean().backward()
        wm_opt.step()
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
