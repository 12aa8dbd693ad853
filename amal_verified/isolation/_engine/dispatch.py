"""Tracked tensors and the per-operation label rule.

A :class:`TaggedTensor` is an ordinary tensor (its own memory, no wrapped
inner tensor) whose Python type routes every aten operation -- forward or
backward, out-of-place or in-place, through views -- to :func:`_dispatch`,
which runs the operation unchanged (with Python dispatch switched off, so the
arithmetic is exactly PyTorch's) and then:

- labels fresh outputs with the join of the inputs' labels (operations whose
  output does not depend on input *values*, such as ``ones_like``, give
  unlabelled outputs; ``torch.cat``/``torch.stack`` along the outermost
  dimension keep each input's rows apart, see ``_label_store``);
- for in-place and ``out=`` writes, joins the written label into the target's
  memory (a write that overwrites the target replaces its label there), after
  refusing, before anything is written, auxiliary data that would reach
  protected memory (see ``_protection``);
- records an escape when a value leaves as a Python scalar (``escaping``).

Design invariants:

- Auxiliary provenance is exact (to the granularity of ``_label_store``): a
  value whose label holds an auxiliary source is always reached through a
  tracked object, so every operation on it is seen.  Fresh outputs with such a
  label are tracked; memory that gains one through a plain object (an
  accumulator, a view of a plain buffer, a parameter stepped with auxiliary
  gradients) is made tracked in place, object and view base alike
  (:func:`track_in_place`).
- Primary provenance is kept on memory: a fresh output whose label is
  primary-only is a *plain* tensor with its label on its memory, which module
  calls, gradients and the gate read.  Operations on plain tensors only are
  not seen, so a value computed from it by them carries no label -- which
  never changes a decision, since a label without an auxiliary source is
  never refused.  This keeps tracking off the policy's and critic's
  arithmetic on primary data, where it would cost a Python call per operation.
- Views of tracked tensors are tracked, and so are outputs that do not depend
  on their inputs' values (``new_zeros``): both are typically written into
  next.  Inside a backward node every output stays tracked, because autograd
  fills fresh buffers in place and then slices them.
- Nothing here raises a bare ``AssertionError``: an internal inconsistency is a
  :class:`~amal_verified.isolation.errors.TrackingError` naming the operation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

import torch

from amal_verified.isolation._engine import label_store as store
from amal_verified.isolation._engine import protection as _protection
from amal_verified.isolation._engine.origins import describe
from amal_verified.isolation.errors import IsolationViolation, TrackingError
from amal_verified.isolation.escapes import record_escape, user_call_site
from amal_verified.isolation.labels import EMPTY, Label

__all__ = [
    "TaggedTensor",
    "label_of",
    "plain",
    "track_in_place",
    "tracked",
]

aten = torch.ops.aten
NO_DISPATCH: Final = torch._C._DisableTorchDispatch

# Operations whose output values do not depend on the input's values (only on
# its shape, dtype and device).  The autograd engine seeds backward with
# ``ones_like(loss)``; labelling it would taint every gradient with every label in the loss.
_NEUTRAL_PACKETS = frozenset(
    {
        aten.ones_like,
        aten.zeros_like,
        aten.empty_like,
        aten.full_like,
        aten.rand_like,
        aten.randn_like,
        aten.randint_like,
        aten.new_empty,
        aten.new_zeros,
        aten.new_ones,
        aten.new_full,
        aten.new_empty_strided,
        aten.empty_strided,
    }
)

# Operations that return metadata (shapes, strides, layout facts), not data.
_METADATA_PACKETS = frozenset(
    {
        aten.sym_size,
        aten.sym_stride,
        aten.sym_numel,
        aten.sym_storage_offset,
        aten.size,
        aten.stride,
        aten.dim,
        aten.numel,
        aten.is_same_size,
        aten.is_contiguous,
        aten.is_non_overlapping_and_dense,
        aten._has_compatible_shallow_copy_type,
        aten.is_pinned,
        aten.is_complex,
        aten.is_floating_point,
        aten.is_set_to,
    }
)

# In-place operations whose result does not depend on the written tensor's old contents.
_OVERWRITE_PACKETS = frozenset(
    {
        aten.zero_,
        aten.fill_,
        aten.copy_,
        aten.normal_,
        aten.uniform_,
        aten.bernoulli_,
        aten.exponential_,
        aten.geometric_,
        aten.cauchy_,
        aten.log_normal_,
        aten.random_,
        aten.set_,
        aten._foreach_zero_,
        aten._foreach_copy_,
    }
)

# Concatenations whose rows keep their inputs' labels (``_label_store.Rows``).
_ROW_PACKETS = frozenset({aten.cat, aten.stack})
# Element-wise copies, whose output keeps its input's row labels when both fill their memory.
_COPY_PACKETS = frozenset({aten.clone, aten._to_copy})

_ESCAPE_KINDS = {
    aten._local_scalar_dense: ".item() / float() / int() / bool()",
    aten.is_nonzero: "bool()",
    aten.equal: "torch.equal()",
    aten.allclose: "torch.allclose()",
}


class OpInfo:
    """What the dispatcher needs to know about one aten overload, computed once from its schema."""

    __slots__ = (
        "call",
        "copies",
        "escape_kind",
        "is_foreach",
        "is_view",
        "metadata",
        "name",
        "neutral",
        "return_aliases",
        "rows",
        "written",
    )

    def __init__(self, func: torch._ops.OpOverload) -> None:
        schema = func._schema
        packet = func.overloadpacket
        # The C++ operator itself (what OpOverload.__call__ calls, without its Python frame).
        self.call: Callable[..., Any] = func._op if type(func) is torch._ops.OpOverload else func
        # Named by its own namespace: a user's torch.library operator is not an aten one.
        self.name = f"{getattr(func, 'namespace', 'aten')}.{packet.__name__}"
        self.neutral = packet in _NEUTRAL_PACKETS
        self.metadata = packet in _METADATA_PACKETS
        self.rows = packet in _ROW_PACKETS
        self.copies = packet in _COPY_PACKETS
        self.is_foreach = packet.__name__.startswith(("_foreach_", "_amp_foreach_", "_fused_"))
        self.escape_kind = _ESCAPE_KINDS.get(packet, f"{self.name} (returns a Python value)")
        overwrite_all = packet in _OVERWRITE_PACKETS
        written: list[tuple[int, str, bool]] = []  # (position, name, overwrites)
        for i, arg in enumerate(schema.arguments):
            if arg.alias_info is not None and arg.alias_info.is_write:
                written.append((i, arg.name, overwrite_all or arg.is_out))
        if packet in (aten.native_batch_norm, aten._native_batch_norm_legit):
            # Updates running_mean / running_var in training mode without declaring it.
            names = [a.name for a in schema.arguments]
            for name in ("running_mean", "running_var"):
                if name in names and all(w[1] != name for w in written):
                    written.append((names.index(name), name, False))
        self.written: tuple[tuple[int, str, bool], ...] = tuple(written)
        # For each return: the written argument it aliases (in-place / out=), or None if fresh.
        by_alias_set = {
            frozenset(arg.alias_info.before_set): index
            for index, arg in enumerate(schema.arguments)
            if arg.alias_info is not None and arg.alias_info.is_write
        }
        self.return_aliases: tuple[int | None, ...] = tuple(
            by_alias_set.get(frozenset(r.alias_info.before_set)) if r.alias_info is not None else None
            for r in schema.returns
        )
        self.is_view = not written and any(
            r.alias_info is not None and not r.alias_info.is_write for r in schema.returns
        )


_op_infos: dict[torch._ops.OpOverload, OpInfo] = {}


def op_info(func: torch._ops.OpOverload) -> OpInfo:
    info = _op_infos.get(func)
    if info is None:
        info = OpInfo(func)
        _op_infos[func] = info
    return info


class TaggedTensor(torch.Tensor):
    """A tensor whose data provenance is tracked (the run-time class of all tagged data).

    Its label lives with its memory (``_label_store``), so ``label`` is the
    current label, also after in-place writes through other aliases.
    """

    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    @classmethod
    def __torch_dispatch__(  # type: ignore[override]
        cls,
        func: torch._ops.OpOverload,
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        return _dispatch(func, args, kwargs or {})

    @property
    def label(self) -> Label:
        """The sources this tensor's values depend on."""
        return store.label_of_plain(self)

    @property
    def elem(self) -> torch.Tensor:
        """A plain (untracked) tensor over the same memory, without autograd history."""
        with NO_DISPATCH():
            return self.detach()

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        label = self.label
        kind = "AuxData" if label.has_aux else "PrimaryData" if label.sources else "TaggedTensor"
        return f"{kind}({self.elem!r}, label={label!r})"

    def __format__(self, format_spec: str) -> str:
        if self.dim() == 0:
            return format(self.item(), format_spec)  # .item() records the escape
        return format(self.elem, format_spec)

    def tolist(self) -> Any:
        record_escape(".tolist()", self.label)
        return self.elem.tolist()

    def numpy(self, *, force: bool = False) -> Any:
        record_escape(".numpy()", self.label)
        return self.elem.numpy(force=force)

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        record_escape("DLPack export (torch.from_dlpack, __dlpack__)", self.label)
        return super().__dlpack__(*args, **kwargs)

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        record_escape("numpy.asarray()", self.label)
        arr = self.elem.numpy()
        return arr if dtype is None else arr.astype(dtype)

    # ``__reduce_ex__`` (pickling with labels) is given by ``transfer.install``.

    def __deepcopy__(self, memo: dict[int, Any]) -> torch.Tensor:
        if id(self) in memo:
            return memo[id(self)]  # type: ignore[no-any-return]
        if getattr(_copying, "unlabelled", False):
            out = untracked_copy(self)
            if self.is_leaf and self.requires_grad:
                out.requires_grad_(True)
            memo[id(self)] = out
            return out
        with torch.no_grad():
            out = self.clone()  # labelled by dispatch
        if self.is_leaf and self.requires_grad:
            out.requires_grad_(True)
        memo[id(self)] = out
        return out


