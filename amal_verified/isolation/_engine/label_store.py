"""Labels of memory: every storage carries the join of the labels written into it.

Labels belong to *storages*, not to tensor objects: every view, ``detach()``
alias and ``.data`` of the same memory shares one label, so a write through any
alias is seen by all of them (writing aux rows through a view of a primary
tensor taints the whole base).

A label is kept as an attribute of the storage's Python object.  PyTorch
preserves that object exactly as long as the C++ ``StorageImpl`` lives
(PyObject preservation), so the label dies with the memory, and memory that is
freed and reallocated starts unlabelled.

Granularity: one label per storage, except for the rows of a concatenation.
``torch.cat`` / ``torch.stack`` along the outermost dimension of inputs with
different labels give a storage whose byte ranges keep their inputs' labels
(:class:`Rows`); a view of it carries the join of the ranges its elements span.
Writes join into the ranges they touch (a whole-range overwrite replaces them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import torch

from amal_verified.isolation.labels import EMPTY, Label

__all__ = [
    "Rows",
    "counters",
    "extent",
    "holds_exactly",
    "label_and_mixing",
    "label_fresh",
    "label_new_memory",
    "label_of_plain",
    "origin_of",
    "set_label",
    "write_label",
]

_LABEL: Final = "_amal_label"
_ORIGIN: Final = "_amal_origin"


class Counters:
    """Process-wide facts the hot paths test before doing any work."""

    __slots__ = ("aux", "labelled_state", "tagged")

    def __init__(self) -> None:
        # A storage was ever labelled (nothing to look up before that).
        self.tagged = False
        # A label with an auxiliary source was ever written (nothing for the gate to refuse before).
        self.aux = False
        # Labels were written into memory not reached through a tracked tensor object (module
        # buffers, tensor attributes, in-place writes into plain tensors): module calls must read
        # their buffers' and attributes' labels.
        self.labelled_state = 0


counters: Final = Counters()


def _storage(t: torch.Tensor) -> Any:
    """``t``'s storage object (of its values, for sparse tensors), looking through functorch
    wrappers; None for storage-less tensors (an uninitialised parameter of a lazy module too)."""
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        pass
    except ValueError:  # torch.nn.UninitializedParameter refuses every use
        return None
    if t.layout != torch.strided:
        return _sparse_values_storage(t)
    functorch = torch._C._functorch
    inner = t
    for _ in range(16):
        if not functorch.is_functorch_wrapped_tensor(inner):
            break
        inner = functorch.get_unwrapped(inner)
        try:
            return inner.untyped_storage()
        except (RuntimeError, NotImplementedError, TypeError):
            continue
    return None


def _sparse_values_storage(t: torch.Tensor) -> Any:
    with torch._C._DisableTorchDispatch():
        try:
            values = t._values() if t.layout == torch.sparse_coo else t.values()
            return values.untyped_storage()
        except (RuntimeError, NotImplementedError, TypeError):
            return None


def extent(t: torch.Tensor) -> tuple[int, int]:
    """The byte range ``[lo, hi)`` of its storage that ``t``'s elements span (empty if no elements)."""
    if t.layout != torch.strided:
        return 0, 1 << 62  # the whole storage of its values
    size = t.element_size()
    lo = int(t.storage_offset()) * size
    if t.numel() == 0:
        return lo, lo
    span = 1 + sum((int(n) - 1) * abs(int(s)) for n, s in zip(t.shape, t.stride(), strict=True))
    return lo, lo + span * size


class Rows:
    """Labels of disjoint byte ranges of one storage, sorted, covering ``[0, nbytes)``.

    Immutable: writes build a new ``Rows`` (or a single :class:`Label` once
    every range agrees).
    """

    __slots__ = ("ranges",)

    def __init__(self, ranges: tuple[tuple[int, int, Label], ...]) -> None:
        self.ranges = ranges

    def whole(self) -> Label:
        return Label.join_all(label for _, _, label in self.ranges)

    def over(self, lo: int, hi: int) -> Label:
        if hi <= lo:
            return EMPTY
        found = EMPTY
        for start, end, label in self.ranges:
            if start < hi and lo < end:
                found = found.join(label)
        return found

    def write(self, lo: int, hi: int, label: Label, overwrite: bool) -> Label | Rows:
        """The labels after writing ``label`` into ``[lo, hi)`` (joined, or replacing if ``overwrite``)."""
        out: list[tuple[int, int, Label]] = []
        for start, end, old in self.ranges:
            if end <= lo or hi <= start:
                out.append((start, end, old))
                continue
            if start < lo:
                out.append((start, lo, old))
            new = label if overwrite else old.join(label)
            out.append((max(start, lo), min(end, hi), new))
            if hi < end:
                out.append((hi, end, old))
        return _normalise(out)


