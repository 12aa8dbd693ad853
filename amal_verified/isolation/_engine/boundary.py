"""Module-boundary tracking: a module call on labelled data runs as plain PyTorch inside.

Tracking every aten operation through Python is expensive next to the small
operations a model runs (measurements: ``benchmarks/README.md``, "Design
measurements quoted by the code"), so module calls are tracked at their
boundary.  When a module is called (outside
any other tracked call) and its positional inputs or its own state carry
labels:

1. the *call label* S is the join of the tagged inputs' labels and the labels
   of the module's state (parameters, buffers and tensor attributes of it and
   its submodules);
2. the labelled inputs (tracked tensors, and plain tensors over labelled
   memory) are replaced by plain aliases (differentiable, so autograd stays
   connected; a gradient leaving the call passes the alias's hook before
   anything captures it at the input) and the module runs plain, nested calls
   included;
3. outputs are labelled S (tracked aliases when S holds an auxiliary source,
   plain tensors with S on their memory otherwise, see ``_dispatch``); buffers
   and inputs written during the call have S joined into their memory;
4. in backward, a hook on each output receives the gradient and its label G
   and attributes S ⊔ G to the parameters that gradient reaches inside the
   call (``_grad_labels``).  When S ⊔ G holds an auxiliary source, they are
   found exactly, by walking the autograd graph the call built from *that*
   output, and gradients leaving the call -- to its inputs, or to tensors
   created before it (closures) -- become tracked tensors labelled S ⊔ G.
   When it does not, the label is attributed to the call's protected
   parameters only (a protected parameter stays primary, see ``gate``) and
   nothing is walked: a primary-only label is never refused, so precision
   there buys nothing, and the walk and the hooks would cost every call.

A call on plain tensors whose labels are primary-only, of a module that holds no protected
parameter and no labelled state, runs plain and is not labelled: nothing it computes can reach a
refusal (auxiliary data are always tracked tensors, and a call on one is tracked), and the label
has no protected parameter to be attributed to.  Such calls are what an agent makes on a replay
batch tagged in memory only (``primary(x, follow=False)``), its critic and actor beside the gated
world model, where tracking would cost every call.

The call runs operation by operation instead (each operation tracked by
``_dispatch``, nested module calls tracked on their own) when one label cannot
describe it: inputs with different labels, rows with different labels in one
input (a concatenation of primary and auxiliary data), state with different
labels, or state that is itself tracked.  Keyword arguments are not seen by
global module hooks: tagged keyword arguments are tracked operation by
operation inside the call, which is correct, only slower.

A call on auxiliary data that would change a protected buffer (running
statistics of a gated world model) or parameter (a codebook updated in forward,
``nn.Embedding``'s ``max_norm``) is undone and refused when the call returns:
they get their old values back before the refusal is raised.

Design invariants: untagged code in a process where nothing was ever labelled
pays one attribute test per call; nothing runs while ``torch.compile`` traces
(so compiled graphs are those of plain PyTorch); a call that raises, whatever
the exception, never leaves a frame behind that a later call could mistake for
its parent.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import sys
import threading
import weakref
from types import FrameType
from typing import Any

import torch
from torch.nn.utils.rnn import PackedSequence
from torch.utils.hooks import RemovableHandle as _RemovableHandle

from amal_verified.isolation._engine import grad_labels as _grad_labels
from amal_verified.isolation._engine import label_store as store
from amal_verified.isolation._engine import protection as _protection
from amal_verified.isolation._engine.dispatch import (
    NO_DISPATCH,
    TaggedTensor,
    _TrackedOnFirstUse,
    deferred_writes,
    plain,
    track_in_place,
    tracked,
)
from amal_verified.isolation.errors import IsolationViolation, TrackingError
from amal_verified.isolation.escapes import user_call_site
from amal_verified.isolation.labels import EMPTY, Label

__all__ = ["post_hook", "pre_hook"]

_is_compiling = torch.compiler.is_compiling


class _Frame:
    """One tracked module call."""

    __slots__ = (
        "buffer_versions",
        "call_frame",
        "grad_label",
        "input_nodes",
        "input_versions",
        "label",
        "module_name",
        "origin",
        "params",
        "protected_buffers",
        "py_frame",
        "seq_start",
        "task",
    )

    def __init__(self, label: Label, module_name: str) -> None:
        self.label = label
        self.origin: str | None = None
        self.task = -1  # the backward pass in which gradients last left this call
        self.grad_label = EMPTY
        self.module_name = module_name
        self.seq_start = 0
        self.py_frame: FrameType | None = None
        self.call_frame: FrameType | None = None
        # per submodule: its buffers and their version counters when the call began
        self.buffer_versions: list[tuple[list[torch.Tensor], list[int]]] = []
        # the call's tracked inputs: (input, its version, id of the plain alias the call received,
        # sequence number of that alias's autograd node or -1).  No reference to the alias or its
        # node is kept: the node holds the input hook, which holds this frame.
        self.input_versions: list[tuple[torch.Tensor, int, int]] = []
        self.input_nodes: set[int] = set()
        # the call's protected parameters (primary-only labels are attributed to them, see above)
        self.params: tuple[torch.Tensor, ...] = ()
        # protected buffers and parameters and copies of their values, when the call could change them
        # with aux data
        self.protected_buffers: list[tuple[torch.Tensor, torch.Tensor, _protection.Protected]] = []

    def full_label(self) -> Label:
        return self.label.join(self.grad_label)


class _ByOperation:
    """One running operation-by-operation call: what its end needs if a C++ operator wrote a labelled
    value into a plain intermediate during it."""

    __slots__ = ("call_frame", "label", "params", "seq_start", "writes_start")

    def __init__(self, call_frame: FrameType, label: Label, params: list[torch.Tensor]) -> None:
        self.call_frame = call_frame
        self.label = label  # the join of its inputs' and its state's labels
        self.params = params  # its protected parameters
        self.seq_start = _current_sequence_nr() if torch.is_grad_enabled() else 0
        self.writes_start = len(deferred_writes.pending)  # its deferred writes are recorded from here


class _State(threading.local):
    def __init__(self) -> None:
        self.frame: _Frame | None = None
        # the nested call whose test of one call-scoped registry found it nested (the test of the
        # other registry follows in the same expression and consumes it)
        self.nested_caller: FrameType | None = None
        # the running operation-by-operation calls, innermost last
        self.by_operation: list[_ByOperation] = []


_state = _State()
# A sequence number below that of every autograd node this thread creates from now on.
_current_sequence_nr = torch._C._autograd._get_sequence_nr

# Submodules of each module called at top level, kept until a module is added anywhere.
_submodules: weakref.WeakKeyDictionary[torch.nn.Module, tuple[int, tuple[torch.nn.Module, ...]]] = (
    weakref.WeakKeyDictionary()
)
_structure_epoch = 0


def _module_added(*_: Any) -> None:
    global _structure_epoch
    _structure_epoch += 1


torch.nn.modules.module.register_module_module_registration_hook(_module_added)


def _modules_of(module: torch.nn.Module) -> tuple[torch.nn.Module, ...]:
    cached = _submodules.get(module)
    if cached is not None and cached[0] == _structure_epoch:
        return cached[1]
    found = tuple(module.modules())
    _submodules[module] = (_structure_epoch, found)
    return found


_ACCUMULATE_GRAD: type | None = None


def _accumulate_grad_type() -> type:
    global _ACCUMULATE_GRAD
    if _ACCUMULATE_GRAD is None:
        with torch.enable_grad():
            leaf = torch.zeros(1, requires_grad=True)
            node = leaf.sum().grad_fn
        if node is None:
            raise TrackingError("autograd recorded no node for a sum of a leaf that requires grad")
        _ACCUMULATE_GRAD = type(node.next_functions[0][0])
    return _ACCUMULATE_GRAD


def _walk(root: Any, frame: _Frame, stops: set[Any]) -> list[torch.Tensor]:
    """Parameters whose gradients flow from ``root`` inside this call; hook gradients leaving it."""
    acc_type: Any = _accumulate_grad_type()
    params: list[torch.Tensor] = []
    seen: set[Any] = set()
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node) is acc_type:
            params.append(node.variable)
            continue
        if node._sequence_nr() in stops:
            continue
        if node._sequence_nr() < frame.seq_start:
            node.register_prehook(_ExitHook(frame))
            _grad_labels.attribute_exit(int(node._sequence_nr()), frame.full_label)
            continue
        stack.extend(fn for fn, _ in node.next_functions)
    return params


_Grads = tuple[torch.Tensor | None, ...]


def _outgoing(grad: torch.Tensor, frame: _Frame) -> torch.Tensor:
    """A gradient leaving the call, labelled with the call's label and its gradients'."""
    own = store.label_of_plain(grad)
    label = own.join(frame.full_label())
    if label is own:
        return grad
    if not label.has_aux:
        store.write_label(grad, label)  # primary-only: on its memory (harmless if shared)
        return grad
    # A tracked copy: the engine may hand the same gradient tensor to several consumers.
    with NO_DISPATCH():
        copied = torch.ops.aten.clone.default(grad)
    store.write_label(copied, label, frame.origin)
    return tracked(copied)


class _ExitHook:
    """Labels gradients that leave a tracked call towards tensors created before it."""

    __slots__ = ("frame",)

    def __init__(self, frame: _Frame) -> None:
        self.frame = frame

    def __call__(self, grad_outputs: _Grads) -> _Grads | None:
        if self.frame.task != torch._C._current_graph_task_id():
            return None  # this backward pass did not go through the call: its gradients owe it nothing
        return tuple(None if g is None else _outgoing(g, self.frame) for g in grad_outputs)


class _InputHook:
    """Labels the gradient leaving the call towards one of its tracked inputs."""

    __slots__ = ("frame",)

    def __init__(self, frame: _Frame) -> None:
        self.frame = frame

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        return _outgoing(grad, self.frame)


class _OutputHook:
    """Receives the gradient arriving at one output: attributes labels, hands the call a plain gradient."""

    __slots__ = ("frame", "leaf")

    def __init__(self, frame: _Frame, leaf: torch.Tensor | None) -> None:
        self.frame = frame
        self.leaf = leaf  # an output that is itself a parameter (the call returned it)

    def __call__(self, grad: torch.Tensor) -> torch.Tensor | None:
        frame = self.frame
        frame.task = torch._C._current_graph_task_id()
        grad_label = store.label_of_plain(grad)
        origin = frame.origin
        if grad_label is not EMPTY:
            frame.grad_label = frame.grad_label.join(grad_label)
            if grad_label.has_aux and origin is None:
                origin = store.origin_of(grad)
                frame.origin = origin
        label = frame.label.join(grad_label)
        if label._aux:
            node = torch._C._current_autograd_node()
            if self.leaf is not None:
                params = [self.leaf]
            elif node is None:
                raise TrackingError(f"{frame.module_name}: no autograd node runs the gradient of its output")
            else:
                params = _walk(node, frame, _input_nodes(frame))
            for p in params:
                _grad_labels.ensure_hook(p)
            _grad_labels.attribute(params, label, origin)
        else:
            _grad_labels.attribute(frame.params if self.leaf is None else (self.leaf,), label, origin)
        if torch.is_grad_enabled():
            # create_graph: the call's backward runs operation by operation on a tracked copy
            # labelled with everything it depends on, so higher-order gradients are labelled too.
            with NO_DISPATCH():
                copied = torch.ops.aten.clone.default(grad)
            store.write_label(copied, label, origin)
            return tracked(copied)
        if isinstance(grad, TaggedTensor):
            return _handed_on(grad)
        return None


def _handed_on(grad: torch.Tensor) -> torch.Tensor:
    """The plain gradient a call's backward runs on.  Where its memory holds an auxiliary source it is
    made tracked at its first use from Python: code that captures the gradient at this output
    (``torch.autograd.grad`` with respect to it, ``retain_grad``) receives this object, and operations
    on it must carry its label; the autograd engine's own C++ code never makes that first use."""
    alias = plain(grad)
    if store.label_of_plain(alias)._aux and type(alias) is torch.Tensor:
        alias.__class__ = _TrackedOnFirstUse
    return alias


