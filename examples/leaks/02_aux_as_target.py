"""Leak 2, auxiliary data as the target: an auxiliary agent's rewards label the primary transitions.

The leak: the real environment's reward is sparse, the auxiliary agent's simulator has a dense one, so the
reward head of the world model is fitted to the auxiliary agent's rewards, row for row.  The inputs are
primary, but the target is auxiliary: the world model learns from auxiliary data as surely as if the
auxiliary rows were in the batch.

Caught by the static layer: ``Transitions._replace(reward=...)`` expects ``av.PrimaryData`` and is given
``av.AuxData``; ``mypy --strict`` names both types on the leak line.  The dynamic layer would refuse the
first update (the gradient carries ``aux:aux-0``) and the differential audit finds other auxiliary rewards
give another world model, but only at run time.

Fix: fit the reward head to the primary rewards; an auxiliary reward model, if wanted, is a separate model.
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

LEAK = Leak(title="auxiliary data as the target", layer="static")


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch with the first auxiliary agent's rewards as targets; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    simulator = tag_aux(amal, aux)[0]
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    labelled = data._replace(reward=simulator.reward)  # leak: the reward targets are auxiliary data
    for _ in range(STEPS):
        wm_step(model, wm_opt, labelled, batch_indices(streams.batches, len(labelled.obs)))
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
