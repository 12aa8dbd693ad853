"""``nn.Parameter.data = value``: the one way to replace a parameter's memory that no operation sees.

A protected parameter refuses auxiliary-labelled memory before taking it; any other parameter that
takes such memory is made tracked, so that no plain operation on it (``parameters_to_vector``) drops
the label.  Reading ``.data`` is PyTorch's own getter, after making a parameter whose memory holds
auxiliary data tracked: its ``.data`` is then a tracked alias, so that a soft update written through
``.data`` (``target.data.mul_(1 - tau).add_(source.data, alpha=tau)``) is seen -- also when the
label reached the parameter's memory where no Python code ran (``load_state_dict`` copying a
labelled checkpoint into a fresh model).
"""

from __future__ import annotations

from typing import Any, Final

import torch

from amal_verified.isolation._engine import label_store as store
from amal_verified.isolation._engine import protection as _protection
from amal_verified.isolation._engine.dispatch import TaggedTensor, track_in_place
from amal_verified.isolation._engine.refusals import violation

__all__ = ["install_parameter_data_guard"]

_TENSOR_DATA: Final[Any] = vars(torch._C.TensorBase)["data"]  # the C getter and setter


def _parameter_data(self: torch.Tensor) -> torch.Tensor:
    if store.counters.aux and not isinstance(self, TaggedTensor) and store.label_of_plain(self).has_aux:
        track_in_place(self)
    data: torch.Tensor = _TENSOR_DATA.__get__(self)
    return data


def _assign_parameter_data(self: torch.Tensor, value: torch.Tensor) -> None:
    """``param.data = value`` (``vector_to_parameters`` too): a protected parameter refuses
    auxiliary-labelled memory before taking it, and protects the memory it takes (so that a write of
    auxiliary data through another view of it, the vector ``vector_to_parameters`` read, is refused);
    any other parameter that takes such memory is made tracked, so that no plain operation on it
    (``parameters_to_vector``) drops the label."""
    if store.counters.aux and isinstance(value, torch.Tensor):
        label = store.label_of_plain(value)
        if label.has_aux:
            info = _protection.protection_of(self)
            if info is not None:
                raise violation(
                    f"assigning {info.name}.data",
                    [(info.name, label, store.origin_of(value))],
                    "assign a protected parameter only values computed from its own primary-data "
                    "training (an evolution strategy's candidates drawn around the world model's own "
                    "parameters, never from models trained on auxiliary data).",
                )
            _TENSOR_DATA.__set__(self, value)
            track_in_place(self)
            return
    _TENSOR_DATA.__set__(self, value)
    info = _protection.protection_of(self)
    if info is not None:  # its new memory is protected from now on, aliases of it included
        _protection.refresh(info)


def install_parameter_data_guard() -> None:
    """Route ``nn.Parameter``'s ``.data`` through :func:`_assign_parameter_data` (reading is unchanged)."""
    torch.nn.Parameter.data = property(  # type: ignore[assignment]
        _parameter_data, _assign_parameter_data, doc=_TENSOR_DATA.__doc__
    )
