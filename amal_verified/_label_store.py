"""Labels of tensor storages.

Labels belong to *storages*, not to tensor objects: every view, ``detach()``
alias and wrapper over the same memory shares one label, so an in-place write
through any alias is seen by all of them (writing aux rows through a view of a
primary tensor taints the whole base).

Storages are keyed by the address of their C++ ``StorageImpl``.  PyTorch keeps a
storage's Python object alive exactly as long as the ``StorageImpl`` (PyObject
preservation), so a weak reference to it with a callback removes the entry the
moment the storage dies -- before its address can be reused -- without keeping
anything alive.  (Weak references to the ``StorageImpl`` itself would pin freed
blocks and, measured, made peak memory grow to 3.4x plain training.)
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from amal_verified.labels import EMPTY, Label

__all__ = ["STORE", "LabelStore", "storage_key", "storage_ref"]


def storage_key(t: torch.Tensor) -> int:
    """The identity of ``t``'s storage (plain tensors only)."""
    return int(t.untyped_storage()._cdata)


def storage_ref(t: torch.Tensor, on_death: Any = None) -> weakref.ref[Any]:
    """A weak reference to ``t``'s storage, dead exactly when the storage is."""
    return weakref.ref(t.untyped_storage(), on_death)


class LabelStore:
    """Maps storage keys to labels (and to where aux data entered them).

    Parameters' storages are never labelled (see ``_protection``).
    """

    __slots__ = ("_entries", "written_plain")

    def __init__(self) -> None:
        # key -> (weak reference to the storage, label, origin of aux data or None)
        self._entries: dict[int, tuple[weakref.ref[Any], Label, str | None]] = {}
        # Number of times a label was attached to memory by an in-place write or a
        # module-buffer update.  While zero, module buffers need no scan.
        self.written_plain = 0

    def _forget(self, key: int, ref: weakref.ref[Any]) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] is ref:
            del self._entries[key]

    def _entry(self, t: torch.Tensor) -> tuple[weakref.ref[Any], Label, str | None] | None:
        if not self._entries:
            return None
        try:
            key = storage_key(t)
        except (RuntimeError, NotImplementedError):  # sparse, meta or storage-less tensors
            return None
        return self._entries.get(key)

    def of(self, t: torch.Tensor) -> Label:
        """Label of a plain tensor's storage (EMPTY if never labelled)."""
        entry = self._entry(t)
        return EMPTY if entry is None else entry[1]

    def origin(self, t: torch.Tensor) -> str | None:
        """Where auxiliary data first entered ``t``'s memory, if recorded."""
        entry = self._entry(t)
        return None if entry is None else entry[2]

    def set(self, t: torch.Tensor, label: Label, origin: str | None = None) -> None:
        key = storage_key(t)
        entry = self._entries.get(key)
        if entry is not None:
            keep = entry[2] if entry[1].has_aux and label.has_aux else None
            self._entries[key] = (entry[0], label, keep or (origin if label.has_aux else None))
            return
        if label.is_empty:
            return
        ref = storage_ref(t, lambda r, k=key: self._forget(k, r))
        self._entries[key] = (ref, label, origin if label.has_aux else None)

    def join(self, t: torch.Tensor, label: Label, origin: str | None = None) -> Label:
        """Join ``label`` into ``t``'s storage label; returns the new label."""
        if label.is_empty:
            return self.of(t)
        new = self.of(t).join(label)
        self.set(t, new, origin)
        return new

    def __len__(self) -> int:
        return len(self._entries)


STORE = LabelStore()
