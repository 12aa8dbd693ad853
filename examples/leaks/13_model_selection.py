"""Leak 13, model selection on auxiliary data: the checkpoint kept is the one that best fits auxiliary data.

The leak: holding out real transitions is expensive, the auxiliary agents' transitions are plentiful, so
after every update the world model is validated on them and the best checkpoint is kept (early stopping
in all but name).  Every update was computed from primary data, but which of them survive in the returned
world model is decided by auxiliary data.

Caught by the dynamic layer: ``validation < best`` in an ``if`` calls ``bool()`` on an aux-labelled tensor,
an escape, and strict mode raises ``IsolationViolation`` there.  (Branch-free selection with
``torch.where`` into the parameters would be refused by the gate as a write of auxiliary data into
protected parameters.)  Static types cannot see it.  The differential audit catches it too.

Fix: validate and select on held-out *primary* transitions.
"""

from __future__ import annotations

import copy
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

LEAK = Leak(title="model selection (early stopping) on auxiliary data", layer="dynamic")


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch, keeping the checkpoint that fits the auxiliary data best; return it."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    best, best_state = torch.tensor(float("inf")), copy.deepcopy(model.state_dict())
    for _ in range(2 * STEPS):
        wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
        with torch.no_grad():
            validation = torch.cat([prediction_errors(model, a) for a in agents]).mean()
        if validation < best:  # leak: auxiliary data decides which checkpoint is kept
            best, best_state = validation, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
