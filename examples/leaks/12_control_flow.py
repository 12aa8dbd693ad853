"""Leak 12, control flow on auxiliary values: the auxiliary return decides how hard the world model trains.

The leak: when the auxiliary agents' mean return is high, they are probably exploiting the world model's
errors, so the world model gets extra updates that round.  Not a single auxiliary value enters a
world-model computation, but *which* computations run depends on auxiliary values: an implicit flow.

Caught by the dynamic layer: the ``if`` calls ``bool()`` on an aux-labelled tensor, an escape; strict mode
raises ``IsolationViolation`` at that line (by default it is recorded and warned with ``IsolationWarning``,
and the branch taken carries no label, so the gate alone would accept the updates).  Static types cannot
see it.  The differential audit catches it too: auxiliary returns on the other side of the threshold give
another world model.

Fix: schedule world-model updates from primary quantities only (steps, primary returns, its own loss).
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

LEAK = Leak(title="control flow on auxiliary values", layer="dynamic")

EXPLOIT_THRESHOLD = 0.5


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch, with extra updates when the auxiliary return is high; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    aux_return = torch.cat([a.reward for a in agents]).mean()
    exploited = aux_return > EXPLOIT_THRESHOLD
    updates = 2 * STEPS if exploited else STEPS  # leak: the branch depends on auxiliary values
    for _ in range(updates):
        wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
