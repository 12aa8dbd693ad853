"""Which parameters are protected (owned by a GatedOptimizer), and which storages are parameters'.

Parameters are label-neutral: their storages never receive labels.  Protected
parameters additionally refuse any write of aux-labelled data, whatever code
path attempts it.

Tensors are keyed by identity with ``WeakIdKeyDictionary`` (an ``id()`` may be
reused once its object dies), storages by address with a weak reference whose
callback drops the entry when the storage dies (see ``_label_store``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.weak import WeakIdKeyDictionary

from amal_verified._label_store import storage_key, storage_ref

__all__ = ["ProtectedParam", "protect", "protected_by_storage", "protection_of"]


@dataclass(slots=True)
class ProtectedParam:
    ref: weakref.ref[torch.Tensor]
    name: str
    owner: str
    storage: int


_by_param: WeakIdKeyDictionary = WeakIdKeyDictionary()
_by_storage: dict[int, ProtectedParam] = {}
_param_storages: dict[int, weakref.ref[Any]] = {}


def _forget_storage(key: int, ref: weakref.ref[Any]) -> None:
    if _param_storages.get(key) is ref:
        del _param_storages[key]


def _remember_storage(param: torch.Tensor) -> int:
    key = storage_key(param)
    if key not in _param_storages:
        _param_storages[key] = storage_ref(param, lambda r, k=key: _forget_storage(k, r))
    return key


def protect(param: torch.Tensor, name: str, owner: str) -> ProtectedParam:
    """Mark ``param`` protected (idempotent; the first name and owner are kept)."""
    info: ProtectedParam | None = _by_param.get(param)
    if info is not None:
        refresh(info)
        return info
    key = _remember_storage(param)
    info = ProtectedParam(ref=weakref.ref(param), name=name, owner=owner, storage=key)
    _by_param[param] = info
    _by_storage[key] = info
    return info


def refresh(info: ProtectedParam) -> None:
    """Follow a parameter whose ``.data`` was replaced to its new storage."""
    param = info.ref()
    if param is None:
        return
    key = storage_key(param)
    if key != info.storage:
        if _by_storage.get(info.storage) is info:
            del _by_storage[info.storage]
        info.storage = key
        _by_storage[key] = info
        _remember_storage(param)


def protection_of(param: torch.Tensor) -> ProtectedParam | None:
    found: ProtectedParam | None = _by_param.get(param)
    return found


def protected_by_storage(key: int) -> ProtectedParam | None:
    """The protected parameter whose memory this is (checked against stale entries)."""
    info = _by_storage.get(key)
    if info is None:
        return None
    param = info.ref()
    if param is None or storage_key(param) != key:
        del _by_storage[key]
        return None
    return info


def note_parameter(param: torch.Tensor) -> None:
    """Remember that ``param``'s storage belongs to a parameter (so it is never labelled)."""
    _remember_storage(param)


def is_parameter_storage(key: int) -> bool:
    return key in _param_storages
