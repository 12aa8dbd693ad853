"""Labels of parameter gradients computed inside plainly-executed module calls.

Inside a tracked module call (``_boundary``) the backward pass runs on plain
tensors, so the labels that would have travelled with the gradient are
attached at the edges instead:

- during the backward pass, each parameter reached from a call's output
  receives, as a *pending* label, the join of the call's label and the label of
  the gradient arriving at that output (:func:`attribute`);
- a hook on the parameter joins the pending label into its incoming gradient
  and, when the label holds an auxiliary source, hands the gradient on as a
  tracked tensor, before it is accumulated into ``.grad`` or returned by
  ``torch.autograd.grad`` -- so that whatever is computed from it (clipping,
  surgery, flattening) keeps the label; a second hook, after accumulation,
  makes ``.grad`` itself tracked when its memory holds auxiliary data;
- pending labels belong to one backward pass (graph task) and are dropped when
  it ends or when a later pass starts.

With ``create_graph=True`` the returned gradient is a differentiable alias, so
higher-order gradients are PyTorch's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from amal_verified.isolation._engine import label_store as store
from amal_verified.isolation._engine.dispatch import TaggedTensor, tracked
from amal_verified.isolation.labels import EMPTY, Label

__all__ = ["attribute", "ensure_hook"]

_pending: dict[int, tuple[Label, str | None]] = {}
# Labels of gradients leaving a tracked call towards a tensor created before it, by the sequence number
# of that tensor's autograd node: a protected non-leaf tensor (what a differentiable optimizer steps)
# reads its label there, in its own hook, which runs before PyTorch retains its gradient.
_pending_nodes: dict[int, Callable[[], Label]] = {}
_pending_task = -1


def _cleanup() -> None:
    _pending.clear()
    _pending_nodes.clear()


def _start_pass(task: int) -> None:
    global _pending_task
    _pending.clear()
    _pending_nodes.clear()
    torch.autograd.Variable._execution_engine.queue_callback(_cleanup)
    _pending_task = task


def attribute_exit(node_sequence_nr: int, label: Callable[[], Label]) -> None:
    """During backward: the gradient leaving a call through that node depends on ``label()``."""
    task = torch._C._current_graph_task_id()
    if task != _pending_task:
        _start_pass(task)
    _pending_nodes[node_sequence_nr] = label


def attribute(params: Iterable[torch.Tensor], label: Label, origin: str | None = None) -> None:
    """During backward: the gradients of ``params`` depend on ``label``."""
    if label is EMPTY:
        return
    task = torch._C._current_graph_task_id()
    if task != _pending_task:
        # Labels are pending only for the backward pass that produced them; anything
        # left from a pass that raised before its end callbacks ran is dropped here.
        _start_pass(task)
    if not _pending:  # the first attribution of this pass: nothing to join with
        _pending.update(dict.fromkeys(map(id, params), (label, origin)))
        return
    for p in params:
        pid = id(p)
        previous = _pending.get(pid)
        if previous is None:
            _pending[pid] = (label, origin)
        else:
            _pending[pid] = (previous[0].join(label), previous[1] or origin)


class _BeforeAccumulation:
    """Joins the pending label into the gradient of one parameter (a tensor hook)."""

    __slots__ = ("pid",)
    # Hooks belong to one process: PyTorch drops them when it pickles the tensor, without a warning.
    __torch_unserializable__ = True

    def __init__(self, pid: int) -> None:
        self.pid = pid  # keys pending labels, which live only while one backward pass runs

    def __call__(self, grad: torch.Tensor) -> torch.Tensor | None:
        # A leaf's label is pending by its id (attribute() receives leaves only); a non-leaf's by its
        # autograd node (attribute_exit).  A leaf's hook runs in its AccumulateGrad node, which
        # attribute_exit never records, so at most one of the two applies.
        pending = _pending.pop(self.pid, None) if _pending else None
        if pending is None and _pending_nodes:
            node = torch._C._current_autograd_node()
            leaving = None if node is None else _pending_nodes.get(int(node._sequence_nr()))
            if leaving is not None:
                pending = (leaving(), None)
        if pending is None:
            return None
        label, origin = pending
        if not label._aux and store.label_fresh(grad, label):
            return None  # fresh memory, now labelled: what write_label does there, in fewer calls
        if isinstance(grad, TaggedTensor) or not label._aux:
            store.write_label(grad, label, origin)
            return None
        return tracked(grad, label, origin)


def ensure_hook(param: torch.Tensor) -> None:
    """Install (once per tensor) the hooks that label ``param``'s gradients.

    Whether they are installed is read from the tensor's own hooks, which move with it when it is
    swapped (``track_in_place``) and are not pickled.  A non-leaf tensor's hooks belong to its current
    autograd node: after an in-place update, :func:`rehook_non_leaf` installs them again.
    """
    hooks = param._backward_hooks
    if hooks:
        for hook in hooks.values():
            if type(hook) is _BeforeAccumulation:
                return
    param.register_hook(_BeforeAccumulation(id(param)))


def rehook_non_leaf(param: torch.Tensor) -> None:
    """After an in-place update of a non-leaf tensor, hook its new autograd node."""
    param.register_hook(_BeforeAccumulation(id(param)))
