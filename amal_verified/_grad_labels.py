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

import torch
from torch.utils.weak import WeakIdKeyDictionary

from amal_verified import _protection
from amal_verified._label_store import STORE
from amal_verified.labels import EMPTY, Label

_pending: dict[int, tuple[Label, str | None]] = {}
_hooked: WeakIdKeyDictionary = WeakIdKeyDictionary()
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
    """``grad`` tagged with ``label`` joined with its own label (for gradients of inputs).

    A copy when ``grad`` already carries a different label, so that a gradient
    tensor the engine hands to several consumers is never relabelled in place.
    """
    from amal_verified.tagged import TaggedTensor, label_of, wrap_with_label

    own = label_of(grad)
    if label.flows_to(own):
        return grad
    elem = grad.elem if isinstance(grad, TaggedTensor) else grad
    inherited = STORE.origin(elem) if own.has_aux else None
    if not own.is_empty:
        elem = elem.clone()
    return wrap_with_label(elem, own.join(label), inherited or origin)


def ensure_hook(param: torch.Tensor) -> None:
    """Install (once) the hooks that label ``param``'s gradients.

    Before accumulation, the pending label is joined into the incoming
    gradient's storage (no copy) and the gradient is handed on as a tagged
    tensor, so that ``torch.autograd.grad`` results are tagged too and what is
    computed from them (``torch.cat``, ``clone``, projections written into
    ``.grad``) keeps the label.  After accumulation, ``.grad`` -- which the parameter then
    owns -- is made a tagged tensor, so that later edits (clipping, surgery)
    go through the dispatcher and join their labels.
    """
    if param in _hooked:
        return
    _hooked[param] = True
    _protection.note_parameter(param)
    pid = id(param)  # keys pending labels, which live only while this backward pass runs

    def before_accumulation(grad: torch.Tensor) -> torch.Tensor | None:
        pending = _pending.pop(pid, None)
        if pending is not None and not pending[0].is_empty:
            from amal_verified.tagged import TaggedTensor, wrap_with_label

            if isinstance(grad, TaggedTensor):
                STORE.join(grad.elem, pending[0], pending[1])
                return None
            STORE.join(grad, pending[0], pending[1])
            return wrap_with_label(grad, EMPTY)
        return None

    def after_accumulation(p: torch.Tensor) -> None:
        from amal_verified.tagged import TaggedTensor, wrap_with_label

        g = p.grad
        if g is not None and not isinstance(g, TaggedTensor):
            tagged = wrap_with_label(g, EMPTY)
            if tagged is not g:
                p.grad = tagged

    param.register_hook(before_accumulation)
    param.register_post_accumulate_grad_hook(after_accumulation)