# ---------------------------------------------------------------------------
# Labels of arbitrary values


def label_of(t: torch.Tensor) -> Label:
    """The data sources ``t``'s values depend on (empty for data never derived from tagged data)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"label_of expects a tensor, got {type(t).__name__}")
    return store.label_of_plain(t)


def _label_of_args(values: Sequence[Any] | Any) -> Label:
    label = EMPTY
    for a in values:
        if isinstance(a, torch.Tensor):
            found = store.label_of_plain(a)
            if found is not EMPTY:
                label = label.join(found)
        elif type(a) is list or type(a) is tuple:
            for x in a:
                if isinstance(x, torch.Tensor):
                    found = store.label_of_plain(x)
                    if found is not EMPTY:
                        label = label.join(found)
    return label


def _label_of_parts(parts: Sequence[Any]) -> tuple[Label, bool]:
    """The join of the tensors' labels in a list of operands, and whether two of them differ."""
    label = first = None
    mixed = False
    for x in parts:
        if isinstance(x, torch.Tensor):
            found = store.label_of_plain(x)
            if first is None:
                label = first = found
            elif found is not first:
                mixed = True
                label = label.join(found)  # type: ignore[union-attr]
    return (EMPTY if label is None else label), mixed


def plain(t: torch.Tensor) -> torch.Tensor:
    """A plain alias of ``t`` (differentiable when grad mode is on and ``t`` requires grad)."""
    if type(t) is torch.Tensor:
        return t
    with NO_DISPATCH():
        if t.layout != torch.strided:
            return t.detach()
        alias: torch.Tensor = aten.alias.default(t)
        return alias