# -- the call's state ------------------------------------------------------------------------------


def _state_labels(module: torch.nn.Module, labels: set[Label], protected: list[torch.Tensor]) -> bool:
    """Collect the labels of the module's state (parameters, buffers and -- once plain memory was
    ever labelled -- tensor attributes of it and its submodules) and its protected parameters.
    Returns True if some state tensor is itself tracked."""
    tracked_state = False
    scan_attributes = store.counters.labelled_state > 0
    label_attr = store._LABEL
    protected_attr = _protection._ATTR
    parameter_type = torch.nn.Parameter
    tensor_type = torch.Tensor
    last = None
    for sub in _modules_of(module):
        tensors: Any = sub._parameters.values()
        if sub._buffers or scan_attributes:
            tensors = [*tensors, *sub._buffers.values()]
            if scan_attributes:
                tensors += [v for v in sub.__dict__.values() if isinstance(v, torch.Tensor)]
        for t in tensors:
            if t is None:
                continue
            if t.grad_fn is not None:
                # Reparametrised (torch.func.functional_call with computed weights, a differentiable
                # optimizer's parameters): gradients reach it through nodes the call did not create,
                # so only operation-by-operation tracking labels them.
                tracked_state = True
            kind = type(t)
            if kind is parameter_type or kind is tensor_type:
                try:
                    storage = t.untyped_storage()
                except (RuntimeError, NotImplementedError):
                    continue  # no memory of its own: nothing labelled, nothing protected
                if kind is parameter_type:
                    info = getattr(storage, protected_attr, None)
                    if info is not None and info.ref() is t:
                        protected.append(t)
                found = getattr(storage, label_attr, None)
                if found is None:
                    continue
                label = found if type(found) is Label else store.label_of_plain(t)
            else:
                if isinstance(t, TaggedTensor):
                    tracked_state = True
                label = store.label_of_plain(t)
            if label is EMPTY:
                continue
            untracked_aux = label._aux and not isinstance(t, TaggedTensor)
            if untracked_aux and _protection.protection_of(t) is None and track_in_place(t):
                tracked_state = True
            if label is not last:
                labels.add(label)
                last = label
    return tracked_state


