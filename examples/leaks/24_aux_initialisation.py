"""Leak 24, initialisation: the world model starts as a copy of a model pre-trained on auxiliary data.

The leak: pre-train on everything, fine-tune on what matters.  A model of the world model's architecture is
pre-trained on every source's transitions, the world model starts as a copy of it
(``copy.deepcopy(pretrained)``), and only then is its optimizer created, gated, for fine-tuning on
primary data.  Every update after that is clean, and every one of them starts from weights learnt from
auxiliary data: the world model's trajectory is not a function of the primary data alone.

Caught by the dynamic layer: the pre-trained parameters carry ``aux:aux-0``/``aux:aux-1`` (they were
stepped with aux-labelled gradients) and keep them through ``deepcopy``; ``GatedOptimizer`` reads the label
of every parameter it is asked to protect and refuses to protect one that already holds auxiliary data,
before any training step.  Static types cannot see it.  The differential audit catches it too.

Fix: initialise the world model from its own seeded generator (or from a checkpoint of gated training);
pre-train only on primary data.
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
    pooled_step,
    tag_aux,
    tag_primary,
    wm_step,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="world model initialised from an auxiliary-trained model", layer="dynamic")


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Pre-train on every source, fine-tune a copy on primary data; return the copy."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    pretrained = WorldModel(streams.init)
    pretrain_opt = torch.optim.Adam(pretrained.parameters(), lr=LR)
    for _ in range(STEPS):
        pooled_step(pretrained, pretrain_opt, [data, *agents], streams.policy)
    model = copy.deepcopy(pretrained)  # leak: the world model starts from weights learnt from auxiliary data
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    for _ in range(STEPS):
        wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