def untracked_copy(t: torch.Tensor) -> torch.Tensor:
    """A plain, unlabelled copy of ``t``'s values (no autograd history; nothing recorded)."""
    with NO_DISPATCH(), torch.no_grad():
        return t.detach().clone()


_copying = threading.local()


class unlabelled_deep_copies:
    """Inside this block, ``copy.deepcopy`` gives tracked tensors as plain, unlabelled copies."""

    def __enter__(self) -> None:
        self._previous = getattr(_copying, "unlabelled", False)
        _copying.unlabelled = True

    def __exit__(self, *exc: object) -> None:
        _copying.unlabelled = self._previous


def tracked(t: torch.Tensor, label: Label = EMPTY, origin: str | None = None) -> torch.Tensor:
    """``t`` as a tracked tensor (a differentiable alias when ``t`` has autograd history).

    ``label`` is joined into its memory first.
    """
    if label is not EMPTY:
        store.write_label(t, label, origin)
    if isinstance(t, TaggedTensor):
        return t
    if t.requires_grad:
        return t.as_subclass(TaggedTensor)
    return torch.Tensor._make_subclass(TaggedTensor, t)


# ---------------------------------------------------------------------------
# Making memory that gained an auxiliary label through a plain object tracked


_swap_guard = threading.local()
SWAP_SENSITIVE: Final[list[Any]] = []
"""Weak-keyed registries that may hold a tensor about to be swapped (weak references block the swap)."""


def track_in_place(t: torch.Tensor) -> bool:
    """Turn the plain tensor object ``t`` into a tracked one, keeping its identity.

    Used when memory reached through a plain object (a parameter updated from
    auxiliary gradients, an accumulator or a buffer written with auxiliary
    data) gains an auxiliary label, so that operations on that object alone
    are tracked from then on.  A leaf that requires grad is swapped with
    :func:`torch.utils.swap_tensors` (``.grad`` and gradient hooks move with
    it); any other tensor has its ``TensorImpl`` replaced by a tracked alias
    of the same memory (with autograd history, if it had any).  Returns False,
    and changes nothing, when PyTorch cannot swap the object (a parameter
    referenced by a live autograd graph, a functorch wrapper); the label
    stays on the memory, where module calls and the gate read it.
    """
    if type(t) is _TrackedOnFirstUse:
        plain_class: type = torch.Tensor
        t.__class__ = plain_class
    if type(t) is not torch.Tensor and type(t) is not torch.nn.Parameter:
        return isinstance(t, TaggedTensor)
    if getattr(_swap_guard, "active", False) or torch._C._functorch.is_functorch_wrapped_tensor(t):
        return False
    if t.layout != torch.strided:
        return False
    _swap_guard.active = True
    try:
        if t.is_leaf and t.requires_grad:
            return _swap_leaf(t)
        replacement = t.as_subclass(TaggedTensor) if t.requires_grad else _make_tracked_alias(t)
        if type(t) is torch.nn.Parameter:
            replacement.__class__ = _TrackedParameter
        _swap_objects(t, replacement)
        return True
    except RuntimeError:
        return False
    finally:
        _swap_guard.active = False


