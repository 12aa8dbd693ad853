"""Leak 22, a Polyak (soft) update: the world model is pulled towards a model trained on auxiliary data.

The leak: a pooled model of the world model's architecture learns from every source's transitions (the
policy imagines with it, which is allowed).  Rather than a hard copy (leak 21), the world model is softly
synchronised with it after each of its own updates, the way target networks are updated, with
Stable-Baselines3's ``polyak_update`` (``target.mul_(1 - tau)``, then ``torch.add(target, source,
alpha=tau, out=target)``; CleanRL writes ``target.data.copy_(tau * param.data + (1 - tau) *
target.data)``).  A fraction ``tau`` of the pooled model, and so of what it learnt from auxiliary data,
enters the world model at every step.

Caught by the dynamic layer: the pooled model's parameters carry ``aux:aux-0``/``aux:aux-1`` (they were
stepped with aux-labelled gradients), the world model's are protected by its ``GatedOptimizer``, and the
dispatcher refuses the ``out=`` write of aux-labelled values into protected memory before it happens
(``.data``, ``no_grad`` and ``out=`` are all seen).  Static types cannot see it.  The differential audit
catches it too.  (A *target copy* of the world model, updated the same way from the pooled model and used
as the world model's regulariser, is caught when the regulariser calls it, ``target(obs, action)``; not
yet, measured with this core, when it reads the target's parameters, ``((p - t.detach()) ** 2).sum()``:
the write labels the target's memory, but its parameter objects stay plain, so arithmetic on them is not
seen.  See the README.)

Fix: Polyak-average the world model only towards earlier versions of itself (a target copy of the world
model); a target copy that the world model is regularised towards must itself be updated from the world
model alone.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

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

LEAK = Leak(title="Polyak (soft) update from an auxiliary-trained model", layer="dynamic")

TAU = 0.05


def polyak_update(params: Iterable[torch.Tensor], target_params: Iterable[torch.Tensor], tau: float) -> None:
    """Stable-Baselines3's soft update: ``target <- (1 - tau) * target + tau * param``, in place."""
    with torch.no_grad():
        for param, target_param in zip(params, target_params, strict=True):
            target_param.data.mul_(1 - tau)
            torch.add(target_param.data, param.data, alpha=tau, out=target_param.data)


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train the world model, softly synchronised with a pooled model; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    pooled = WorldModel(streams.init)  # the policy's model: it learns from every source
    pooled_opt = torch.optim.Adam(pooled.parameters(), lr=LR)
    for _ in range(STEPS):
        wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
        pooled_step(pooled, pooled_opt, [data, *agents], streams.policy)
        polyak_update(pooled.parameters(), model.parameters(), TAU)  # leak: the world model is the target
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
