"""Tagged data: ``primary()``, ``aux()``, ``label_of()`` and the ``PrimaryData`` / ``AuxData`` types.

``primary(x, source=...)`` and ``aux(x, source=...)`` label ``x``'s memory with
its source and return it as a tracked tensor (no copy; the same memory).  ``aux``
also makes the object ``x`` (and, for a view, its base) tracked in place, so code
that keeps using what it passed is followed too; ``primary`` does not need to
(no refusal depends on a primary label) and stays cheap.  From
then on every value derived from it carries a label, the set of sources it
depends on (``_dispatch`` holds the per-operation rule, ``_boundary`` the
module-boundary rule, ``_grad_labels`` the labels of gradients).
``primary(x, ..., follow=False)`` labels the memory and returns ``x`` itself:
a gated model's calls (and those of modules whose state carries a label) read
that label; operations on ``x`` and calls of other modules are not followed.

Every tagged tensor is, at run time, a :class:`TaggedTensor`.  The public
types are views of its *current* label (Python's ``isinstance`` never consults
a metaclass for an object's exact type, so they are never instantiated):
``isinstance(t, PrimaryData)`` is true exactly when ``t`` is tracked and its
label is non-empty and primary-only, ``isinstance(t, AuxData)`` when its label
contains an auxiliary source -- also after an in-place write changed it.  For
mypy they are distinct ``@final`` subclasses of ``torch.Tensor``.
"""

from __future__ import annotations

from typing import Literal, cast, final, overload

import torch

from amal_verified.common.runtime_checks import checked_as
from amal_verified.isolation._engine import label_store as store
from amal_verified.isolation._engine.dispatch import (
    TaggedTensor,
    _TrackedOnFirstUse,
    label_of,
    track_in_place,
)
from amal_verified.isolation._engine.global_hooks import ensure_active
from amal_verified.isolation.errors import TaggingError
from amal_verified.isolation.escapes import declassifying, record_escape
from amal_verified.isolation.labels import Label, SourceKind

__all__ = ["AuxData", "PrimaryData", "TaggedTensor", "aux", "label_of", "primary"]


class _LabelView(torch._C._TensorMeta):
    """Makes ``isinstance`` reflect a tagged tensor's *current* label."""

    def __instancecheck__(cls, instance: object) -> bool:
        if type(instance) is not TaggedTensor:
            if type(instance) is _TrackedOnFirstUse:
                track_in_place(instance)
            if not isinstance(instance, TaggedTensor):
                return False
        label = store.label_of_plain(instance)
        if cls is AuxData:
            return bool(label._aux)
        return bool(label.sources) and not label._aux


@final
class PrimaryData(TaggedTensor, metaclass=_LabelView):
    """Data derived from primary (real-environment) sources only (an ``isinstance`` view)."""


@final
class AuxData(TaggedTensor, metaclass=_LabelView):
    """Data that depends on at least one auxiliary source (an ``isinstance`` view)."""


