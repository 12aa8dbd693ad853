"""Leak 16, an evolution-strategy candidate: a CEM step writes parameters trained on auxiliary data into the
world model with ``torch.nn.utils.vector_to_parameters``.

The leak: after each gradient step, the world model is polished by a cross-entropy-method step over its
flattened parameters: candidates are scored by their loss on primary rows, and the mean of the elites is
written back with ``vector_to_parameters``.  Each auxiliary agent keeps its own dynamics model, trained on
its own transitions (which it may), and those models are "good starting points", so their parameter
vectors join the population.  The fitness sees only primary data, but the candidates do not: when one of
the agents' models is among the elites, parameters learnt from auxiliary data become the world model's.

Caught by the dynamic layer: the agents' models were stepped with aux-labelled gradients, so their
parameters carry ``aux:aux-0``/``aux:aux-1``, and so do ``parameters_to_vector`` of them, the elites and
their mean.  ``vector_to_parameters`` assigns ``param.data``, and a protected parameter refuses memory
with an auxiliary label before taking it (the ``GatedOptimizer`` guards ``nn.Parameter.data``), so the
world model keeps its values.  Static types cannot see it: a parameter vector is a plain
``torch.Tensor``.  The differential audit catches it too.

Fix: draw the candidates around the world model's own parameters only; an agent's model may be seeded from
the world model, never the other way round.
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
    WorldModel,
    amal_example_inputs,
    batch_indices,
    entry_points,
    model_step,
    tag_aux,
    tag_primary,
    wm_loss,
    wm_step,
)
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="evolution-strategy (CEM) candidate from auxiliary-trained models", layer="dynamic")

POPULATION = 6
ELITES = 3
SIGMA = 0.05


def primary_loss(
    candidate: torch.Tensor, scratch: nn.Module, data: Transitions, idx: torch.Tensor
) -> torch.Tensor:
    """The fitness of a parameter vector: its loss on the primary rows ``idx`` (evaluated in ``scratch``)."""
    vector_to_parameters(candidate, scratch.parameters())
    with torch.no_grad():
        return wm_loss(scratch, data, idx)


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch, polishing the world model with a CEM step after each update; return it."""
    streams = Streams()
    es = torch.Generator().manual_seed(4)
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    scratch = WorldModel(streams.init)
    members = [WorldModel(streams.init) for _ in agents]  # each auxiliary agent's own dynamics model
    member_opts = [torch.optim.Adam(m.parameters(), lr=LR) for m in members]
    for _ in range(STEPS):
        wm_step(model, wm_opt, data, batch_indices(streams.batches, len(data.obs)))
        for member, opt, agent in zip(members, member_opts, agents, strict=True):
            model_step(member, opt, agent, batch_indices(streams.policy, len(agent.obs)))
        mean = parameters_to_vector(model.parameters()).detach()
        candidates = [mean + SIGMA * torch.randn(mean.shape, generator=es) for _ in range(POPULATION)]
        candidates += [parameters_to_vector(m.parameters()).detach() for m in members]  # leak: aux-trained
        population = torch.stack(candidates)
        idx = batch_indices(streams.batches, len(data.obs))
        fitness = torch.stack([primary_loss(c, scratch, data, idx) for c in population])
        elites = population[fitness.topk(ELITES, largest=False).indices]
        vector_to_parameters(elites.mean(dim=0), model.parameters())
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
