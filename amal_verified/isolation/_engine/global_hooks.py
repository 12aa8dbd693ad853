"""Tracking switched on: the process-wide hooks, installed once, and the unpickling functions.

The hooks are installed the first time data is tagged, an optimizer gated or a labelled tensor
unpickled; the unpickling functions live here because a process that receives a labelled tensor
must track it from then on.

Nothing is installed by ``import amal_verified``: code that never tags data
pays nothing.  Once active:

- every module call passes through ``boundary``'s forward hooks (one
  attribute test while nothing is labelled);
- every optimizer step passes through ``optimizer_steps``' global step hooks;
- ``nn.Parameter.data = value`` passes through ``parameter_data``'s guard (a protected parameter refuses
  auxiliary-labelled memory; any other parameter taking such memory becomes tracked);
- PyTorch's global forward-hook registries read as empty to module calls nested in a running
  tracked call (``boundary``), so nested calls take PyTorch's hook-free path;
- ``Module.load_state_dict`` first checks that no auxiliary-labelled value is
  about to be copied into protected memory, so a refused load writes nothing
  (PyTorch would otherwise write the entries before the refused one and turn
  the refusal into a ``RuntimeError``), and afterwards makes the parameters and
  buffers it filled with auxiliary data tracked;
- with ``torch.__future__.set_swap_module_params_on_conversion(True)``, ``Module.load_state_dict`` and
  ``Module._apply`` (``.to()``, ``.double()``) swap parameters: protected ones are made swappable for
  the call and protected again afterwards (``protection.swappable``);
- ``torch.nn.utils.rnn``'s padding and packing label their outputs (``sequence_packing``);
- pickling carries labels (``transfer``), rebuilt by :func:`rebuild_tagged` and
  :func:`rebuild_from` (registered with ``torch.serialization.add_safe_globals`` when this module is
  imported, also under the names files written before the package's layering used).
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from typing import Any, cast

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from amal_verified.isolation._engine import (
    boundary,
    optimizer_steps,
    parameter_data,
    protection,
    sequence_packing,
    transfer,
)
from amal_verified.isolation._engine import label_store as store
from amal_verified.isolation._engine.dispatch import TaggedTensor, track_in_place
from amal_verified.isolation.errors import IsolationViolation
from amal_verified.isolation.labels import Label

__all__ = ["ensure_active", "is_active", "rebuild_from", "rebuild_protected", "rebuild_tagged"]

_active = False


def ensure_active() -> None:
    global _active
    if _active:
        return
    boundary.install_scoped_registries()
    torch.nn.modules.module.register_module_forward_pre_hook(boundary.pre_hook)
    torch.nn.modules.module.register_module_forward_hook(boundary.post_hook, always_call=True)
    parameter_data.install_parameter_data_guard()
    register_optimizer_step_pre_hook(optimizer_steps.any_optimizer_pre_step)
    register_optimizer_step_post_hook(optimizer_steps.any_optimizer_post_step)
    transfer.install(rebuild_tagged, rebuild_from, rebuild_protected)
    _guard_load_state_dict()
    sequence_packing.install()
    _active = True


def is_active() -> bool:
    return _active


def _guard_load_state_dict() -> None:
    original = torch.nn.Module.load_state_dict

    @functools.wraps(original)
    def load_state_dict(self: torch.nn.Module, state_dict: Any, *args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():
            return original(self, state_dict, *args, **kwargs)
        _refuse_protected_loads(self, state_dict)
        with protection.swappable(_swapped_by_pytorch(self)):
            result = original(self, state_dict, *args, **kwargs)
        _track_loaded_aux_state(self)
        return result

    torch.nn.Module.load_state_dict = load_state_dict  # type: ignore[method-assign]

    original_apply: Any = torch.nn.Module._apply

    @functools.wraps(original_apply)
    def _apply(self: torch.nn.Module, fn: Any, *args: Any, **kwargs: Any) -> Any:
        swapped = _swapped_by_pytorch(self)
        if not swapped or torch.compiler.is_compiling():
            return original_apply(self, fn, *args, **kwargs)
        with protection.swappable(swapped):
            return original_apply(self, fn, *args, **kwargs)

    torch.nn.Module._apply = _apply  # type: ignore[method-assign]


def _swapped_by_pytorch(module: torch.nn.Module) -> list[torch.Tensor]:
    """The protected parameters and buffers of ``module`` that PyTorch would swap
    (``torch.__future__.set_swap_module_params_on_conversion(True)``); empty when it would not."""
    if not store.counters.tagged or not torch.__future__.get_swap_module_params_on_conversion():
        return []
    return [
        value
        for value in module.state_dict(keep_vars=True).values()
        if isinstance(value, torch.Tensor) and protection.protection_of(value) is not None
    ]


def _track_loaded_aux_state(module: torch.nn.Module) -> None:
    """Parameters and buffers that a load filled with auxiliary data become tracked: PyTorch copied
    into them below Python, so nothing else would make plain operations on them alone
    (``torch._foreach_lerp_`` of a Polyak update) see the label."""
    if not store.counters.aux:
        return
    for value in module.state_dict(keep_vars=True).values():
        if (
            isinstance(value, torch.Tensor)
            and not isinstance(value, TaggedTensor)
            and store.label_of_plain(value).has_aux
        ):
            track_in_place(value)


def _refuse_protected_loads(module: Any, state_dict: Any) -> None:
    if not store.counters.tagged or not hasattr(state_dict, "items"):
        return
    own = module.state_dict(keep_vars=True)
    refused: list[tuple[str, Label]] = []
    owner = ""
    for key, value in state_dict.items():
        target = own.get(key)
        if not isinstance(value, torch.Tensor) or not isinstance(target, torch.Tensor):
            continue
        label = store.label_of_plain(value)
        if not label.has_aux:
            continue
        info = protection.protection_of(target) or protection.protected_memory(target)
        if info is not None:
            refused.append((key, label))
            owner = info.owner
    if refused:
        sources = tuple(sorted(Label.join_all(label for _, label in refused).aux_sources))
        keys = ", ".join(key for key, _ in refused[:8])
        raise IsolationViolation(
            f"refused {type(module).__name__}.load_state_dict(): {len(refused)} entr(y/ies) hold data from "
            f"{', '.join(map(str, sources))} and would be copied into memory protected by {owner}: "
            f"{keys}. Nothing was loaded. Load the world model only from checkpoints of gated training "
            f"(or from untagged values).",
            parameters=tuple(key for key, _ in refused),
            sources=sources,
            operation=f"{type(module).__name__}.load_state_dict()",
        )


# -- unpickling ---------------------------------------------------------------------------


def rebuild_tagged(elem: torch.Tensor, spec: Any, requires_grad: bool = False) -> torch.Tensor:
    """The tracked tensor over ``elem`` with the recorded labels (an unpickling function)."""
    ensure_active()
    transfer.apply_spec(elem, spec)
    return torch.Tensor._make_subclass(TaggedTensor, elem, requires_grad)


def _rebuilders() -> frozenset[Callable[..., Any]]:
    """PyTorch's own tensor-rebuilding functions: the only ones :func:`rebuild_from` calls."""
    from torch.multiprocessing import reductions

    found: set[Callable[..., Any]] = {
        torch._utils._rebuild_tensor_v2,
        torch._utils._rebuild_parameter,
        torch._utils._rebuild_parameter_with_state,
        torch._tensor._rebuild_from_type_v2,
    }
    found |= {getattr(reductions, name) for name in dir(reductions) if name.startswith("rebuild_")}
    return frozenset(found)