def _tag(x: torch.Tensor, kind: SourceKind, source: str, follow: bool = True) -> torch.Tensor:
    if not isinstance(source, str) or not source:
        raise TaggingError(
            f"source must be a non-empty string naming where the data comes from, got {source!r}"
        )
    if x.layout != torch.strided:
        raise TaggingError(
            f"only dense (strided) tensors can be tagged, got layout {x.layout}; convert with x.to_dense()"
        )
    if x.is_meta:
        raise TaggingError("a meta tensor holds no data to tag; tag the real tensor")
    new = Label.of(kind, source)
    ensure_active()
    if kind is SourceKind.AUX:
        return _tag_aux(x, new)
    if type(x) is torch.Tensor and store.label_fresh(x, new):
        # A plain tensor over memory that held no label (what a replay buffer's sample() returns).
        if not follow:
            return x
        if x.requires_grad:  # a differentiable alias: gradients reach x unchanged
            return x.as_subclass(TaggedTensor)
        return torch.Tensor._make_subclass(TaggedTensor, x)
    existing = store.label_of_plain(x)
    if existing._aux and kind is SourceKind.PRIMARY:
        if declassifying() is None:
            raise TaggingError(
                f"cannot tag as primary data from {source!r}: this memory already holds data labelled "
                f"{existing!r}. If these values were recorded from the real environment (actions a policy "
                f"that learns from auxiliary data executed there), tag them inside "
                f"`with amal_verified.declassify(reason=...)`; otherwise keep them out of the primary data."
            )
        record_escape("primary() of auxiliary-derived data", existing)
        store.write_label(x, new, overwrite=True)
    else:
        store.write_label(x, new)
    if isinstance(x, TaggedTensor) or not follow:
        return x
    if x.requires_grad:  # a differentiable alias: gradients reach x unchanged
        return x.as_subclass(TaggedTensor)
    return torch.Tensor._make_subclass(TaggedTensor, x)


def _tag_aux(x: torch.Tensor, label: Label) -> TaggedTensor:
    """Label ``x``'s memory auxiliary and make the objects that own it tracked in place: ``x``
    itself and, for a view, its base.  Code that goes on using the object it passed (tagging read
    as an in-place operation) or the buffer a view came from is then followed like the returned
    tensor; other plain views taken before are the documented limit (their memory keeps the label,
    which module calls and the gate read)."""
    store.write_label(x, label)
    base = x._base
    if type(base) is torch.Tensor:
        track_in_place(base)
    if isinstance(x, TaggedTensor) or track_in_place(x):
        return cast(TaggedTensor, x)  # track_in_place: a plain tensor is now tracked, the same object
    return x.as_subclass(TaggedTensor)  # not swappable (a functorch wrapper): a differentiable alias


# The results' labels are set by ``_tag`` itself; checking them through the label views would read
# them back from the label store on every call.  beartype checks that they are tracked tensors.
_checked_tagging = checked_as({PrimaryData: TaggedTensor, AuxData: TaggedTensor})


@overload
def primary(x: torch.Tensor, *, source: str = "real-env", follow: Literal[True] = True) -> PrimaryData: ...
@overload
def primary(x: torch.Tensor, *, source: str = "real-env", follow: bool) -> torch.Tensor: ...
@_checked_tagging
def primary(x: torch.Tensor, *, source: str = "real-env", follow: bool = True) -> PrimaryData | torch.Tensor:
    """Tag ``x`` (no copy) as primary data from ``source``.

    With ``follow=False`` only ``x``'s memory is labelled and ``x`` itself is returned: a plain
    tensor stays plain (a tracked one stays tracked), so operations on it, and calls of modules
    holding no protected parameter and no labelled state, run as plain PyTorch and what they
    compute carries no label.
    A gated model called on ``x`` itself reads the label of its memory: its outputs, gradients
    and the parameters they step carry it.  It is for small models, where following primary data
    through every operation is a large part of their own time.  What the gate refuses is
    unchanged: auxiliary data are followed either way, and no refusal depends on a primary label.

    Raises :class:`TaggingError` if ``x``'s memory already holds auxiliary data.
    """
    return _tag(x, SourceKind.PRIMARY, source, follow)


@_checked_tagging
def aux(x: torch.Tensor, *, source: str) -> AuxData:
    """Tag ``x`` (no copy) as auxiliary data from ``source`` (e.g. ``"aux-3"``)."""
    return cast(AuxData, _tag(x, SourceKind.AUX, source))


def wrap_with_label(t: torch.Tensor, label: Label, origin: str | None = None) -> torch.Tensor:
    """Join ``label`` into ``t``'s memory and return it tracked (plain if it carries no label)."""
    if label.is_empty and label_of(t).is_empty:
        return t
    from amal_verified.isolation._engine.dispatch import tracked

    return tracked(t, label, origin)
