"""Leak 29, a recurrent context encoder run over packed auxiliary episodes.

The leak: the world model's features are regressed onto a task context, the final belief of a frozen
recurrent encoder (``nn.LSTM``) over recent episodes of every agent -- here the auxiliary agents' episodes,
of different lengths, packed into one ``PackedSequence`` the way recurrent-policy code batches them.  Only
primary rows enter the world model's batches, yet every target depends on the auxiliary observations
through the context.

Caught by the dynamic layer: a module called on a ``PackedSequence`` is tracked at its boundary like one
called on tensors (the packed data's label is the call's), so the context, the targets and the world
model's gradients carry the auxiliary sources and the gated step refuses.  Padding and packing
(``pack_sequence``, ``pad_packed_sequence``) keep their inputs' labels too.  Static types cannot see it:
the context is a plain ``torch.Tensor``.  The differential audit catches it too.

Fix: build the context from primary episodes only, or keep it on the policy's side.
"""

from __future__ import annotations

import sys

import torch
from _common import (
    HIDDEN,
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
    wm_loss,
)
from torch import nn
from torch.nn.utils.rnn import pack_sequence

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(
    title="recurrent context encoder over packed auxiliary episodes (PackedSequence)", layer="dynamic"
)

EPISODE_LENGTHS = [10, 8, 6]  # each auxiliary agent's 24 rows, as three episodes


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train with latent targets from a context over packed episodes; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    rollouts = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    encoder = nn.LSTM(OBS_DIM, HIDDEN)
    with torch.no_grad():
        for p in encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=streams.policy) * 0.3)
        # leak: the episodes are the auxiliary agents'
        episodes = [e for r in rollouts for e in torch.split(r.obs, EPISODE_LENGTHS) if len(e)]
        if episodes:
            _, (belief, _) = encoder(pack_sequence(episodes, enforce_sorted=False))
            context = belief[-1].mean(0)
        else:
            context = torch.zeros(HIDDEN)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    for _ in range(STEPS):
        idx = batch_indices(streams.batches, len(data.obs))
        wm_opt.zero_grad()
        latent_error = (model.features(data.obs[idx], data.action[idx]) - context).pow(2).mean()
        (wm_loss(model, data, idx) + latent_error).backward()
        wm_opt.step()
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
