"""Module-boundary tracking: a module call on tagged inputs runs plain inside.

Tracking every aten operation costs 30-55 µs per operation, ~1.3-1.6x on the
paper's world-model step.  Instead, when a module is called (outside any other
tracked call) with tagged positional inputs or labelled buffers:

1. the *call label* S is the label shared by the tagged inputs joined with the
   module's buffers' labels.  When tagged inputs (or buffers) carry *different*
   labels, the call is not unwrapped: it runs operation by operation, so that
   each parameter's gradient gets exactly the labels of the inputs it used;
2. the inputs are unwrapped to plain tensors (through ``_Unwrap``, so autograd
   stays connected) and the module runs plain -- nested module calls included;
3. outputs are tagged with S (through ``_Wrap``); buffers and inputs whose
   version counter moved (running statistics, in-place edits) have S joined
   into their storage's label;
4. in backward, ``_Wrap`` receives the gradient of one output with its label G
   and attributes S ⊔ G to every parameter reachable from *that* output inside
   the call (found by walking the autograd graph built during the call);
   ``_Unwrap`` returns the input gradient tagged with S ⊔ G; gradients leaving
   the call towards tensors created before it (closures, plain inputs with
   history) are tagged with S ⊔ G by a node pre-hook.

Keyword arguments are not seen by global module hooks: tagged keyword
arguments are tracked operation by operation inside the call instead, which is
correct, only slower.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from typing import Any

import torch

from amal_verified import _grad_labels
from amal_verified._label_store import STORE
from amal_verified.escaping import user_call_site
from amal_verified.labels import EMPTY, Label
from amal_verified.tagged import TaggedTensor, label_of, wrap_with_label

__all__ = ["post_hook", "pre_hook"]


class _Frame:
    """One tracked module call."""

    __slots__ = (
        "buffer_versions",
        "grad_label",
        "input_versions",
        "label",
        "module_name",
        "origin",
        "seq_start",
        "task",
    )

    def __init__(self, label: Label, module_name: str) -> None:
        self.label = label
        self.origin: str | None = None
        self.task = -1  # the backward pass (graph task) in which gradients last left this call
        self.grad_label = EMPTY
        self.module_name = module_name
        self.seq_start = 0
        # per submodule: its buffers and their version counters when the call began
        self.buffer_versions: list[tuple[list[torch.Tensor], list[int]]] = []
        self.input_versions: list[tuple[torch.Tensor, int]] = []

    def full_label(self) -> Label:
        return self.label.join(self.grad_label)


class _State(threading.local):
    def __init__(self) -> None:
        self.frame: _Frame | None = None
        self.nested = 0


_state = _State()
_marker_leaf: torch.Tensor | None = None


def _current_sequence_nr() -> int:
    """A sequence number below that of every autograd node created from now on."""
    global _marker_leaf
    if _marker_leaf is None:
        _marker_leaf = torch.zeros((), requires_grad=True)
    node = _marker_leaf.view_as(_marker_leaf).grad_fn
    assert node is not None
    return int(node._sequence_nr())


class _Unwrap(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tagged: TaggedTensor, frame: _Frame) -> torch.Tensor:
        ctx.amal_frame = frame
        return tagged.elem.detach()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        frame: _Frame = ctx.amal_frame
        return _grad_labels.labelled_grad(grad, frame.full_label(), frame.origin), None


class _Wrap(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, plain: torch.Tensor, frame: _Frame, label: Label) -> torch.Tensor:
        ctx.amal_frame = frame
        ctx.amal_params = ()
        return wrap_with_label(plain.detach(), label, frame.origin)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        frame: _Frame = ctx.amal_frame
        frame.task = torch._C._current_graph_task_id()
        grad_label = label_of(grad)
        origin = frame.origin
        if not grad_label.is_empty:
            frame.grad_label = frame.grad_label.join(grad_label)
            if grad_label.has_aux and origin is None:
                origin = STORE.origin(grad.elem if isinstance(grad, TaggedTensor) else grad)
                frame.origin = origin
        # This output's parameters depend on S and on this output's gradient only.
        _grad_labels.attribute(ctx.amal_params, frame.label.join(grad_label), origin)
        plain = grad.elem if isinstance(grad, TaggedTensor) else grad
        return plain, None, None


_ACCUMULATE_GRAD: type | None = None


def _accumulate_grad_type() -> type:
    global _ACCUMULATE_GRAD
    if _ACCUMULATE_GRAD is None:
        leaf = torch.zeros(1, requires_grad=True)
        node = leaf.sum().grad_fn
        assert node is not None
        _ACCUMULATE_GRAD = type(node.next_functions[0][0])
    return _ACCUMULATE_GRAD


def _walk(root: Any, frame: _Frame) -> list[torch.Tensor]:
    """Parameters whose gradients flow from ``root`` inside this call; tag gradients leaving it."""
    acc_type: Any = _accumulate_grad_type()
    unwrap_type = _Unwrap._backward_cls
    params: list[torch.Tensor] = []
    seen: set[Any] = set()
    node: Any
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node) is acc_type:
            params.append(node.variable)
            continue
        if type(node) is unwrap_type and getattr(node, "amal_frame", None) is frame:
            continue
        if node._sequence_nr() < frame.seq_start:
            node.register_prehook(_ExitHook(frame))
            continue
        stack.extend(fn for fn, _ in node.next_functions)
    return params


_Grads = tuple[torch.Tensor | None, ...]


class _ExitHook:
    """Tags gradients that leave a tracked call towards tensors created before it."""

    __slots__ = ("frame",)

    def __init__(self, frame: _Frame) -> None:
        self.frame = frame

    def __call__(self, grad_outputs: _Grads) -> _Grads | None:
        if self.frame.task != torch._C._current_graph_task_id():
            return None  # this backward pass did not go through the call: its gradients owe it nothing
        label = self.frame.full_label()
        origin = self.frame.origin
        return tuple(
            None if g is None else _grad_labels.labelled_grad(g, label, origin) for g in grad_outputs
        )


def _buffer_versions(module: torch.nn.Module) -> list[tuple[list[torch.Tensor], list[int]]]:
    groups = []
    for sub in module.modules():
        own = [b for b in sub.buffers(recurse=False) if b is not None]
        if own:
            groups.append((own, [b._version for b in own]))
    return groups


def _input_labels(value: Any, found: set[Label]) -> bool:
    """Collect the non-empty labels of a positional argument (one level into containers).

    Returns whether it holds a tagged tensor.
    """
    tv = type(value)
    if tv is TaggedTensor:
        label = STORE.of(value.elem)
        if not label.is_empty:
            found.add(label)
        return True
    if isinstance(value, torch.Tensor):
        label = STORE.of(value)
        if not label.is_empty:
            found.add(label)
        return False
    if tv is tuple or tv is list:
        tagged = False
        for item in value:
            tagged = _input_labels(item, found) or tagged
        return tagged
    return False


def _unwrap_input(value: Any, frame: _Frame) -> Any:
    tv = type(value)
    if tv is TaggedTensor:
        needs_grad = value.requires_grad and torch.is_grad_enabled()
        plain = _Unwrap.apply(value, frame) if needs_grad else value.elem  # type: ignore[no-untyped-call]
        frame.input_versions.append((plain, plain._version))
        return plain
    if tv is tuple or tv is list:
        return tv(_unwrap_input(item, frame) for item in value)
    return value


def pre_hook(module: torch.nn.Module, args: tuple[Any, ...]) -> Any:
    state = _state
    if state.frame is not None:
        state.nested += 1
        return None
    labels: set[Label] = set()
    tagged = False
    for arg in args:
        tagged = _input_labels(arg, labels) or tagged
    if STORE.written_plain:
        for buf in module.buffers():
            label = STORE.of(buf)
            if not label.is_empty:
                labels.add(label)
    if len(labels) != 1:
        return None  # nothing labelled, or inputs with different labels: track op by op
    (label,) = labels
    frame = _Frame(label, type(module).__name__)
    if label.has_aux:
        frame.origin = f"{frame.module_name} called on data labelled {label!r} at {user_call_site(2)}"
    if torch.is_grad_enabled():
        frame.seq_start = _current_sequence_nr()
    frame.buffer_versions = _buffer_versions(module)
    new_args = tuple(_unwrap_input(arg, frame) for arg in args) if tagged else None
    state.frame = frame
    return new_args


def post_hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    state = _state
    if state.nested:
        state.nested -= 1
        return None
    frame = state.frame
    if frame is None:
        return None
    state.frame = None
    for group, versions in frame.buffer_versions:
        # Some kernels (native_batch_norm) update buffers without bumping their version
        # counter; a submodule whose state changed at all has all its state depend on S.
        if any(b._version != v for b, v in zip(group, versions, strict=True)):
            for b in group:
                STORE.join(b, frame.label, frame.origin)
            STORE.written_plain += 1
    for tensor, version in frame.input_versions:
        if tensor._version != version:
            STORE.join(tensor, frame.label, frame.origin)
            STORE.written_plain += 1
    if output is None:
        return None
    return _map_output(output, lambda t: _tag_output(t, frame), module)


def _tag_output(t: torch.Tensor, frame: _Frame) -> torch.Tensor:
    if isinstance(t, TaggedTensor):
        # Produced op by op inside the call (a tagged closure or keyword argument).
        STORE.join(t.elem, frame.label, frame.origin)
        return t
    existing = STORE.of(t)
    label = existing if not existing.is_empty else frame.label  # an input passed through keeps its label
    if not t.requires_grad:
        return wrap_with_label(t, label, frame.origin)
    out = _Wrap.apply(t, frame, label)  # type: ignore[no-untyped-call]
    node = out.grad_fn
    params = _walk(t.grad_fn, frame) if t.grad_fn is not None else [t]
    for p in params:
        _grad_labels.ensure_hook(p)
    node.amal_params = tuple(params)
    return out  # type: ignore[no-any-return]


def _map_output(value: Any, fn: Any, module: torch.nn.Module) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if value is None or isinstance(value, (int, float, complex, str, bytes, bool)):
        return value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_map_output(v, fn, module) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_map_output(v, fn, module) for v in value)
    if isinstance(value, dict):
        mapped = copy.copy(value)
        for key, item in value.items():
            mapped[key] = _map_output(item, fn, module)
        return mapped
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: _map_output(getattr(value, f.name), fn, module)
            for f in dataclasses.fields(value)
            if f.init
        }
        return dataclasses.replace(value, **changes)
    holds_tensor = any(isinstance(v, torch.Tensor) for v in getattr(value, "__dict__", {}).values())
    if holds_tensor:
        raise TypeError(
            f"amal_verified cannot track the output of {type(module).__name__} called at "
            f"{user_call_site(2)}: it returned a {type(value).__name__} holding tensors. Return "
            f"tensors, tuples, lists, dicts, namedtuples or dataclasses of them (or register the type "
            f"with torch.utils._pytree) so that labels reach everything computed from tagged data."
        )
    return value