def rebuild_from(reducer: Callable[..., Any], args: tuple[Any, ...], spec: Any) -> torch.Tensor:
    """Rebuild a plain tensor with PyTorch's own reducer, then relabel it (an unpickling function)."""
    if reducer not in _rebuilders():
        raise pickle.UnpicklingError(
            f"amal_verified: refusing to call {getattr(reducer, '__qualname__', reducer)!r} while "
            "unpickling a labelled tensor; only PyTorch's tensor-rebuilding functions are called"
        )
    ensure_active()
    elem: torch.Tensor = reducer(*args)
    transfer.apply_spec(elem, spec)
    if isinstance(elem, TaggedTensor) or not spec:
        return elem
    if type(elem) is torch.nn.Parameter:
        return elem  # a parameter keeps its type; its memory is labelled
    return torch.Tensor._make_subclass(TaggedTensor, elem, elem.requires_grad)


def rebuild_protected(
    reducer: Callable[..., Any], args: tuple[Any, ...], spec: Any, protected: tuple[str, str, str]
) -> torch.Tensor:
    """:func:`rebuild_from`, for a protected tensor whose memory another process shares with this one:
    the tensor is protected here too (an unpickling function of ``multiprocessing`` transfers)."""
    elem = rebuild_from(reducer, args, spec)
    name, owner, kind = protected
    if kind not in ("parameter", "buffer", "optimizer state"):
        raise pickle.UnpicklingError(f"amal_verified: unknown kind of protected tensor {kind!r}")
    protection.protect(elem, name, f"{owner} (shared from another process)", cast(protection.Kind, kind))
    return elem


# Files written before the package was arranged in layers name these functions by their old paths
# (``amal_verified._transfer`` resolves to this module, see ``amal_verified._old_paths``).
_rebuild_from = rebuild_from

torch.serialization.add_safe_globals(
    [
        rebuild_tagged,
        rebuild_from,
        (rebuild_tagged, "amal_verified._transfer.rebuild_tagged"),
        (rebuild_from, "amal_verified._transfer._rebuild_from"),
    ]
)
