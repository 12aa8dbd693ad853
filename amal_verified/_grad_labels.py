"""Labels for gradients computed inside plainly-executed module calls.

Inside a tracked module call (see ``_boundary``) the backward pass runs on
plain tensors for speed, so the labels that would have travelled with the
gradient are attached at the edges instead:

- each parameter reached from a call's output receives, as a *pending* label,
  the join of the call's input label and the label of the gradient arriving
  at that output;
- a hook on the parameter turns its (plain) gradient into a tagged gradient
  carrying the pending label, before it is accumulated into ``.grad`` or
  returned by ``torch.autograd.grad``;
- pending labels are cleared when the backward pass ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from amal_verified import _protection
from amal_verified._label_store import STORE
from amal_verified.labels import EMPTY, Label

_pending: dict[int, tuple[Label, str | None]] = {}
_hooked: set[int] = set()
_queued_for_task = -1


def _cleanup() -> None:
    _pending.clear()


def attribute(params: Iterable[torch.Tensor], label: Label, origin: str | None = None) -> None:
    """During backward: the gradients of ``params`` depend on ``label``."""
    global _queued_for_task
    if label.is_empty:
        return
    task = torch._C._current_graph_task_id()
    if task != _queued_for_task:
        # Labels are pending only for the backward pass that produced them; anything
        # left from a pass that raised before its end callbacks ran is dropped here.
        _pending.clear()
        torch.autograd.Variable._execution_engine.queue_callback(_cleanup)
        _queued_for_task = task
    for p in params:
        pid = id(p)
        previous, previous_origin = _pending.get(pid, (EMPTY, None))
        _pending[pid] = (previous.join(label), previous_origin or origin)


def labelled_grad(grad: torch.Tensor, label: Label, origin: str | None = None) -> torch.Tensor:
    """A tagged copy of ``grad`` carrying ``label`` joined with its own label.

    A copy, because the engine may hand the same gradient tensor to several
    parameters, and the tagged result may be stored as ``.grad`` without copying.
    """
    from amal_verified.tagged import TaggedTensor, label_of, wrap_with_label

    own = label_of(grad)
    if label.flows_to(own):
        return grad
    elem = grad.elem if isinstance(grad, TaggedTensor) else grad
    inherited = STORE.origin(elem) if own.has_aux else None
    return wrap_with_label(elem.clone(), own.join(label), inherited or origin)


def ensure_hook(param: torch.Tensor) -> None:
    """Install (once) the hook that labels ``param``'s gradients."""
    pid = id(param)
    if pid in _hooked:
        return
    _hooked.add(pid)
    _protection.note_parameter(param)

    def hook(grad: torch.Tensor) -> Any:
        pending = _pending.pop(pid, None)
        if pending is None or pending[0].is_empty:
            return None
        return labelled_grad(grad, pending[0], pending[1])

    param.register_hook(hook)  # type: ignore[no-untyped-call]
    import weakref

    weakref.finalize(param, _hooked.discard, pid)
