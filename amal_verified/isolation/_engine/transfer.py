"""Labels across pickling, ``torch.save``/``torch.load`` and process boundaries.

- A tracked tensor pickles as its plain memory plus its labels
  (:func:`reduce_tagged`), rebuilt by ``global_hooks.rebuild_tagged``; every label
  survives ``pickle``, ``copy``, ``torch.save``/``torch.load`` (also with
  ``weights_only=True``: the rebuild functions and nothing else are registered
  with ``torch.serialization.add_safe_globals``) and ``multiprocessing``.  A
  parameter tracked in place (``_TrackedParameter``) rebuilds as one
  (:func:`reduce_tracked_parameter`, :func:`rebuild_tracked_parameter`): an
  ``nn.Parameter`` to PyTorch, with its labels, ``requires_grad`` and attributes.
- A protected tensor (``protection``) sent to another process through ``multiprocessing``, which
  moves its memory into shared memory and hands the other process that memory, is protected in the
  receiving process too, under the same name and owner: an auxiliary-derived write there (an
  auxiliary agent's optimizer in a Hogwild/A3C worker stepping a shared world-model encoder) is
  refused where it is made.
- A *plain* tensor object whose memory carries a label (a parameter updated
  from labelled gradients, a batch collated by a ``DataLoader`` worker)
  pickles as a tracked tensor when sent to another process through
  ``multiprocessing`` (``DataLoader(num_workers>0)``, queues, pools), with all
  its labels.  Through ``pickle``, ``copy.deepcopy`` and ``torch.save`` it
  keeps its labels only when they hold an auxiliary source: a plain model
  trained on primary data copies, saves and loads anywhere as plain PyTorch.

Labels are written as tuples of ``(kind, name)`` strings (and byte ranges for
the rows of a concatenation), so the files hold nothing but tensors, strings
and integers.  The two rebuilding functions of tensors live in ``global_hooks``, whose import (any use of
``amal_verified.isolation.tagging``) registers them with ``torch.serialization.add_safe_globals``;
this module registers :func:`rebuild_tracked_parameter`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import torch

from amal_verified.isolation._engine import label_store as store
from amal_verified.isolation._engine import protection as _protection
from amal_verified.isolation._engine.dispatch import (
    TaggedTensor,
    _copying,
    _TrackedParameter,
    as_tracked_parameter,
    track_in_place,
)
from amal_verified.isolation.labels import EMPTY, Label, Source, SourceKind

__all__ = ["apply_spec", "install", "rebuild_tracked_parameter", "reduce_tagged", "reduce_tracked_parameter"]

LabelSpec = tuple[tuple[str, str], ...]
RowsSpec = tuple[tuple[int, int, LabelSpec], ...]


def _label_spec(label: Label) -> LabelSpec:
    return tuple((s.kind.value, s.name) for s in sorted(label.sources))


def _spec(t: torch.Tensor) -> LabelSpec | RowsSpec:
    storage = store._storage(t)
    found = None if storage is None else getattr(storage, store._LABEL, None)
    if found is None:
        return ()
    if type(found) is Label:
        return _label_spec(found)
    return tuple((start, end, _label_spec(label)) for start, end, label in found.ranges)


def _label_from(spec: LabelSpec) -> Label:
    return Label(Source(SourceKind(kind), name) for kind, name in spec)


def apply_spec(t: torch.Tensor, spec: Any) -> None:
    if not spec:
        return
    first = spec[0]
    if len(first) == 3:  # rows
        store.set_label(
            t, store._normalise([(int(a), int(b), _label_from(tuple(lab))) for a, b, lab in spec])
        )
    else:
        store.set_label(t, _label_from(tuple(tuple(x) for x in spec)))


def _plain_detached(t: torch.Tensor) -> torch.Tensor:
    with torch._C._DisableTorchDispatch():
        return t.detach()


# The unpickling functions, given by ``install``: they live with ``ensure_active`` (``global_hooks``)
# because a process that unpickles a labelled tensor must track it from then on.
_rebuild_tagged: Callable[..., torch.Tensor] | None = None
_rebuild_from: Callable[..., torch.Tensor] | None = None
_rebuild_protected: Callable[..., torch.Tensor] | None = None


def reduce_tagged(t: torch.Tensor, protocol: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """``__reduce_ex__`` of a tracked tensor."""
    if _rebuild_tagged is None:
        raise RuntimeError(
            "amal_verified: labelled tensors are pickled only once tracking is on (ensure_active)"
        )
    requires_grad = bool(t.requires_grad and t.is_leaf)
    return (_rebuild_tagged, (_plain_detached(t), _spec(t), requires_grad))


def reduce_tracked_parameter(t: torch.Tensor, protocol: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """``__reduce_ex__`` of a parameter tracked in place: its plain memory, labels,
    ``requires_grad`` and attributes, rebuilt by :func:`rebuild_tracked_parameter`."""
    state = torch._utils._get_obj_state(t) or None
    return (rebuild_tracked_parameter, (_plain_detached(t), _spec(t), bool(t.requires_grad), state))


def rebuild_tracked_parameter(
    elem: torch.Tensor, spec: Any, requires_grad: bool = False, state: Any = None
) -> torch.Tensor:
    """The parameter tracked in place over ``elem`` with the recorded labels, ``requires_grad`` and
    attributes (an unpickling function: an ``nn.Parameter`` to PyTorch, like the one pickled)."""
    from amal_verified.isolation._engine import global_hooks

    out = as_tracked_parameter(global_hooks.rebuild_tagged(elem, spec, requires_grad))
    if state:
        torch._utils._set_obj_state(out, state)
    return out


torch.serialization.add_safe_globals([rebuild_tracked_parameter])


_installed = False
_ORIGINAL_REDUCE: Final[dict[type, Any]] = {}


def _labelled_reduce_ex(cls: type) -> Callable[[torch.Tensor, Any], Any]:
    original = _ORIGINAL_REDUCE[cls]

    def __reduce_ex__(self: torch.Tensor, protocol: Any) -> Any:
        reduced = original(self, protocol)
        if not store.counters.tagged or type(self) is not cls:
            return reduced
        if not store.storage_label(self).has_aux:
            return reduced
        return (_rebuild_from, (reduced[0], reduced[1], _spec(self)))

    return __reduce_ex__


def _labelled_deepcopy(cls: type) -> Callable[[torch.Tensor, dict[int, Any]], Any]:
    original = cls.__dict__["__deepcopy__"]

    def __deepcopy__(self: torch.Tensor, memo: dict[int, Any]) -> Any:
        copied = original(self, memo)
        if getattr(_copying, "unlabelled", False):
            return copied  # the audit's copies: the code runs as an untagged codebase would
        if store.counters.aux and type(self) is cls and copied is not self:
            found = getattr(store._storage(self), store._LABEL, None)
            whole = found.whole() if isinstance(found, store.Rows) else found
            if found is not None and isinstance(whole, Label) and whole.has_aux:
                store.set_label(copied, found, store.origin_of(self))
                track_in_place(copied)
        return copied

    return __deepcopy__


def _labelled_forking_reducer(reduce: Callable[..., Any]) -> Callable[..., Any]:
    def reducer(t: torch.Tensor) -> Any:
        reduced = reduce(t)
        info = _protection.protection_of(t)
        if info is not None and _rebuild_protected is not None:
            # The receiving process gets the same memory: it is protected there too.
            protected = (info.name, info.owner, info.kind)
            return (_rebuild_protected, (reduced[0], reduced[1], _spec(t), protected))
        if not store.counters.tagged or store.storage_label(t) is EMPTY:
            return reduced
        return (_rebuild_from, (reduced[0], reduced[1], _spec(t)))

    return reducer


def install(
    rebuild_tagged: Callable[..., torch.Tensor],
    rebuild_from: Callable[..., torch.Tensor],
    rebuild_protected: Callable[..., torch.Tensor],
) -> None:
    """Make tensors carry their labels through pickling (once per process), rebuilt by the unpickling
    functions given; protected tensors sent to another process through ``multiprocessing`` (which
    shares their memory) are protected there too, rebuilt by ``rebuild_protected``."""
    global _installed, _rebuild_tagged, _rebuild_from, _rebuild_protected
    if _installed:
        return
    _rebuild_tagged, _rebuild_from, _rebuild_protected = rebuild_tagged, rebuild_from, rebuild_protected
    TaggedTensor.__reduce_ex__ = reduce_tagged  # type: ignore[method-assign]
    _TrackedParameter.__reduce_ex__ = reduce_tracked_parameter  # type: ignore[method-assign]
    for cls in (torch.Tensor, torch.nn.Parameter):
        _ORIGINAL_REDUCE[cls] = cls.__dict__["__reduce_ex__"]
        cls.__reduce_ex__ = _labelled_reduce_ex(cls)  # type: ignore[method-assign]
        cls.__deepcopy__ = _labelled_deepcopy(cls)  # type: ignore[method-assign]
    from multiprocessing.reduction import ForkingPickler

    from torch.multiprocessing import reductions

    for cls in (torch.Tensor, torch.nn.Parameter):
        ForkingPickler.register(cls, _labelled_forking_reducer(reductions.reduce_tensor))
    _installed = True