def _input_labels(value: Any, found: set[Label]) -> tuple[bool, bool, bool]:
    """Collect the non-empty labels of a positional argument (one level into containers).

    Returns (holds a tracked tensor, holds memory whose rows carry different labels, holds a plain
    tensor whose memory carries a label).
    """
    if isinstance(value, torch.Tensor):
        label, mixing = store.label_and_mixing(value)
        if label is not EMPTY:
            found.add(label)
            return isinstance(value, TaggedTensor), mixing, type(value) is torch.Tensor
        return isinstance(value, TaggedTensor), False, False
    tv = type(value)
    if tv is tuple or tv is list or tv is PackedSequence:
        tagged = rows = labelled_plain = False
        for item in value:
            t, r, p = _input_labels(item, found)
            tagged, rows, labelled_plain = tagged or t, rows or r, labelled_plain or p
        return tagged, rows, labelled_plain
    return False, False, False


def _buffer_versions(module: torch.nn.Module) -> list[tuple[list[torch.Tensor], list[int]]]:
    groups = []
    for sub in _modules_of(module):
        if not sub._buffers:
            continue
        own = [b for b in sub._buffers.values() if b is not None]
        if own:
            groups.append((own, [b._version for b in own]))
    return groups


def _unwrap_input(value: Any, frame: _Frame) -> Any:
    """The argument the call runs on: a plain alias of each labelled input, hooked in backward.

    A plain input whose memory is labelled gets its own alias too: gradients leave the call through
    the alias's node, which autograd executes before it hands a gradient captured at the input
    (``torch.autograd.grad(loss(head(z)), z)``) back, and an in-place write into it is seen."""
    tv = type(value)
    if tv is torch.Tensor or isinstance(value, TaggedTensor):
        if tv is not torch.Tensor:
            alias = plain(value)
        elif store.label_of_plain(value) is EMPTY or value.layout != torch.strided:
            return value
        elif not (value.requires_grad and torch.is_grad_enabled()):
            alias = value  # no gradient leaves through it: only writes into it need seeing
        else:
            alias = value.view_as(value)  # a plain tensor: no Python dispatch to bypass
        if alias.requires_grad and torch.is_grad_enabled():
            _register_hook(alias, _InputHook(frame))
            node = alias.grad_fn
            if node is not None:
                frame.input_nodes.add(int(node._sequence_nr()))
        frame.input_versions.append((value, value._version, id(alias)))
        return alias
    if tv is tuple or tv is list:
        return tv(_unwrap_input(item, frame) for item in value)
    if tv is PackedSequence:
        return _unwrap_packed(value, frame)
    return value


