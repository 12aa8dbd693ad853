"""Leak 19, replay shards on disk: auxiliary transitions reach the world model through ``torch.save`` /
``torch.load(weights_only=True)``.

The leak: the collectors write their transitions as replay shards, one file per source, into a shared
replay directory (``real-env.pt``, ``aux-0.pt``, ...), and the world model's learner trains on the shards
it finds there.  It globs ``*.pt`` rather than ``real-env*.pt``, so it also trains on the auxiliary agents'
shards.  The file round trip looks like a clean break: what comes back from ``torch.load`` is "just
tensors", loaded with ``weights_only=True``.

Caught by the dynamic layer: labels survive the file.  A tagged tensor saves as its plain memory plus its
labels (strings and integers; the rebuild function is registered with
``torch.serialization.add_safe_globals``, so ``weights_only=True`` loads it), the auxiliary shards load
as auxiliary data, and the ``GatedOptimizer`` refuses the first update on one.  Static types cannot see
it: ``torch.load`` returns ``Any``, which mypy accepts where ``Transitions`` of ``PrimaryData`` are
expected.  The differential audit catches it too.

Fix: a replay directory per source, or a learner that loads only the primary collectors' shards; a
primary shard that was written with auxiliary rows in it would still be refused.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

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

LEAK = Leak(title="replay shards saved and loaded with torch.save / torch.load", layer="dynamic")


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Write a replay shard per source, train the world model on the shards it finds; return it."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    with tempfile.TemporaryDirectory() as directory:
        replay = Path(directory)
        torch.save(data._asdict(), replay / "real-env.pt")  # the collectors
        for i, agent in enumerate(agents):
            torch.save(agent._asdict(), replay / f"aux-{i}.pt")
        shards = [  # the world model's learner
            Transitions(**torch.load(path, weights_only=True))
            for path in sorted(replay.glob("*.pt"))  # leak: the auxiliary agents' shards match too
        ]
    for _ in range(STEPS):
        for shard in shards:
            wm_step(model, wm_opt, shard, batch_indices(streams.batches, len(shard.obs)))
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
