"""Copies of parameters updated from auxiliary data are parameters, with their labels.

A plain (non-gated) optimizer stepping a module on auxiliary data labels its parameters, which are
then tracked in place.  ``copy.deepcopy``, ``pickle`` and ``torch.save``/``torch.load`` of such a
module give parameters exactly as plain PyTorch does (``nn.Parameter``, leaves, same
``requires_grad``, same values), still carrying the auxiliary source: a target network copied from
an auxiliary agent's critic is a module like any other, and still refused by a gated optimizer.
"""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable

import pytest
import torch
from torch import nn

import amal_verified as av

SOURCE = "aux-0"


def _critic() -> nn.Sequential:
    """A critic stepped once by plain Adam on auxiliary data; its last bias is frozen afterwards."""
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    obs = av.aux(torch.randn(16, 4), source=SOURCE)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    critic(obs).pow(2).mean().backward()
    opt.step()
    critic[2].bias.requires_grad_(False)
    return critic


def _has_aux_source(t: torch.Tensor) -> bool:
    return SOURCE in {source.name for source in av.label_of(t).sources}


def _values(t: torch.Tensor) -> torch.Tensor:
    """The values of ``t`` as a plain tensor (comparing tracked aux values would record an escape)."""
    return t.elem if isinstance(t, av.TaggedTensor) else t.detach()


def _deepcopy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module)


def _pickled(module: nn.Module) -> nn.Module:
    copied: nn.Module = pickle.loads(pickle.dumps(module))
    return copied


def _saved(module: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    loaded: nn.Module = torch.load(buffer, weights_only=False)
    return loaded


COPIES: dict[str, Callable[[nn.Module], nn.Module]] = {
    "deepcopy": _deepcopy,
    "pickle": _pickled,
    "torch.save": _saved,
}


def _assert_parameter_copy(original: torch.Tensor, copied: torch.Tensor) -> None:
    assert copied is not original
    assert isinstance(copied, nn.Parameter)
    assert copied.is_leaf
    assert copied.requires_grad == original.requires_grad
    assert torch.equal(_values(copied), _values(original))
    assert _has_aux_source(copied)


@pytest.mark.parametrize("how", sorted(COPIES))
def test_copied_parameters_are_parameters_with_labels(how: str) -> None:
    critic = _critic()
    assert all(_has_aux_source(p) for p in critic.parameters())
    copied = COPIES[how](critic)
    originals = dict(critic.named_parameters())
    copies = dict(copied.named_parameters())
    assert copies.keys() == originals.keys()
    for name, p in originals.items():
        _assert_parameter_copy(p, copies[name])


@pytest.mark.parametrize("how", sorted(COPIES))
def test_copied_parameters_can_be_registered_again(how: str) -> None:
    copied = COPIES[how](_critic())
    nn.utils.spectral_norm(copied[0])
    assert isinstance(copied[0].weight_orig, nn.Parameter)
    assert _has_aux_source(copied[0].weight_orig)
    copied.register_parameter("shared", copied[2].weight)
    assert copied.shared is copied[2].weight
    assert isinstance(copied.shared, nn.Parameter)


def test_copied_parameters_stay_parameters_through_dtype_conversion() -> None:
    copied = copy.deepcopy(_critic()).double()
    for p in copied.parameters():
        assert isinstance(p, nn.Parameter)
        assert p.dtype == torch.float64
        assert _has_aux_source(p)


def test_state_dict_loads_with_weights_only() -> None:
    critic = _critic()
    for keep_vars in (False, True):
        state = critic.state_dict(keep_vars=keep_vars)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=True)
        assert loaded.keys() == state.keys()
        for name, value in state.items():
            assert torch.equal(_values(loaded[name]), _values(value))
            assert _has_aux_source(loaded[name])
            assert isinstance(loaded[name], nn.Parameter) == keep_vars
            assert loaded[name].is_leaf
            assert loaded[name].requires_grad == value.requires_grad
        fresh = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        fresh.load_state_dict(loaded)
        assert all(_has_aux_source(p) for p in fresh.parameters())


@pytest.mark.parametrize("how", sorted(COPIES))
def test_gated_optimizer_refuses_the_copy_state_dict(how: str) -> None:
    copied = COPIES[how](_critic())
    assert all(isinstance(p, nn.Parameter) for p in copied.parameters())
    fresh = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    before = [_values(p).clone() for p in fresh.parameters()]
    av.GatedOptimizer(torch.optim.Adam(fresh.parameters(), lr=1e-3))
    with pytest.raises(av.IsolationViolation):
        fresh.load_state_dict(copied.state_dict())
    assert all(torch.equal(_values(p), b) for p, b in zip(fresh.parameters(), before, strict=True))