def _make_tracked_alias(t: torch.Tensor) -> torch.Tensor:
    with NO_DISPATCH():
        alias = t.detach()
    return torch.Tensor._make_subclass(TaggedTensor, alias)


def _swap_objects(t: torch.Tensor, replacement: torch.Tensor) -> None:
    """Give the Python object ``t`` the ``TensorImpl`` and class of ``replacement``; the old
    ``TensorImpl`` goes to ``replacement``, which forwards every operation to ``t``."""
    t.__class__ = replacement.__class__
    torch._C._swap_tensor_impl(t, replacement)
    _supersede(replacement, t)


class _Superseded(torch.Tensor):
    """The Python object PyTorch hands out for a ``TensorImpl`` that was replaced by a tracked one.

    A tensor made tracked in the middle of an in-place or ``out=`` operation is returned by that
    operation as the object of its *old* ``TensorImpl`` (PyTorch's binding captured it before the
    call).  Same memory, same shape; every torch function called on it runs on the tracked tensor
    instead, so ``y = x.add_(aux)`` is tracked like ``x``.
    """

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Sequence[type], args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        def current(value: Any) -> Any:
            if isinstance(value, _Superseded):
                return value.__dict__.get("_amal_current", value)
            if type(value) is list or type(value) is tuple:
                return type(value)(current(v) for v in value)
            return value

        with torch._C.DisableTorchFunctionSubclass():
            return func(*current(list(args)), **{k: current(v) for k, v in (kwargs or {}).items()})


class _TrackedOnFirstUse(torch.Tensor):
    """A plain tensor object whose memory gained an auxiliary label as the target of an operation
    that may still hold its ``TensorImpl``: made tracked (:func:`track_in_place`) at its first use
    from Python, when no operation holds it any more.

    A composite ``out=`` operation can change its target's sizes and strides after the write that
    labelled it (``torch.svd`` transposes ``V`` back in place); had the object's ``TensorImpl`` been
    replaced by a tracked alias at the write, the caller's object would keep the metadata of that
    moment.  Every torch function called on it, ``isinstance(x, AuxData)``, pickling and copying
    first make it tracked; until then the label is on its memory, where module calls and the gate
    read it.
    """

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Sequence[type], args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if (
            func in _METADATA
            or func in _ATTRIBUTE_SETTERS
            or torch._C._dispatch_tls_is_dispatch_key_excluded(_PYTHON_KEY)
        ):
            # What the core reads while an operation runs (it may run on this very tensor), and
            # attribute setters: autograd resets a tensor's hooks through ``_backward_hooks``'s
            # setter while it holds the tensor's autograd lock, which tracking it would take again.
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        _track_pending(args)
        _track_pending(kwargs.values())
        return func(*args, **kwargs)

    def __reduce_ex__(self, protocol: Any) -> Any:
        track_in_place(self)
        return self.__reduce_ex__(protocol)

    def __deepcopy__(self, memo: dict[int, Any]) -> torch.Tensor:
        track_in_place(self)
        return self.__deepcopy__(memo)

    def __coerce_same_metadata_as_tangent__(
        self, expected_metadata: Any, expected_type: type | None = None
    ) -> torch.Tensor | None:
        """The plain gradient a compiled backward was traced with.  Compiled code, like the autograd
        engine's C++ code, makes no first use of it from Python: the module call it belongs to was
        labelled at its boundary, and its gradients are labelled there."""
        if expected_type is not None and expected_type is not torch.Tensor:
            return None
        return plain(self)


