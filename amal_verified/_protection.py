"""Which parameters are protected (owned by a GatedOptimizer), and which storages are parameters'.

Parameters are label-neutral: their storages never receive labels.  Protected
parameters additionally refuse any write of aux-labelled data, whatever code
path attempts it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from amal_verified._label_store import storage_key

__all__ = ["ProtectedParam", "protect", "protected_by_storage", "protection_of"]


@dataclass(slots=True)
class ProtectedParam:
    ref: weakref.ref[torch.Tensor]
    name: str
    owner: str
    storage: int


_by_id: dict[int, ProtectedParam] = {}
_by_storage: dict[int, ProtectedParam] = {}
_param_storages: set[int] = set()


def _forget(pid: int) -> None:
    info = _by_id.pop(pid, None)
    if info is not None:
        _by_storage.pop(info.storage, None)
        _param_storages.discard(info.storage)


def protect(param: torch.Tensor, name: str, owner: str) -> ProtectedParam:
    """Mark ``param`` protected (idempotent; the first name and owner are kept)."""
    pid = id(param)
    info = _by_id.get(pid)
    if info is not None and info.ref() is param:
        refresh(info)
        return info
    key = storage_key(param)
    info = ProtectedParam(ref=weakref.ref(param), name=name, owner=owner, storage=key)
    _by_id[pid] = info
    _by_storage[key] = info
    _param_storages.add(key)
    weakref.finalize(param, _forget, pid)
    return info


def refresh(info: ProtectedParam) -> None:
    """Follow a parameter whose ``.data`` was replaced to its new storage."""
    param = info.ref()
    if param is None:
        return
    key = storage_key(param)
    if key != info.storage:
        _by_storage.pop(info.storage, None)
        info.storage = key
        _by_storage[key] = info
        _param_storages.add(key)


def protection_of(param: torch.Tensor) -> ProtectedParam | None:
    info = _by_id.get(id(param))
    if info is not None and info.ref() is param:
        return info
    return None


def protected_by_storage(key: int) -> ProtectedParam | None:
    return _by_storage.get(key)


def note_parameter(param: torch.Tensor) -> None:
    """Remember that ``param``'s storage belongs to a parameter (so it is never labelled)."""
    _param_storages.add(storage_key(param))


def is_parameter_storage(key: int) -> bool:
    return key in _param_storages
