"""Labels of tensor storages.

Labels belong to *storages*, not to tensor objects: every view, ``detach()``
alias and wrapper over the same memory shares one label, so an in-place write
through any alias is seen by all of them (writing aux rows through a view of a
primary tensor taints the whole base).  Storages are keyed by the address of
their C++ ``StorageImpl``; the entry holds a ``StorageWeakRef``, which keeps
that address from being reused while the entry exists, and dead entries are
swept periodically.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch.multiprocessing.reductions import StorageWeakRef as _StorageWeakRef

from amal_verified.labels import EMPTY, Label

__all__ = ["STORE", "LabelStore", "storage_key"]

_SWEEP_EVERY = 4096


class StorageWeakRef(Protocol):
    """Typed view of ``torch.multiprocessing.reductions.StorageWeakRef``."""

    def expired(self) -> bool: ...


def weak_storage_ref(t: torch.Tensor) -> StorageWeakRef:
    ref: StorageWeakRef = _StorageWeakRef(t.untyped_storage())
    return ref


def storage_key(t: torch.Tensor) -> int:
    """The identity of ``t``'s storage (plain tensors only)."""
    return int(t.untyped_storage()._cdata)


class LabelStore:
    """Maps storage keys to labels.  Parameters' storages are never labelled."""

    __slots__ = ("_entries", "_inserts_since_sweep", "written_plain")

    def __init__(self) -> None:
        # key -> (weak reference, label, origin: where aux data first entered this memory's lineage)
        self._entries: dict[int, tuple[StorageWeakRef, Label, str | None]] = {}
        self._inserts_since_sweep = 0
        # Number of times a label was attached to memory by an in-place write or a
        # module-buffer update.  While zero, plain tensors passed to modules cannot
        # carry labels other than by aliasing a tagged tensor, and buffers need no scan.
        self.written_plain = 0

    def get(self, key: int) -> Label:
        entry = self._entries.get(key)
        if entry is None:
            return EMPTY
        ref, label, _ = entry
        if ref.expired():
            del self._entries[key]
            return EMPTY
        return label

    def origin(self, t: torch.Tensor) -> str | None:
        """Where auxiliary data first entered ``t``'s memory, if recorded."""
        try:
            entry = self._entries.get(storage_key(t))
        except (RuntimeError, NotImplementedError):
            return None
        if entry is None or entry[0].expired():
            return None
        return entry[2]

    def of(self, t: torch.Tensor) -> Label:
        """Label of a plain tensor's storage (EMPTY if never labelled)."""
        if not self._entries:
            return EMPTY
        try:
            key = storage_key(t)
        except (RuntimeError, NotImplementedError):  # sparse, meta or storage-less tensors
            return EMPTY
        return self.get(key)

    def set(self, t: torch.Tensor, label: Label, origin: str | None = None) -> None:
        key = storage_key(t)
        entry = self._entries.get(key)
        if entry is not None and not entry[0].expired():
            keep = entry[2] if entry[1].has_aux and label.has_aux else None
            self._entries[key] = (entry[0], label, keep or (origin if label.has_aux else None))
            return
        if label.is_empty:
            self._entries.pop(key, None)
            return
        self._entries[key] = (weak_storage_ref(t), label, origin if label.has_aux else None)
        self._inserts_since_sweep += 1
        if self._inserts_since_sweep >= _SWEEP_EVERY:
            self.sweep()

    def join(self, t: torch.Tensor, label: Label, origin: str | None = None) -> Label:
        """Join ``label`` into ``t``'s storage label; returns the new label."""
        if label.is_empty:
            return self.of(t)
        new = self.of(t).join(label)
        self.set(t, new, origin)
        return new

    def sweep(self) -> None:
        self._inserts_since_sweep = 0
        dead = [k for k, (ref, _, _) in self._entries.items() if ref.expired()]
        for k in dead:
            del self._entries[k]

    def __len__(self) -> int:
        return len(self._entries)


STORE = LabelStore()