_PYTHON_KEY: Final = torch._C.DispatchKey.Python
_ATTRIBUTE_SETTERS: Final = frozenset(
    descriptor.__set__
    for descriptor in vars(torch._C.TensorBase).values()
    if type(descriptor).__name__ == "getset_descriptor"
)
_METADATA: Final = frozenset(
    {
        torch.Tensor.untyped_storage,
        torch.Tensor.storage_offset,
        torch.Tensor.stride,
        torch.Tensor.size,
        torch.Tensor.dim,
        torch.Tensor.numel,
        torch.Tensor.element_size,
        torch.Tensor.is_contiguous,
        torch.Tensor.is_floating_point,
        torch.Tensor.data_ptr,
        *(
            getattr(torch.Tensor, name).__get__
            for name in (
                "_base",
                "_version",
                "shape",
                "dtype",
                "device",
                "layout",
                "nbytes",
                "is_leaf",
                "requires_grad",
                "grad_fn",
                "is_meta",
                "is_sparse",
            )
        ),
    }
)


def _track_pending(values: Any) -> None:
    for value in values:
        if type(value) is _TrackedOnFirstUse:
            track_in_place(value)
        elif type(value) is list or type(value) is tuple:
            _track_pending(value)


class _DeferredWrites(threading.local):
    """The labels written into plain tensors an operation may still hold
    (:func:`track_after_operation`'s deferred case) while operation-by-operation module calls run
    (``calls`` of them), one entry per write.

    A composite operator implemented in C++ (``rnn_tanh_cell``) may add a tracked value into an
    intermediate it created, which is then plain memory with a label, and go on computing from it in
    C++, where no operation reaches Python: its result, and what it saved for backward, are plain and
    unlabelled.  Whether such a write was followed by C++ computation cannot be seen from here, so the
    module call reads every one (``boundary``)."""

    def __init__(self) -> None:
        self.calls = 0
        self.pending: list[Label] = []

    def since(self, start: int) -> Label:
        """The join of the labels written since entry ``start``; those entries are dropped."""
        written = Label.join_all(self.pending[start:])
        del self.pending[start:]
        return written


deferred_writes: Final = _DeferredWrites()


def track_after_operation(t: torch.Tensor) -> None:
    """:func:`track_in_place` for the target of a running operation: a plain, non-leaf dense tensor
    is made tracked at its first use (:class:`_TrackedOnFirstUse`), anything else now.

    Inside a backward pass it is made tracked now where it can be: a gradient edited in place by a
    custom ``autograd.Function``'s backward or a tensor hook goes back to the autograd engine, whose
    C++ code uses it with no first use from Python, so its label would not follow it."""
    if (
        (type(t) is torch.Tensor or type(t) is _TrackedOnFirstUse)  # the latter: written again, still pending
        and t.layout == torch.strided
        and not (t.is_leaf and t.requires_grad)
        and not torch._C._functorch.is_functorch_wrapped_tensor(t)
    ):
        if torch._C._current_graph_task_id() != -1 and track_in_place(t):
            return
        t.__class__ = _TrackedOnFirstUse
        if deferred_writes.calls:
            deferred_writes.pending.append(store.label_of_plain(t))
        return
    track_in_place(t)


def _supersede(old: torch.Tensor, current: torch.Tensor) -> None:
    old.__class__ = _Superseded
    old.__dict__["_amal_current"] = current


def _swap_leaf(t: torch.Tensor) -> bool:
    is_param = type(t) is torch.nn.Parameter
    grad = t.grad
    hooks = t._backward_hooks
    post_hooks = getattr(t, "_post_accumulate_grad_hooks", None)
    replacement = torch.Tensor._make_subclass(
        _TrackedParameter if is_param else TaggedTensor, t.detach(), True
    )
    held = [(registry, registry.pop(t)) for registry in SWAP_SENSITIVE if t in registry]
    try:
        torch.utils.swap_tensors(t, replacement)
    except RuntimeError:
        return False
    finally:
        for registry, value in held:
            registry[t] = value
    t.__dict__.update(replacement.__dict__)
    replacement.__dict__.clear()
    _supersede(replacement, t)
    if grad is not None:
        t.grad = grad
    if hooks:
        for hook in hooks.values():
            t.register_hook(hook)
    if post_hooks:
        for hook in post_hooks.values():
            t.register_post_accumulate_grad_hook(hook)
    return True


class _TrackedParameter(TaggedTensor):
    """The class a parameter takes when tracked in place: still an ``nn.Parameter`` to PyTorch.

    Its copies are parameters too: ``copy.deepcopy`` gives a ``_TrackedParameter`` with the same
    values, labels and ``requires_grad`` (a plain ``nn.Parameter`` for the audit's unlabelled
    copies), and pickling (``pickle``, ``torch.save``, ``multiprocessing``) rebuilds one
    (``__reduce_ex__``, given by ``transfer.install``).
    """

    _is_param = True

    def __deepcopy__(self, memo: dict[int, Any]) -> torch.Tensor:
        if id(self) in memo:
            return memo[id(self)]  # type: ignore[no-any-return]
        out = super().__deepcopy__(memo)
        if isinstance(out, TaggedTensor):
            out.__class__ = _TrackedParameter
        else:
            out = torch.nn.Parameter(out, self.requires_grad)
        memo[id(self)] = out
        return out