def _normalise(ranges: list[tuple[int, int, Label]]) -> Label | Rows:
    merged: list[tuple[int, int, Label]] = []
    for start, end, label in ranges:
        if end <= start:
            continue
        if merged and merged[-1][2] is label and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end, label)
        else:
            merged.append((start, end, label))
    if len(merged) <= 1:
        return merged[0][2] if merged else EMPTY
    return Rows(tuple(merged))


def rows_of_parts(parts: list[tuple[int, Label]]) -> Label | Rows:
    """The labels of a storage made by concatenating parts of the given byte lengths and labels."""
    ranges: list[tuple[int, int, Label]] = []
    pos = 0
    for nbytes, label in parts:
        ranges.append((pos, pos + nbytes, label))
        pos += nbytes
    return _normalise(ranges)


def label_of_plain(t: torch.Tensor) -> Label:
    """The label of the memory ``t``'s elements occupy (EMPTY if never labelled)."""
    if not counters.tagged:
        return EMPTY
    storage: Any
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        storage = _storage(t)  # sparse, functorch-wrapped or storage-less
    if storage is None:
        return EMPTY
    found = getattr(storage, _LABEL, None)
    if found is None:
        return EMPTY
    if type(found) is Label:
        return found
    rows: Rows = found
    return rows.over(*extent(t))