def _unwrap_packed(value: PackedSequence, frame: _Frame) -> PackedSequence:
    """A packed sequence with its labelled tensors replaced by plain aliases.  Its batch sizes and
    orderings, which a recurrent module returns as it received them, are recorded as inputs too, so
    an output that is one of them keeps its own label instead of taking the call's."""
    items = []
    for item in value:
        unwrapped = _unwrap_input(item, frame)
        if unwrapped is item and isinstance(item, torch.Tensor):
            frame.input_versions.append((item, item._version, id(item)))
        items.append(unwrapped)
    return PackedSequence(*items)


def _track_plain_inputs(value: Any) -> Any:
    """For a call run operation by operation: plain tensor inputs become tracked ones (over the same
    memory, with its labels), so that operations combining them with labelled state, and operations
    on labelled memory a plain input views (rows tagged through another alias), are seen."""
    if type(value) is torch.Tensor:
        return tracked(value)
    tv = type(value)
    if tv is tuple or tv is list:
        return tv(_track_plain_inputs(item) for item in value)
    if tv is PackedSequence:
        return PackedSequence(*(_track_plain_inputs(item) for item in value))
    return value


def _is_running(target: FrameType) -> bool:
    """Whether ``target`` is on this thread's stack (the call it belongs to has not returned)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        if frame is target:
            return True
        frame = frame.f_back
    return False


class _CallScopedHooks(collections.OrderedDict[int, Any]):
    """PyTorch's registry of global forward (pre-)hooks, read as empty by module calls nested in a
    call whose hooks already ran.

    ``Module._call_impl`` takes its fast path -- no hook machinery at all -- when every hook registry
    it tests is empty.  A call nested in a tracked or plainly running call owes the hooks nothing
    (its hooks would return at once), so here it sees these registries as empty: each nested call
    then costs what it costs without the library.  Everything else sees the registry as it is:
    the calling thread's running call itself (its forward hook must run), other threads (the
    running call is thread-local), code being compiled, and any registry holding a hook that is
    not this module's (another library's global hook must see every call).  The length and the
    entries are never hidden, only truthiness.
    """

    def __bool__(self) -> bool:
        state = _state
        frame = state.frame
        if frame is None or len(self) != 1:
            return len(self) > 0
        owner = frame.py_frame
        if owner is None:
            return True
        caller = sys._getframe(1)
        if caller is owner:
            return True  # the running call's own test before its forward hooks
        if caller is state.nested_caller:
            state.nested_caller = None  # the other registry, tested in the same expression
            return False
        if _is_compiling():
            return True
        walk: FrameType | None = caller.f_back
        while walk is not None:
            if walk is owner:
                state.nested_caller = caller
                return False
            walk = walk.f_back
        return True  # a frame left behind by a call that raised: pre_hook clears it


def install_scoped_registries() -> None:
    """Make PyTorch's global forward (pre-)hook registries call-scoped (before registering the
    hooks of this module in them).  A registry that already holds hooks is left as it is: the
    handles that could remove them refer to it."""
    registries = torch.nn.modules.module
    names = ("_global_forward_pre_hooks", "_global_forward_hooks")
    # Both or neither: a nested call's test of one is consumed by its test of the other.
    if all(type(getattr(registries, name)) is collections.OrderedDict for name in names) and not any(
        getattr(registries, name) for name in names
    ):
        for name in names:
            setattr(registries, name, _CallScopedHooks())


def pre_hook(module: torch.nn.Module, args: tuple[Any, ...]) -> Any:
    if _is_compiling():
        return None
    state = _state
    if state.frame is not None:
        if state.frame.py_frame is not None and _is_running(state.frame.py_frame):
            return None  # inside a plainly-running call
        state.frame = None  # left behind by a call that raised a BaseException
    if not store.counters.tagged:
        return None
    if torch._C._functorch.maybe_current_level() is not None:
        return None  # inside torch.func transforms the call runs operation by operation (tracked)
    labels: set[Label] = set()
    tagged = rows = labelled_plain = False
    for arg in args:
        t, r, p = _input_labels(arg, labels)
        tagged, rows, labelled_plain = tagged or t, rows or r, labelled_plain or p
    input_labels = len(labels)
    state_labels: set[Label] = set()
    params: list[torch.Tensor] = []
    tracked_state = _state_labels(module, state_labels, params)
    labels |= state_labels
    if not tagged and (
        not labels or not (state_labels or params or tracked_state or any(label._aux for label in labels))
    ):
        # Nothing labelled in the inputs or anywhere in the module's state -- or primary-only labels on
        # plain inputs' memory alone, and no protected parameter to attribute them to: a plain call, and
        # so are the calls nested in it (one that receives a tracked value computed inside still runs
        # operation by operation, tracked).
        frame = _Frame(EMPTY, "")
        frame.py_frame = sys._getframe(1)
        frame.call_frame = frame.py_frame.f_back
        state.frame = frame
        return None
    if not labels:
        return None
    if tracked_state or rows or input_labels > 1 or len(state_labels) > 1:
        # One label cannot describe this call: run it operation by operation, with every plain input
        # tracked where labels could meet it (labelled state, or labelled memory the input views).
        _begin_by_operation(state, labels, params)
        if state_labels or labelled_plain:
            return tuple(_track_plain_inputs(arg) for arg in args)
        return None
    label = next(iter(labels)) if len(labels) == 1 else Label.join_all(labels)
    frame = _Frame(label, type(module).__name__)
    if params:
        frame.params = tuple(params)
    if label._aux:
        frame.origin = f"{frame.module_name} called on data labelled {label!r} at {user_call_site(2)}"
        frame.protected_buffers = _snapshot_protected_state(module, params)
    if torch.is_grad_enabled():
        frame.seq_start = _current_sequence_nr()
    frame.buffer_versions = _buffer_versions(module)
    new_args = tuple(_unwrap_input(arg, frame) for arg in args) if tagged or labelled_plain else None
    frame.py_frame = sys._getframe(1)
    frame.call_frame = frame.py_frame.f_back
    state.frame = frame
    return new_args


def _snapshot_protected_state(
    module: torch.nn.Module, params: list[torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor, _protection.Protected]]:
    """Copies of the protected buffers and parameters a call on auxiliary data could change (running
    statistics; a codebook updated in forward, ``nn.Embedding``'s ``max_norm``): compared when it
    returns, and put back before a refusal."""
    saved = []
    with NO_DISPATCH(), torch.no_grad():
        for b in module.buffers():
            info = _protection.protection_of(b)
            if info is not None:
                saved.append((b, b.clone(), info))
        for p in params:
            info = _protection.protection_of(p)
            if info is not None:
                saved.append((p, p.detach().clone(), info))
    return saved


def post_hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    if _is_compiling():
        return None
    state = _state
    frame = state.frame
    if frame is None:
        if state.by_operation:
            return _end_by_operation(state, module, output)
        return None
    caller = sys._getframe(1)
    if caller is not frame.py_frame and caller is not frame.call_frame:
        return None  # a nested call's hook
    state.frame = None
    state.nested_caller = None
    # The Python frames hold the call's locals (its output among them): keeping them would make a
    # reference cycle through the output's autograd graph and keep the graph alive until collected.
    frame.py_frame = frame.call_frame = None
    if frame.label is EMPTY:
        return None  # an untracked call
    if frame.protected_buffers:
        _refuse_protected_buffer_changes(frame)
    for group, versions in frame.buffer_versions:
        # Some kernels (native_batch_norm) update buffers without bumping their version
        # counter; a submodule whose state changed at all has all its state depend on S.
        if any(b._version != v for b, v in zip(group, versions, strict=True)):
            for b in group:
                store.write_label(b, frame.label, frame.origin)
            store.counters.labelled_state += 1
    for tensor, version, _ in frame.input_versions:
        if tensor._version != version:
            store.write_label(tensor, frame.label, frame.origin)
            store.counters.labelled_state += 1
    try:
        if output is None:
            return None
        if type(output) is torch.Tensor:
            return _tag_output(output, frame)
        return _map_output(output, lambda t: _tag_output(t, frame), module)
    finally:
        # What backward needs stays (label, protected parameters, input node numbers); tensors the
        # call held go, so the frame -- which hooks on autograd nodes keep -- pins no graph.
        frame.input_versions = []
        frame.buffer_versions = []
        frame.protected_buffers = []


def _begin_by_operation(state: _State, labels: set[Label], params: list[torch.Tensor]) -> None:
    """An operation-by-operation call begins: writes deferred during it are its own
    (:data:`~amal_verified.isolation._engine.dispatch.deferred_writes`)."""
    calls = state.by_operation
    while calls and not _is_running(calls[-1].call_frame):
        del deferred_writes.pending[calls.pop().writes_start :]  # left by a call that raised
    calls.append(_ByOperation(sys._getframe(2), Label.join_all(labels), params))
    deferred_writes.calls = len(calls)


def _end_by_operation(state: _State, module: torch.nn.Module, output: Any) -> Any:
    """An operation-by-operation call returns.  If a C++ operator wrote a labelled value into a plain
    intermediate during it, what C++ computed from that intermediate -- outputs, and values saved for
    backward -- is unlabelled: the call is then labelled as one, like a call tracked at its boundary,
    with the join of its inputs, its state and what was written (its outputs take it, and in backward
    the gradients reaching its parameters or leaving it)."""
    call = state.by_operation[-1]
    if sys._getframe(2) is not call.call_frame:
        return None  # a nested call's hook
    state.by_operation.pop()
    deferred_writes.calls = len(state.by_operation)
    written = deferred_writes.since(call.writes_start)
    if written is EMPTY or output is None:
        return None
    frame = _Frame(call.label.join(written), type(module).__name__)
    frame.params = tuple(call.params)
    frame.seq_start = call.seq_start
    if frame.label._aux:
        frame.origin = f"{frame.module_name} called on data labelled {frame.label!r} at {user_call_site(2)}"
    return _map_output(output, lambda t: _tag_output(t, frame), module)


def _refuse_protected_buffer_changes(frame: _Frame) -> None:
    changed = []
    for buffer, before, info in frame.protected_buffers:
        with NO_DISPATCH():
            same = buffer.shape == before.shape and bool(
                torch.equal(buffer, before) or (buffer.is_floating_point() and _nan_equal(buffer, before))
            )
        if not same:
            changed.append(info)
    if not changed:
        return
    with NO_DISPATCH(), torch.no_grad():
        for buffer, before, _ in frame.protected_buffers:
            if buffer.shape == before.shape:
                buffer.detach().copy_(before)
    sources = tuple(sorted(frame.label.aux_sources))
    names = ", ".join(f"{info.kind} {info.name}" for info in changed)
    raise IsolationViolation(
        f"refused {frame.module_name} call: it was called on data from {', '.join(map(str, sources))} and "
        f"would change {len(changed)} protected value(s): {names} (protected by {changed[0].owner}). "
        f"They were restored; nothing was changed. Call the world model on auxiliary data only in "
        f"evaluation mode (module.eval()) and without writing its parameters, or on a copy of it.",
        parameters=tuple(info.name for info in changed),
        sources=sources,
        operation=frame.origin,
    )


def _nan_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.equal(torch.nan_to_num(a, nan=0.0), torch.nan_to_num(b, nan=0.0))) and bool(
        torch.equal(torch.isnan(a), torch.isnan(b))
    )


def _tag_output(t: torch.Tensor, frame: _Frame) -> torch.Tensor:
    for given, _, alias_id in frame.input_versions:
        if id(t) == alias_id:  # the alias is alive for the whole call, so its id is not reused
            return given  # an input returned as it is (Identity, Dropout(0)): the caller's own tensor
    if isinstance(t, TaggedTensor):
        # Produced operation by operation inside the call (a tagged closure or keyword argument):
        # what it depends on through the call's plain inputs is the call's label, which only the
        # output's hook attributes in backward.
        store.write_label(t, frame.label, frame.origin)
        if t.requires_grad:
            tagged_leaf = t if t.grad_fn is None else None
            if tagged_leaf is not None:
                _grad_labels.ensure_hook(tagged_leaf)
            _register_hook(t, _OutputHook(frame, tagged_leaf))
        return t
    storage = store._storage(t)
    if storage is not None and getattr(storage, store._LABEL, None) is None and store._covers(t, storage):
        label = frame.label  # fresh memory, the whole of it (what write_label does, in fewer calls)
        store.label_new_memory(storage, label, frame.origin)
    else:
        existing = store.label_of_plain(t)
        label = existing if existing is not EMPTY else frame.label  # an input passed through keeps its label
        label = store.write_label(t, label, frame.origin)
    if not t.requires_grad:
        return torch.Tensor._make_subclass(TaggedTensor, t) if label._aux else t
    out: torch.Tensor = t.as_subclass(TaggedTensor) if label._aux else t
    leaf = t if t.grad_fn is None else None
    if leaf is not None:
        _grad_labels.ensure_hook(leaf)
    _register_hook(t, _OutputHook(frame, leaf))
    return out


def _register_hook(t: torch.Tensor, hook: Any) -> None:
    """``t.register_hook(hook)``, without the handle (nothing removes these hooks).

    For a plain tensor, the steps ``Tensor.register_hook`` takes (the hook dictionary, its
    registration with the autograd node, a key from the handles' counter), without its checks: the
    caller only hooks tensors that require grad and have no ``__torch_function__``.
    """
    if type(t) is not torch.Tensor:
        t.register_hook(hook)
        return
    hooks = t._backward_hooks
    if hooks is None:
        hooks = collections.OrderedDict()
        t._backward_hooks = hooks
        grad_fn = t.grad_fn
        if grad_fn is not None:
            grad_fn._register_hook_dict(t)
    key = _RemovableHandle.next_id
    _RemovableHandle.next_id = key + 1
    hooks[key] = hook


def _input_nodes(frame: _Frame) -> set[int]:
    """Sequence numbers of the autograd nodes of the call's plain input aliases: the walk stops there."""
    return frame.input_nodes


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
