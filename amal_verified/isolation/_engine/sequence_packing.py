"""Padding and packing of sequences (``torch.nn.utils.rnn``): outputs labelled at the Python entry.

``pad_packed_sequence`` and ``pad_sequence`` reach C++ functions that create their output there and
copy the input into it: each copy passes the dispatcher, which labels the output's memory, but the
output object stays a plain tensor, so what is computed from it next (``rewards * gamma``) would not
carry the label.  ``_pack_padded_sequence`` is one operation, and the per-operation rule would give
its batch sizes, which depend on the lengths alone, the data's label as well.

Once tracking is active (:func:`install`), the entry points ``torch.nn.utils.rnn`` calls
(``torch._VF._pack_padded_sequence``, ``torch._VF._pad_packed_sequence``,
``torch._C._nn.pad_sequence``) are wrapped: each output is labelled with exactly what it depends on
-- padded or packed data: the data and the batch sizes or lengths; batch sizes and lengths: the
lengths or batch sizes alone -- and returned tracked where that includes an auxiliary source.  The
wrapped function is called with the caller's arguments, so values are PyTorch's; while
``torch.compile`` traces, the wrappers are the original functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from amal_verified.isolation._engine import label_store as store
from amal_verified.isolation._engine.dispatch import _TrackedOnFirstUse, plain, track_in_place, tracked
from amal_verified.isolation.labels import EMPTY, Label

__all__ = ["install"]

_installed = False


def _argument(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if index < len(args) else kwargs.get(name)


def _label(*values: Any) -> Label:
    label = EMPTY
    for value in values:
        if isinstance(value, torch.Tensor):
            label = label.join(store.label_of_plain(value))
        elif type(value) is list or type(value) is tuple:
            label = label.join(_label(*value))
    return label


def _depending_on(t: torch.Tensor, label: Label) -> torch.Tensor:
    """``t`` (fresh memory from the function) with ``label`` joined in; tracked if that is auxiliary."""
    if label is not EMPTY:
        store.write_label(t, label)
    if not store.label_of_plain(t)._aux:
        return t
    if type(t) is _TrackedOnFirstUse:
        track_in_place(t)
    return tracked(t)


def _exactly(t: torch.Tensor, label: Label) -> torch.Tensor:
    """``t`` (fresh memory computed from ``label``-ed values alone) labelled ``label`` exactly."""
    store.set_label(t, label)
    if label._aux:
        return tracked(t)
    return plain(t)


def _data_and_sizes(
    original: Callable[..., Any], data_arg: tuple[int, str], sizes_arg: tuple[int, str]
) -> Callable[..., Any]:
    """``original`` returning ``(data, sizes)`` computed from its arguments ``data_arg`` and
    ``sizes_arg`` (position, name): the data depends on both, the sizes on ``sizes_arg`` alone."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        data, sizes = original(*args, **kwargs)
        if torch.compiler.is_compiling() or not store.counters.tagged:
            return data, sizes
        by_sizes = _label(_argument(args, kwargs, *sizes_arg))
        by_data = _label(_argument(args, kwargs, *data_arg))
        return _depending_on(data, by_data.join(by_sizes)), _exactly(sizes, by_sizes)

    return wrapper


def _pad_sequence(original: Callable[..., Any]) -> Callable[..., Any]:
    def pad(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        if torch.compiler.is_compiling() or not store.counters.tagged:
            return out
        return _depending_on(out, _label(_argument(args, kwargs, 0, "sequences")))

    return pad


def install() -> None:
    """Wrap the entry points (once per process)."""
    global _installed
    if _installed:
        return
    vf: Any = torch._VF
    functions = torch._C._VariableFunctions
    # packing: (padded input, lengths) -> (packed data, batch sizes)
    vf._pack_padded_sequence = _data_and_sizes(functions._pack_padded_sequence, (0, "input"), (1, "lengths"))
    # padding: (packed data, batch sizes) -> (padded data, lengths)
    vf._pad_packed_sequence = _data_and_sizes(functions._pad_packed_sequence, (0, "data"), (1, "batch_sizes"))
    nn_functions: Any = torch._C._nn
    nn_functions.pad_sequence = _pad_sequence(nn_functions.pad_sequence)
    _installed = True
