"""Control 25 (no leak): the world model trains on the primary rows sliced back out of one replay that
concatenates every source.

Not a leak, a precision check: one replay tensor per field holds the primary rows first and then each
auxiliary agent's (``torch.cat([primary, *aux])``, as a shared buffer stores them); the critic samples
from all of it, and the world model from ``replay[:n_primary]``, the primary rows sliced back out.  The
world model sees primary data only, so no layer may flag it.

Why it passes each layer: labels are kept per row range of a concatenation, and a slice carries the labels
of the rows it spans only, ``primary:real-env`` here; ``amal.primary(...)`` re-declares it as primary data
for the typed boundary (mypy accepts it) and checks the declaration at run time: slice one row too far
and it raises ``TaggingError`` naming the auxiliary source.  The differential audit finds the world model
unchanged by every auxiliary variant.  (A *gather* from the whole replay, ``replay[idx]`` with primary
indices, is coarser: the dynamic layer labels it with every source of the replay, so slice first, then
index, as here.)
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
    Transitions,
    ValueHead,
    WorldModel,
    amal_example_inputs,
    batch_indices,
    entry_points,
    tag_aux,
    tag_primary,
    value_step,
    wm_step,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="control: primary rows sliced back out of a replay of every source", layer=None)


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch on the primary slice of a shared replay; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    value = ValueHead(streams.init)
    value_opt = torch.optim.Adam(value.parameters(), lr=LR)
    replay = [torch.cat(rows) for rows in zip(data, *agents, strict=True)]  # every source, primary first
    n_primary = len(data.obs)
    own = Transitions(*(amal.primary(field[:n_primary]) for field in replay))  # the primary rows
    for _ in range(STEPS):
        wm_step(model, wm_opt, own, batch_indices(streams.batches, n_primary))
        obs, reward = replay[0], replay[2]
        value_step(value, value_opt, obs, reward, batch_indices(streams.policy, len(obs)))
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
