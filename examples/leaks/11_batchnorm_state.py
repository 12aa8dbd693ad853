"""Leak 11, batch-norm state: the world model run on auxiliary data in train mode updates its statistics.

The leak: the auxiliary agents are rewarded for surprising the world model, so its prediction error is
computed on their transitions, under ``torch.no_grad()`` "so it does not train on them".  But the model
is still in train mode: each forward pass through ``BatchNorm1d`` moves its running mean and variance
towards the auxiliary batch.  Those statistics are world-model state, saved and used at evaluation time.
(Dropout in train mode leaks the same way, through the global generator it draws its masks from.)

Caught by the dynamic layer: ``no_grad`` stops gradients, not labels.  The running statistics are
buffers of the world model, protected by its ``GatedOptimizer``; a call of the world model on
aux-labelled data that changes them is undone when it returns (the buffers get their old values back) and
refused, naming the buffers.  Static types cannot see it.  The differential audit catches it too (buffers
are compared with the parameters).

Fix: ``model.eval()`` around every use of the world model on auxiliary data (``model.train()`` after), or
a copy of the model for scoring.
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
    wm_step,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="batch-norm statistics updated on auxiliary data in train mode", layer="dynamic")


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch, scoring the auxiliary agents with the model in train mode; return it."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init, batch_norm=True)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    surprise: list[torch.Tensor] = []  # the auxiliary agents' intrinsic rewards, for their own training
    for _ in range(STEPS):
        wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
        with torch.no_grad():
            surprise += [prediction_errors(model, a).mean() for a in agents]  # leak: still in train mode
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