def any_aux(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether the memory of any of ``tensors`` carries an auxiliary source: ``any(label_of_plain(t).has_aux
    for t in tensors)``, in one call, reading each dense tensor's storage label directly."""
    if not counters.aux:
        return False
    for t in tensors:
        try:
            found = getattr(t.untyped_storage(), _LABEL, None)
        except (RuntimeError, NotImplementedError, TypeError, ValueError):
            found = label_of_plain(t)  # sparse, functorch-wrapped or storage-less
        if found is None:
            continue
        if type(found) is not Label:
            found = label_of_plain(t)  # rows of a concatenation: the ones ``t`` spans
        if found._aux:
            return True
    return False


def holds_exactly(t: torch.Tensor, label: Label) -> bool:
    """Whether all of ``t``'s memory carries exactly ``label`` (then writing it changes nothing)."""
    try:
        return getattr(t.untyped_storage(), _LABEL, None) is label
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return False  # no dense memory of its own: let write_label decide


def storage_label(t: torch.Tensor) -> Label:
    """The join of every label in ``t``'s storage (whatever part of it ``t`` views)."""
    if not counters.tagged:
        return EMPTY
    storage: Any
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        storage = _storage(t)  # sparse, functorch-wrapped or storage-less
    found = None if storage is None else getattr(storage, _LABEL, None)
    if found is None:
        return EMPTY
    return found if type(found) is Label else found.whole()


def label_and_mixing(t: torch.Tensor) -> tuple[Label, bool]:
    """The label of ``t``'s elements and whether they span rows of its storage that carry different
    labels (a concatenation's)."""
    if not counters.tagged:
        return EMPTY, False
    storage: Any
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        storage = _storage(t)  # sparse, functorch-wrapped or storage-less
    found = None if storage is None else getattr(storage, _LABEL, None)
    if found is None:
        return EMPTY, False
    if type(found) is Label:
        return found, False
    lo, hi = extent(t)
    seen = {label for start, end, label in found.ranges if start < hi and lo < end}
    return Label.join_all(seen), len(seen) > 1


def origin_of(t: torch.Tensor) -> str | None:
    """Where auxiliary data first entered ``t``'s memory, if recorded."""
    storage = _storage(t)
    return None if storage is None else getattr(storage, _ORIGIN, None)


def set_label(t: torch.Tensor, label: Label | Rows, origin: str | None = None) -> None:
    """Replace the labels of ``t``'s whole storage."""
    storage = _storage(t)
    if storage is None:
        return
    if label is EMPTY:
        if getattr(storage, _LABEL, None) is not None:
            delattr(storage, _LABEL)
        if getattr(storage, _ORIGIN, None) is not None:
            delattr(storage, _ORIGIN)
        return
    counters.tagged = True
    setattr(storage, _LABEL, label)
    _record_origin(storage, label, origin)


def label_fresh(t: torch.Tensor, label: Label) -> bool:
    """Label ``t``'s memory ``label``, a label without an auxiliary source, if that memory holds no
    label and ``t`` spans all of it, densely (a new tensor being tagged primary); otherwise write
    nothing and return False.

    Exactly what :func:`write_label` does in that case, for dense tensors, with fewer calls: memory
    without a label has no recorded origin either (the two are removed together), and a label
    without an auxiliary source records none.
    """
    try:
        storage = t.untyped_storage()
        if getattr(storage, _LABEL, None) is not None:
            return False
        if not (t.storage_offset() == 0 and t.nbytes >= storage.nbytes() and t.is_contiguous()):
            return False
    except (RuntimeError, NotImplementedError, TypeError):
        return False  # no dense memory of its own (sparse, functorch wrappers): the general path
    counters.tagged = True
    setattr(storage, _LABEL, label)
    return True


def _covers(t: torch.Tensor, storage: Any) -> bool:
    """Whether ``t``'s elements span the whole storage (cheap test first, then the exact extent).

    A tensor without elements counts as covering it: what is written into it is known only by its
    shape, which depends on the data written, so the label goes to the memory behind it (joined,
    never overwriting, see :func:`write_label`)."""
    if t.numel() == 0:
        return True
    nbytes = storage.nbytes()
    if t.storage_offset() == 0 and t.numel() * t.element_size() >= nbytes and t.is_contiguous():
        return True
    lo, hi = extent(t)
    return lo == 0 and hi >= nbytes


def write_label(t: torch.Tensor, label: Label, origin: str | None = None, overwrite: bool = False) -> Label:
    """Record that ``label``-ed data was written into the elements of ``t``; returns their new label.

    ``overwrite``: the written elements no longer depend on what they held (never for a tensor
    without elements: there are none, and the memory behind it keeps what it held).
    """
    storage: Any
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        storage = _storage(t)  # sparse, functorch-wrapped or storage-less
    if storage is None:
        return EMPTY
    if overwrite and t.numel() == 0:
        overwrite = False
    old = getattr(storage, _LABEL, None)
    if old is None:
        if label is EMPTY:
            return EMPTY
        if _covers(t, storage):
            label_new_memory(storage, label, origin)  # the common case: a new tensor being labelled
            return label
        lo, hi = extent(t)
        new: Label | Rows = Rows(((0, storage.nbytes(), EMPTY),)).write(lo, hi, label, overwrite=True)
    elif old is label and not overwrite:
        return old
    elif type(old) is Label:
        if not overwrite and (label is EMPTY or label.flows_to(old)):
            return old
        if _covers(t, storage):
            new = label if overwrite else old.join(label)
        elif old is EMPTY or label.flows_to(old):
            new = old.join(label)
        else:
            lo, hi = extent(t)
            new = Rows(((0, storage.nbytes(), old),)).write(lo, hi, label, overwrite)
    else:
        lo, hi = extent(t)
        new = old.write(lo, hi, label, overwrite)
    if new is EMPTY:
        if old is not None:
            delattr(storage, _LABEL)
        if getattr(storage, _ORIGIN, None) is not None:
            delattr(storage, _ORIGIN)
        return EMPTY
    counters.tagged = True
    setattr(storage, _LABEL, new)
    _record_origin(storage, new, origin)
    return new if type(new) is Label else new.over(*extent(t))


def label_new_memory(storage: Any, label: Label, origin: str | None) -> None:
    """Give ``storage``, which holds no label, the non-empty ``label`` for all of it: what
    :func:`write_label` does for a tensor spanning fresh memory, for callers that already hold the
    storage (memory without a label has no origin to clear)."""
    counters.tagged = True
    setattr(storage, _LABEL, label)
    if label._aux:
        _record_origin(storage, label, origin)


def _record_origin(storage: Any, label: Label | Rows, origin: str | None) -> None:
    has_aux = label.has_aux if type(label) is Label else label.whole().has_aux
    if has_aux:
        counters.aux = True
    elif getattr(storage, _ORIGIN, None) is None:
        return
    if not has_aux:
        if getattr(storage, _ORIGIN, None) is not None:
            delattr(storage, _ORIGIN)
    elif origin is not None and getattr(storage, _ORIGIN, None) is None:
        setattr(storage, _ORIGIN, origin)
