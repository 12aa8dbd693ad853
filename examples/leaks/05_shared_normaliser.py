"""Leak 5, shared observation normaliser: running statistics updated with auxiliary observations.

The leak: one running mean/variance normaliser for "all observations the agent sees" sits in front of the
world model's encoder, and it is updated with the primary and the auxiliary observations.  Its statistics
are world-model state (they are saved with it) and they rescale every input of every world-model update,
so auxiliary observations shape the world model although none is in its batches.

Caught by the dynamic layer: the world model owns the normaliser's buffers, so its ``GatedOptimizer``
protects them, and the dispatcher refuses the first in-place update that would write aux-labelled values
into them (``lerp_`` under ``no_grad``), before anything is written.  Static types cannot see a write into
a buffer.  The differential audit catches it too (the statistics are compared with the parameters).

Fix: normalise the world model's inputs with statistics of primary data only (a separate normaliser for
the policy's inputs, if it wants one).
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
    tag_aux,
    tag_primary,
    wm_step,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="shared observation normaliser", layer="dynamic")


class Normaliser(nn.Module):
    """``(x − mean) / std`` with exponential running statistics (buffers) updated by :meth:`update`."""

    def __init__(self, momentum: float = 0.5) -> None:
        super().__init__()
        self.momentum = momentum
        self.mean: torch.Tensor
        self.var: torch.Tensor
        self.register_buffer("mean", torch.zeros(OBS_DIM))
        self.register_buffer("var", torch.ones(OBS_DIM))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Move the statistics towards those of the batch ``x``."""
        self.mean.lerp_(x.mean(dim=0), self.momentum)
        self.var.lerp_(x.var(dim=0, correction=0), self.momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.var + 1e-6).sqrt()


class NormalisedWorldModel(WorldModel):
    """:class:`WorldModel` on normalised observations; the normaliser is part of the model."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__(generator)
        self.normaliser = Normaliser()

    def inputs(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return super().inputs(self.normaliser(obs), action)


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch with one normaliser for every data source; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = NormalisedWorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    for _ in range(STEPS):
        for obs in (data.obs, *(a.obs for a in agents)):
            model.normaliser.update(obs)  # leak: auxiliary observations move the world model's statistics
        wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
