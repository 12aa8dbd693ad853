"""Leak 18, a ``DataLoader`` with worker processes over a dataset that mixes every source.

The leak: the transitions go into a map-style ``Dataset`` that indexes the primary and the auxiliary
transitions as one list of rows (no concatenation: each row is looked up in its own source), and the
world model is trained on batches from a ``DataLoader(..., shuffle=True, num_workers=2)`` over it.  Almost
every batch holds auxiliary rows.  It is leak 1 again, written the way a ``DataLoader`` user writes it:
the rows are looked up and collated in two worker processes, and the batches come back to the trainer
through a multiprocessing queue.

Caught by the dynamic layer: labels cross processes.  The workers inherit the tagged rows, collate
them into a batch whose memory keeps each row's label, and send it back pickled with its labels; the
world model's gradient carries ``aux:aux-0``/``aux:aux-1`` and the ``GatedOptimizer`` refuses the first
step.  Static types cannot see it: a ``DataLoader`` yields whatever its collate function returns (``Any``
to mypy), so the batches pass where ``Transitions`` of ``PrimaryData`` are expected.  The differential
audit catches it too.

Cost: the workers are forked (Linux's default start method up to Python 3.13), so a run takes 0.1-0.2 s,
instrumented or not (the other scripts take a few milliseconds).  With the ``spawn`` or ``forkserver`` start
methods (macOS and Windows; Linux from Python 3.14) each worker starts a new interpreter that imports
torch, seconds per run, and the audit's 25 runs take minutes.

Fix: a ``Dataset`` of the primary transitions alone for the world model (and another loader for the
policy, which may see every source).
"""

from __future__ import annotations

import itertools
import sys

import torch
from _common import (
    BATCH,
    LR,
    STEPS,
    Amal,
    AuxInput,
    AuxTransitions,
    Leak,
    PrimaryInput,
    Streams,
    Transitions,
    WorldModel,
    amal_example_inputs,
    entry_points,
    tag_aux,
    tag_primary,
    wm_step,
)
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="DataLoader workers over a dataset mixing every source", layer="dynamic")

WORKERS = 2


class ReplayDataset(Dataset[tuple[torch.Tensor, ...]]):
    """The rows of several sources as one dataset: row ``i`` is looked up in the source that holds it."""

    def __init__(self, *sources: Transitions | AuxTransitions) -> None:
        self.rows = [(source, i) for source in sources for i in range(len(source.obs))]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        source, row = self.rows[i]
        return tuple(field[row] for field in source)


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch on batches from a multi-process ``DataLoader``; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    replay = ReplayDataset(data, *agents)  # leak: the world model's dataset holds every source's rows
    loader = DataLoader(
        replay, batch_size=BATCH, shuffle=True, num_workers=WORKERS, generator=streams.batches
    )
    for batch in itertools.islice(loader, STEPS):
        rows = Transitions(*batch)
        wm_step(model, wm_opt, rows, torch.arange(len(rows.obs)))
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
