"""Leak 14, a schedule keyed to auxiliary counts: the number of world-model updates follows the data volume.

The leak: "keep the update-to-data ratio constant", so each round the world model gets one update per
``ROWS_PER_UPDATE`` transitions collected, auxiliary transitions included.  No auxiliary value is read;
their *number* sets how many updates the world model gets (a learning rate scaled with the dataset size
leaks the same way).

Caught by the differential audit only: with other auxiliary row counts or another number of agents the
world model differs.  The dynamic layer cannot see it: ``len()`` of a tagged tensor is shape metadata, not
a labelled value, so nothing escapes and no gradient carries a label.  Static types cannot see it either.

Fix: derive world-model schedules from primary counts only (primary steps, primary buffer size).
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
    wm_step,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="schedule keyed to auxiliary counts", layer="differential")

ROWS_PER_UPDATE = 16


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch, one update per ``ROWS_PER_UPDATE`` rows of any source; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    collected = len(data.obs) + sum(len(a.obs) for a in agents)
    updates = max(1, collected // ROWS_PER_UPDATE)  # leak: the auxiliary row count sets the schedule
    for _ in range(STEPS):
        for _ in range(updates):
            wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