def as_tracked_parameter(t: torch.Tensor) -> torch.Tensor:
    """The tracked tensor ``t`` made a parameter in place (its class becomes ``_TrackedParameter``)."""
    if type(t) is not TaggedTensor:
        raise TypeError(f"amal_verified: expected a tracked tensor, got {type(t).__name__}")
    t.__class__ = _TrackedParameter
    return t


# ---------------------------------------------------------------------------
# The per-operation rule


def _dispatch(func: torch._ops.OpOverload, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    info = _op_infos.get(func)
    if info is None:
        info = op_info(func)
    if info.is_view:  # the label is the memory's, which the view shares
        with NO_DISPATCH():
            out = info.call(*args, **kwargs)
        return _wrap_view(out)
    if info.metadata:
        with NO_DISPATCH():
            return info.call(*args, **kwargs)
    if info.neutral:
        with NO_DISPATCH():
            out = info.call(*args, **kwargs)
        return _wrap_neutral(out)
    mixed = True  # whether the inputs of a concatenation may carry different labels
    if info.rows and args and type(args[0]) in (list, tuple):
        # cat / stack (Tensor[] tensors, int dim): the list holds every positional tensor
        label, mixed = _label_of_parts(args[0])
    else:
        label = _label_of_args(args)
    if kwargs:
        label = label.join(_label_of_args(kwargs.values()))
    origin = _origin(info, args, kwargs) if label._aux else None
    if info.written:
        return _dispatch_write(func, info, args, kwargs, label, origin)

    with NO_DISPATCH():
        out = info.call(*args, **kwargs)
    if info.is_foreach:
        return _wrap_foreach(out, args, kwargs, origin)
    if type(out) is torch.Tensor and label is not EMPTY:
        if info.rows and mixed:
            return _wrap_rows(out, args, kwargs, label, origin)
        if info.copies and _copy_rows(args[0], out):
            return torch.Tensor._make_subclass(TaggedTensor, out) if label._aux else out
        return _wrap_plain_fresh(out, label, origin)
    if isinstance(out, torch.Tensor):
        return _wrap_fresh(out, label, origin)
    if type(out) is tuple or type(out) is list:
        return type(out)(_wrap_fresh(o, label, origin) if isinstance(o, torch.Tensor) else o for o in out)
    if out is not None:
        record_escape(info.escape_kind, label)
    return out


def _wrap_plain_fresh(out: torch.Tensor, label: Label, origin: str | None) -> torch.Tensor:
    """:func:`_wrap_fresh` of a plain tensor and a non-empty label."""
    try:
        storage = out.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return _wrap_fresh(out, label, origin)  # type: ignore[no-any-return]
    if getattr(storage, store._LABEL, None) is None:  # fresh memory: the whole of it
        store.label_new_memory(storage, label, origin)
    else:
        label = store.write_label(out, label, origin)
    if label._aux or torch._C._current_autograd_node() is not None:
        return torch.Tensor._make_subclass(TaggedTensor, out)
    return out


def _wrap_fresh(out: Any, label: Label, origin: str | None) -> Any:
    """A fresh output: labelled and tracked, or plain when it carries no label."""
    if not isinstance(out, torch.Tensor):
        if type(out) is tuple or type(out) is list:
            return type(out)(_wrap_fresh(o, label, origin) for o in out)
        return out
    if isinstance(out, TaggedTensor):
        # The operation returned its input object (``x.dequantize()`` of a float tensor, ``aten.lift``):
        # by its schema it neither wrote nor made a view, so the memory keeps the labels it has.
        return out
    if label is not EMPTY:
        storage = store._storage(out)
        if storage is None:
            pass
        elif getattr(storage, store._LABEL, None) is None:  # fresh memory: the whole of it
            store.label_new_memory(storage, label, origin)
        else:
            label = store.write_label(out, label, origin)
        if label._aux or torch._C._current_autograd_node() is not None:
            return torch.Tensor._make_subclass(TaggedTensor, out)
        return out
    if torch._C._current_autograd_node() is None:
        return _keep_plain(out)
    return torch.Tensor._make_subclass(TaggedTensor, out)


def _wrap_neutral(out: Any) -> Any:
    """Outputs whose values do not depend on the inputs': unlabelled but still tracked, because
    they are typically filled in place next (``buf = x.new_zeros(n); buf[:k] = x``)."""
    if type(out) is torch.Tensor:
        return torch.Tensor._make_subclass(TaggedTensor, out)
    if type(out) is tuple or type(out) is list:
        return type(out)(_wrap_neutral(o) for o in out)
    return out


def _keep_plain(out: torch.Tensor) -> torch.Tensor:
    """A fresh unlabelled output: plain, unless it shares auxiliary-labelled memory (then tracked)."""
    if store.counters.aux and store.storage_label(out).has_aux:
        return torch.Tensor._make_subclass(TaggedTensor, out)
    return out


def _wrap_view(out: Any) -> Any:
    if type(out) is torch.Tensor:
        return torch.Tensor._make_subclass(TaggedTensor, out)
    if type(out) is tuple or type(out) is list:
        return type(out)(_wrap_view(o) for o in out)
    return out


def _wrap_rows(
    out: torch.Tensor, args: Sequence[Any], kwargs: dict[str, Any], label: Label, origin: str | None
) -> torch.Tensor:
    """``cat``/``stack``: along the outermost dimension, each input's rows keep their own label."""
    if _label_rows(out, args, kwargs, origin):
        return torch.Tensor._make_subclass(TaggedTensor, out) if label._aux else out
    return _wrap_fresh(out, label, origin)  # type: ignore[no-any-return]


def _label_rows(out: torch.Tensor, args: Sequence[Any], kwargs: dict[str, Any], origin: str | None) -> bool:
    """Label ``out`` (the whole of its storage) row block by row block; False if it is not laid out so."""
    tensors = args[0] if args else kwargs.get("tensors", ())
    labels = {id(store.label_of_plain(x)) for x in tensors if isinstance(x, torch.Tensor)}
    if len(labels) < 2:
        return False  # one label for every input: nothing finer to keep
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    parts = [x for x in tensors if isinstance(x, torch.Tensor) and x.numel() > 0]
    if dim < 0:
        dim += out.dim()
    outermost = all(n == 1 for n in out.shape[:dim])
    if not outermost or not out.is_contiguous() or out.storage_offset() != 0 or len(parts) < 2:
        return False
    size = out.element_size()
    layout = [(x.numel() * size, store.label_of_plain(x)) for x in parts]
    first = layout[0][1]
    if all(label is first for _, label in layout):
        return False  # one label for every row: nothing finer to keep
    if sum(n for n, _ in layout) != store._storage(out).nbytes():
        return False
    store.set_label(out, store.rows_of_parts(layout), origin)
    return True


def _fills_storage(t: torch.Tensor) -> bool:
    storage = store._storage(t)
    return (
        storage is not None
        and t.layout == torch.strided
        and t.storage_offset() == 0
        and t.is_contiguous()
        and t.numel() * t.element_size() == storage.nbytes()
    )


def _copy_rows(src: Any, out: torch.Tensor) -> bool:
    """Give ``out`` the row labels of ``src`` if both fill their memory in the same order."""
    if not isinstance(src, torch.Tensor) or src.numel() != out.numel() or src.numel() == 0:
        return False
    storage = store._storage(src)
    rows = getattr(storage, store._LABEL, None) if storage is not None else None
    if type(rows) is not store.Rows or not (_fills_storage(src) and _fills_storage(out)):
        return False
    scale_num, scale_den = out.element_size(), src.element_size()
    ranges = [(a * scale_num // scale_den, b * scale_num // scale_den, lab) for a, b, lab in rows.ranges]
    store.set_label(out, store._normalise(ranges), store.origin_of(src))
    return True


def _foreach_lists(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[list[Sequence[Any]], Label]:
    lists: list[Sequence[Any]] = []
    shared = EMPTY
    for a in (*args, *kwargs.values()):
        if type(a) is list or type(a) is tuple:
            lists.append(a)
        elif isinstance(a, torch.Tensor):
            shared = shared.join(store.label_of_plain(a))
    return lists, shared


def _item_label(lists: list[Sequence[Any]], i: int, shared: Label, skip: object = None) -> Label:
    label = shared
    for items in lists:
        if items is skip or i >= len(items):
            continue
        x = items[i]
        if isinstance(x, torch.Tensor):
            label = label.join(store.label_of_plain(x))
    return label


def _wrap_foreach(out: Any, args: Sequence[Any], kwargs: dict[str, Any], origin: str | None) -> Any:
    if type(out) is not list and type(out) is not tuple:
        return _wrap_fresh(out, _label_of_args(args), origin)
    lists, shared = _foreach_lists(args, kwargs)
    return type(out)(
        _wrap_fresh(o, _item_label(lists, i, shared), origin) if isinstance(o, torch.Tensor) else o
        for i, o in enumerate(out)
    )


def _origin(info: OpInfo, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """Where aux data entered this operation's output: here if it mixes, else inherited."""
    mixes = False
    for t in _tensor_args(args, kwargs):
        found = store.label_of_plain(t)
        if found is not EMPTY and not found.has_aux:
            mixes = True
            break
    if not mixes:
        for t in _tensor_args(args, kwargs):
            inherited = store.origin_of(t)
            if inherited is not None:
                return inherited
    return describe(info.name)


def _tensor_args(args: Sequence[Any], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            found.append(a)
        elif type(a) is list or type(a) is tuple:
            found.extend(x for x in a if isinstance(x, torch.Tensor))
    return found


def _written_targets(
    info: OpInfo, args: Sequence[Any], kwargs: dict[str, Any], label: Label
) -> list[tuple[torch.Tensor, Label, bool]]:
    """Every tensor this call writes, with the label written into it and whether it is overwritten."""
    targets: list[tuple[torch.Tensor, Label, bool]] = []
    lists: list[Sequence[Any]] | None = None
    shared = EMPTY
    for index, name, overwrite in info.written:
        if name in ("running_mean", "running_var") and not (len(args) > 5 and args[5]):
            continue  # batch norm in evaluation mode reads its running statistics, it does not write them
        target = args[index] if index < len(args) else kwargs.get(name)
        if target is None:
            continue
        if type(target) is list or type(target) is tuple:
            if lists is None:
                lists, shared = _foreach_lists(args, kwargs)
            for i, t in enumerate(target):
                if isinstance(t, torch.Tensor):
                    targets.append((t, _item_label(lists, i, shared, skip=target), overwrite))
        elif isinstance(target, torch.Tensor):
            if overwrite:  # the target's old contents do not reach its new ones
                written = EMPTY
                for a in _tensor_args(args, kwargs):
                    if a is not target:
                        written = written.join(store.label_of_plain(a))
            else:
                written = label
            targets.append((target, written, overwrite))
        else:
            raise TrackingError(f"{info.name}: written argument {name!r} is a {type(target).__name__}")
    return targets


def _refuse_protected_write(info: OpInfo, target: torch.Tensor, label: Label) -> None:
    protected = _protection.protected_memory(target)
    if protected is None:
        return
    sources = tuple(sorted(label.aux_sources))
    site = user_call_site(3)
    raise IsolationViolation(
        f"refused {info.name} at {site}: it would write data from "
        f"{', '.join(map(str, sources))} into {protected.describe()}. Nothing was written. "
        f"Protected values may only change through their GatedOptimizer from primary-data gradients: "
        f"give this code path its own copy, or detach the shared value before it meets auxiliary data.",
        parameters=(protected.name,),
        sources=sources,
        operation=f"{info.name} at {site}",
    )


def _dispatch_write(
    func: torch._ops.OpOverload,
    info: OpInfo,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    label: Label,
    origin: str | None,
) -> Any:
    """In-place and ``out=`` operations: check, run, then label what was written."""
    targets = _written_targets(info, args, kwargs, label)
    if label.has_aux:
        for target, written, _ in targets:
            if written.has_aux:
                _refuse_protected_write(info, target, written)

    with NO_DISPATCH():
        out = func(*args, **kwargs)

    if info.rows and len(targets) == 1 and _label_rows(targets[0][0], args, kwargs, origin):
        targets = []  # labelled row block by row block
    for target, written, overwrite in targets:
        new = store.write_label(target, written, origin, overwrite=overwrite)
        if not isinstance(target, TaggedTensor):
            if new is not EMPTY:
                store.counters.labelled_state += 1
            if new.has_aux:
                track_after_operation(target)
        if new.has_aux:
            base = target._base
            if base is not None and not isinstance(base, TaggedTensor):
                track_after_operation(base)

    if out is None:
        return None
    return _writing_op_result(info, args, kwargs, out, label, origin)


def _writing_op_result(
    info: OpInfo, args: Sequence[Any], kwargs: dict[str, Any], out: Any, label: Label, origin: str | None
) -> Any:
    names = {index: name for index, name, _ in info.written}

    def result(position: int, value: Any) -> Any:
        alias = info.return_aliases[position] if position < len(info.return_aliases) else None
        if alias is not None:  # the written argument itself: give back the caller's object
            return args[alias] if alias < len(args) else kwargs.get(names.get(alias, ""), value)
        if isinstance(value, torch.Tensor):  # a fresh output of a writing op (batch-norm output)
            return _wrap_fresh(value, label, origin)
        if type(value) is list or type(value) is tuple:
            return type(value)(_wrap_fresh(v, label, origin) for v in value)
        return value

    if info.is_foreach:
        return out
    if type(out) is tuple or type(out) is list:
        return type(out)(result(i, o) for i, o in enumerate(out))
    return result(0, out)


def without_tracking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with per-operation tracking switched off (the caller accounts for labels)."""
    with NO_DISPATCH():
        return fn(*args, **kwargs)
