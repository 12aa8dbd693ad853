"""Leak 28, a recurrent target encoder burnt in on auxiliary rollouts, called as a function.

The leak: the world model's features are regressed onto the beliefs of a frozen recurrent target
encoder (a latent-consistency term).  Like R2D2's burn-in, the encoder's hidden state is first warmed up
on a stretch of rollouts -- here the auxiliary agents', which are long and cheap -- and the primary states
are then encoded from that belief.  Only primary rows enter the world model's batches, yet every target
depends on the auxiliary observations through the hidden state.

Caught by the differential audit only.  The encoder is a hand-written loop over ``torch.rnn_tanh_cell``
(no ``nn.RNNCell`` call): with an auxiliary input and a plain hidden state, that C++ operator adds the
input's term into an intermediate it created and computes the new state from it in C++, where no
operation reaches Python, so the state comes back unlabelled (README, "What the labels cannot see").  The
targets are then unlabelled, the world model's gradients carry only primary labels, and the gate accepts
every step.  Called as a module (``nn.RNNCell``), the call would be labelled as one and the gate would
refuse.  Static types cannot see it: the targets are plain ``torch.Tensor``s.

Fix: burn the encoder in on primary trajectories only, or start each primary sequence from a zero state.
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

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(
    title="recurrent target encoder burnt in on auxiliary rollouts (torch.rnn_tanh_cell)",
    layer="differential",
)


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train with latent targets from a burnt-in recurrent encoder; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    rollouts = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    encoder = nn.RNNCell(OBS_DIM, HIDDEN)
    with torch.no_grad():
        for p in encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=streams.policy) * 0.3)
        weights = (encoder.weight_ih, encoder.weight_hh, encoder.bias_ih, encoder.bias_hh)
        belief = torch.zeros(1, HIDDEN)
        for rollout in rollouts:  # leak: the burn-in runs on the auxiliary agents' observations
            for row in range(len(rollout.obs)):
                belief = torch.rnn_tanh_cell(rollout.obs[row : row + 1], belief, *weights)
        target = torch.rnn_tanh_cell(data.obs, belief.expand(len(data.obs), HIDDEN), *weights)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    for _ in range(STEPS):
        idx = batch_indices(streams.batches, len(data.obs))
        wm_opt.zero_grad()
        latent_error = (model.features(data.obs[idx], data.action[idx]) - target[idx]).pow(2).mean()
        (wm_loss(model, data, idx) + latent_error).backward()
        wm_opt.step()
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
