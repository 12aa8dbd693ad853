"""Leak 9, Python-scalar laundering: an auxiliary statistic turned into a float with ``.item()``.

The leak: the world-model loss is scaled by the auxiliary agents' mean return ("a curriculum signal"), and
``.item()`` makes it "just a number", so no gradient flows into the auxiliary data.  But the number is
still a function of the auxiliary data, and it scales every world-model step.

Caught by the dynamic layer: ``.item()`` of an aux-labelled tensor is an *escape*.  By default it is
recorded (``av.escapes()``) and warned with ``IsolationWarning``; in strict mode (``av.set_strict(True)`` or
``AMAL_STRICT=1``) it raises ``IsolationViolation`` at the call.  Without strict mode the gate alone would
accept the step: a Python float carries no label.  Static types cannot see it.  The differential audit
catches it too.

Fix: do not scale the world model's loss with auxiliary quantities.  If an escape really cannot influence
the world model (logging), say so with ``with av.declassify(reason=...)``.
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

LEAK = Leak(title="Python-scalar laundering (.item())", layer="dynamic")


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch with the loss scaled by the auxiliary mean return; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    aux_return = torch.stack([a.reward.mean() for a in agents]).mean()
    scale = 1.0 + abs(aux_return.item())  # leak: a Python float computed from auxiliary data
    for _ in range(STEPS):
        loss = wm_loss(model, data, batch_indices(streams.batches, len(data.obs)))
        wm_opt.zero_grad()
        (scale * loss).backward()
        wm_opt.step()
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
