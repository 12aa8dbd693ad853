"""Leak 26, tagging read as an in-place operation: the code goes on with the object it tagged.

The leak: each auxiliary agent's observations are tagged with ``av.aux(agent_obs, source=...)`` and the
returned tensor is dropped, as if tagging changed the tensor in place; the trainer then computes the
world model's input scale from every observation it has, the untagged objects included, with plain
arithmetic (``torch.cat``, ``std``).  The scale is world-model state (a buffer saved with it) and divides
every input of every update, so auxiliary observations shape the world model although none is in its
batches.

Caught by the dynamic layer: ``av.aux`` labels the memory *and* makes the object it was given tracked in
place (``agent_obs`` itself is then a tracked tensor), so the concatenation and the statistics computed
from it carry the agents' labels, and the write of the scale into the world model's buffer, which its
``GatedOptimizer`` protects, is refused before it happens.  Static types cannot see it: the statistics
are plain ``torch.Tensor`` values on both sides of the write.  The differential audit catches it too.

Fix: compute the world model's input statistics from the primary transitions only.
"""

from __future__ import annotations

import sys

import torch
from _common import (
    LR,
    OBS_DIM,
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
    tag_primary,
    wm_step,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="tagging read as in place: the tagged object used on", layer="dynamic")


class ScaledWorldModel(WorldModel):
    """:class:`WorldModel` on observations divided by a per-dimension scale (a buffer)."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__(generator)
        self.scale: torch.Tensor
        self.register_buffer("scale", torch.ones(OBS_DIM))

    def inputs(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return super().inputs(obs / self.scale, action)


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train with an input scale fitted to every observation; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    for i, agent in enumerate(aux):
        amal.aux(agent["obs"], source=f"aux-{i}")  # tagged; the returned tensor is not kept
    model = ScaledWorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    every_obs = torch.cat([primary["obs"], *(agent["obs"] for agent in aux)])  # leak: the agents' too
    with torch.no_grad():
        model.scale.copy_(every_obs.std(dim=0) + 1e-3)
    for _ in range(STEPS):
        wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
