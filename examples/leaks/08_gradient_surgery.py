"""Leak 8, gradient surgery: the world model's gradient is projected against an auxiliary task's (PCGrad).

The leak: the world model is never *stepped* on auxiliary data.  Its fit to the auxiliary agents'
transitions is only used to remove conflicts: where the primary gradient points against the auxiliary
gradient, the conflicting component is projected out (Yu et al. 2020, PCGrad).  The step taken is then a
function of the auxiliary gradient's direction, hence of the auxiliary data.

Caught by the dynamic layer: ``torch.autograd.grad`` returns the gradients as tagged tensors carrying
``aux:aux-0`` and ``aux:aux-1``, so flattening them (``torch.cat``), projecting and writing the result
into ``.grad`` keeps the labels, and the ``GatedOptimizer`` refuses the step.  (Until the gradient hooks
returned tagged tensors, ``autograd.grad`` gave plain tensors labelled only in the label store and
``torch.cat`` of plain tensors ran untracked: this script found that gap.)  Static types cannot see it:
gradients are plain tensors to mypy.  The differential audit catches it too.

Fix: no gradient surgery with auxiliary tasks on protected parameters; if the world model needs
multi-task regularisation, take the tasks from primary data.
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
    prediction_errors,
    tag_aux,
    tag_primary,
    wm_loss,
)
from torch import nn

__all__ = ["LEAK", "amal_example_inputs", "main", "run", "train", "train_untagged"]

LEAK = Leak(title="gradient surgery with an auxiliary task", layer="dynamic")


def project_conflict(g: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """PCGrad: ``g`` without its component along ``other`` when the two conflict (negative dot product)."""
    dot = torch.clamp(g @ other, max=0.0)
    return g - dot / other.pow(2).sum().clamp_min(1e-12) * other


def flat_grad(loss: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """The gradient of ``loss`` with respect to ``params``, as one vector."""
    return torch.cat([d.reshape(-1) for d in torch.autograd.grad(loss, params)])


def run(primary: PrimaryInput, aux: AuxInput, amal: Amal) -> nn.Module:
    """Train from scratch, projecting out conflicts with the auxiliary task; return the world model."""
    streams = Streams()
    data = tag_primary(amal, primary)
    agents = tag_aux(amal, aux)
    model = WorldModel(streams.init)
    wm_opt = amal.gate(torch.optim.Adam(model.parameters(), lr=LR), model)
    params = list(model.parameters())
    for _ in range(STEPS):
        g = flat_grad(wm_loss(model, data, batch_indices(streams.batches, len(data.obs))), params)
        aux_losses = [prediction_errors(model, a).mean() for a in agents]
        if aux_losses:
            g_aux = flat_grad(torch.stack(aux_losses).mean(), params)
            g = project_conflict(g, g_aux)  # leak: the step's direction depends on auxiliary data
        wm_opt.zero_grad()
        for p, d in zip(params, g.split([p.numel() for p in params]), strict=True):
            p.grad = d.reshape(p.shape)
        wm_opt.step()
    return model


train, train_untagged, main = entry_points(run, __name__)

if __name__ == "__main__":
    sys.exit(main())
