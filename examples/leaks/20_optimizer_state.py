"""Leak 20, optimizer state: the world model's Adam moments are loaded from an optimizer that trained on
auxiliary data.

The leak: the exploration bonus is the disagreement between the world model and a pooled model of the
same architecture that the policy imagines with, trained on every source's transitions (which it may).
So that their disagreement reflects their data rather than their optimizers, the two are kept in lock-step:
halfway through, the world model's optimizer is synchronised with the pooled model's,
``wm_opt.load_state_dict(pooled_opt.state_dict())``.  No parameter is copied, but Adam's moments are
running averages of the pooled model's gradients, on auxiliary rows among others, and every later
world-model step is ``m / (sqrt(v) + eps)``: its direction and size now depend on auxiliary data.

Caught by the dynamic layer: the pooled model's gradients carry ``aux:aux-0``/``aux:aux-1``, so do the
moments its Adam accumulated, and ``GatedOptimizer.load_state_dict`` checks the incoming state before
loading it and refuses (nothing is loaded); assigning one of those state tensors into the world model's
state is refused at the next step.  Static types cannot see it: a state dict is a ``dict[str, Any]``.  The
differential audit catches it too.  (Not caught by the dynamic layer yet, measured with this core: loading
a ``copy.deepcopy`` of the pooled optimizer's state dict, or editing the world model's state in place
from it, ``exp_avg_sq.lerp_(pooled_state["exp_avg_sq"], 0.5)``.  An optimizer's state is plain memory
whose auxiliary label no operation on it carries further; see the README.)

Fix: leave the world model's optimizer state to the world model; reset both optimizers, if they must
match, rather than copying one into the other.
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

LEAK = Leak(title="optimizer state loaded from an auxiliary-trained optimizer", layer="dynamic")


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train the world model and a pooled model in lock-step; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    pooled = WorldModel(streams.init)  # the policy's model: it learns from every source
    pooled_opt = torch.optim.Adam(pooled.parameters(), lr=LR)
    for step in range(STEPS):
        wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
        pooled_step(pooled, pooled_opt, [data, *agents], streams.policy)
        if step == STEPS // 2:
            wm_opt.load_state_dict(pooled_opt.state_dict())  # leak: moments of auxiliary gradients
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
