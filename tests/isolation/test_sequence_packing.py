"""Packed and padded sequences (``torch.nn.utils.rnn``) keep their labels.

Recurrent modules take a ``PackedSequence``; ``pad_packed_sequence`` and ``pad_sequence`` build their
outputs in C++.  Auxiliary data through either must reach the gate labelled, and primary data through
them must train a gated recurrent world model exactly as plain PyTorch does.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import (
    PackedSequence,
    pack_padded_sequence,
    pack_sequence,
    pad_packed_sequence,
    pad_sequence,
    unpack_sequence,
)

import amal_verified as av

LENGTHS = torch.tensor([6, 5, 3, 2])
RECURRENT: dict[str, Callable[[], nn.Module]] = {
    "LSTM": lambda: nn.LSTM(3, 5, batch_first=True),
    "GRU": lambda: nn.GRU(3, 5, batch_first=True),
    "RNN": lambda: nn.RNN(3, 5, batch_first=True),
}


def episodes(seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(seed)) * scale


def aux_names(t: torch.Tensor) -> set[str]:
    return {source.name for source in av.label_of(t).aux_sources}


def hidden(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_a_recurrent_encoder_on_packed_aux_episodes_labels_its_outputs(kind: str) -> None:
    """A policy-side encoder run on packed auxiliary episodes: its outputs carry the aux source, and a
    gated world-model head trained on them is refused with nothing changed."""
    torch.manual_seed(0)
    encoder, head = RECURRENT[kind](), nn.Linear(5, 2)
    opt = av.GatedOptimizer(torch.optim.Adam(head.parameters(), lr=1e-2), names=head)
    before = [p.detach().clone() for p in head.parameters()]
    packed = pack_padded_sequence(av.aux(episodes(1), source="aux-3"), LENGTHS, batch_first=True)
    out, state = encoder(packed)
    assert isinstance(out, PackedSequence)
    assert "aux-3" in aux_names(out.data)
    assert "aux-3" in aux_names(hidden(state))
    z, _ = pad_packed_sequence(out, batch_first=True)
    ((head(z) - 1.0) ** 2).mean().backward()
    with pytest.raises(av.IsolationViolation, match="aux-3"):
        opt.step()
    assert all(torch.equal(a, p) for a, p in zip(before, head.parameters(), strict=True))


def test_padding_keeps_the_aux_label_through_later_arithmetic() -> None:
    packed = pack_padded_sequence(av.aux(episodes(2), source="aux-3"), LENGTHS, batch_first=True)
    padded, lengths = pad_packed_sequence(packed, batch_first=True)
    assert isinstance(padded, av.AuxData)
    assert "aux-3" in aux_names(padded * 0.99)
    assert av.label_of(lengths).is_empty  # the lengths depend on the (untagged) lengths alone
    rows = pad_sequence([av.aux(torch.randn(3, 2), source="aux-3"), torch.randn(2, 2)], batch_first=True)
    assert "aux-3" in aux_names(rows + 1)
    parts = unpack_sequence(pack_sequence([av.aux(torch.randn(3, 2), source="aux-3"), torch.randn(2, 2)]))
    assert all("aux-3" in aux_names(p * 1.0) for p in parts)


def test_an_aux_target_padded_from_packed_rewards_is_refused() -> None:
    """The usual pack → run → pad pattern with a gated recurrent world model: an auxiliary target
    padded the same way reaches the loss labelled."""
    torch.manual_seed(0)
    world_model = nn.GRU(3, 1, batch_first=True)
    opt = av.GatedOptimizer(torch.optim.SGD(world_model.parameters(), lr=0.1), names=world_model)
    obs = pack_padded_sequence(av.primary(episodes(3)), LENGTHS, batch_first=True)
    aux_rewards = pack_padded_sequence(
        av.aux(episodes(4)[..., :1], source="aux-3"), LENGTHS, batch_first=True
    )
    pred, _ = pad_packed_sequence(world_model(obs)[0], batch_first=True)
    target, _ = pad_packed_sequence(aux_rewards, batch_first=True)
    ((pred - target) ** 2).mean().backward()
    with pytest.raises(av.IsolationViolation, match="aux-3"):
        opt.step()


def test_batch_sizes_depend_on_the_lengths_alone() -> None:
    """Packing auxiliary episodes gives batch sizes labelled like the lengths, so running a recurrent
    policy on them in strict mode records no escape (the module reads ``batch_sizes[0]``)."""
    packed = pack_padded_sequence(av.aux(episodes(5), source="aux-3"), LENGTHS, batch_first=True)
    assert av.label_of(packed.batch_sizes).is_empty
    assert "aux-3" in aux_names(packed.data)
    av.set_strict(True)
    try:
        nn.LSTM(3, 5, batch_first=True)(packed)
    finally:
        av.set_strict(False)


@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_a_gated_recurrent_world_model_on_packed_primary_data_trains_like_plain_pytorch(kind: str) -> None:
    """Three gated steps on packed primary episodes give the bits of three plain steps on untagged ones."""

    def train(tag: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model, head = RECURRENT[kind](), nn.Linear(5, 1)
        params = [*model.parameters(), *head.parameters()]
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=1e-2)
        if tag:
            opt = av.GatedOptimizer(opt)
        for step in range(3):
            x, y = episodes(10 + step), episodes(20 + step)[..., :1]
            if tag:
                x, y = av.primary(x), av.primary(y)
            out, _ = model(pack_padded_sequence(x, LENGTHS, batch_first=True))
            z, _ = pad_packed_sequence(out, batch_first=True)
            target, _ = pad_packed_sequence(
                pack_padded_sequence(y, LENGTHS, batch_first=True), batch_first=True
            )
            opt.zero_grad()
            ((head(z) - target) ** 2).mean().backward()
            opt.step()
        return [p.detach().clone() for p in params]

    plain, gated = train(False), train(True)
    assert all(torch.equal(a, b) for a, b in zip(plain, gated, strict=True))
