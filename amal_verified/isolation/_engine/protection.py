"""Protected memory: what a ``GatedOptimizer`` guards.

A ``GatedOptimizer`` protects its parameters, their optimizer state and the
registered buffers of the modules they belong to.  Protected memory refuses
any write of auxiliary-labelled data, whatever code path attempts it (the
dispatcher asks :func:`protected_memory` before writing).

The record is kept for the protected tensor (by identity) and on its current
storage object (an attribute, so it dies with the memory); nothing is written
into the tensor's own ``__dict__``, which ``pickle`` and ``torch.save`` would
carry.  A
protected tensor whose storage was replaced (``p.data = other``) is followed to
its new storage by :func:`refresh`; a storage record whose tensor moved on or
died is ignored and dropped.  The record refers to the protected tensor weakly,
and a weak reference blocks :func:`torch.utils.swap_tensors`: the library never
swaps a protected tensor (it cannot gain an auxiliary label), and where PyTorch
swaps parameters (``torch.__future__.set_swap_module_params_on_conversion``)
:func:`swappable` lifts the records for the call.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

import torch
from torch.utils.weak import WeakIdKeyDictionary

__all__ = [
    "Protected",
    "protect",
    "protected_memory",
    "protection_of",
    "refresh",
    "swappable",
]

Kind = Literal["parameter", "buffer", "optimizer state"]
_ATTR: Final = "_amal_protection"
_by_tensor: Final = WeakIdKeyDictionary()


@dataclass(slots=True, eq=False)
class Protected:
    """One protected tensor: what it is called, who protects it, and which storage it uses now."""

    ref: Callable[[], torch.Tensor | None]  # a weak reference (none while PyTorch swaps the tensor)
    name: str
    owner: str
    kind: Kind
    storage: Any

    def describe(self) -> str:
        return f"protected {self.kind} {self.name} (protected by {self.owner})"


def _storage(t: torch.Tensor) -> Any:
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def protect(t: torch.Tensor, name: str, owner: str, kind: Kind) -> Protected:
    """Protect ``t`` (idempotent: the first name and owner are kept)."""
    info: Protected | None = _by_tensor.get(t)
    if info is not None:
        refresh(info)
        return info
    storage = _storage(t)
    info = Protected(ref=weakref.ref(t), name=name, owner=owner, kind=kind, storage=storage)
    _by_tensor[t] = info
    if storage is not None:
        setattr(storage, _ATTR, info)
    return info


def protection_of(t: torch.Tensor) -> Protected | None:
    """The record of ``t`` if it is protected (by object identity)."""
    found: Protected | None = _by_tensor.get(t)
    return found


def refresh(info: Protected) -> None:
    """Follow a protected tensor whose storage was replaced (``.data = ...``) to its new storage."""
    t = info.ref()
    if t is None:
        return
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return  # no memory of its own
    if storage is info.storage:
        return
    info.storage = storage
    setattr(storage, _ATTR, info)


def protected_memory(t: torch.Tensor) -> Protected | None:
    """The protected tensor whose memory ``t`` views, if any (``t`` itself included, also when its
    storage was replaced since the record was made)."""
    storage = _storage(t)
    if storage is None:
        return None
    info: Protected | None = getattr(storage, _ATTR, None)
    if info is None:
        info = _by_tensor.get(t)
        if info is not None:  # a protected tensor whose storage was replaced: follow it now
            refresh(info)
        return info
    owner = info.ref()
    if owner is None or _storage(owner) is not storage:
        delattr(storage, _ATTR)
        if owner is not None:
            refresh(info)
        return None
    return info


def _no_tensor() -> None:
    return None


@contextlib.contextmanager
def swappable(tensors: Iterable[torch.Tensor]) -> Iterator[None]:
    """Let PyTorch swap the contents of these protected tensors (``torch.utils.swap_tensors``, which a
    weak reference to a tensor blocks), as ``load_state_dict`` and ``Module.to`` do under
    ``torch.__future__.set_swap_module_params_on_conversion(True)``: for the duration their records
    refer to nothing, afterwards to the same tensor objects again, protecting the memory they hold then.
    """
    released: list[tuple[torch.Tensor, Protected]] = []
    for t in tensors:
        info: Protected | None = _by_tensor.pop(t, None)
        if info is not None:
            info.ref = _no_tensor
            released.append((t, info))
    try:
        yield
    finally:
        for t, info in released:
            info.ref = weakref.ref(t)
            _by_tensor[t] = info
            refresh(info)
