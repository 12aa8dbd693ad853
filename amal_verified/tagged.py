"""Tagged tensors: ``PrimaryData``, ``AuxData`` and the per-operation label rule.

``primary(x, source=...)`` and ``aux(x, source=...)`` wrap a tensor (no copy)
in a ``torch.Tensor`` subclass whose label names its source.  Every aten
operation that receives a tagged tensor -- forward or backward, out-of-place
or in-place, through views, including optimizer-side edits of gradients --
goes through :meth:`TaggedTensor.__torch_dispatch__`, which

- labels the output with the join of the inputs' labels (factory-like
  operations such as ``ones_like``, whose values do not depend on the input's
  values, give an unlabelled plain tensor);
- for in-place and ``out=`` writes, joins that label into the written
  storage (a write that overwrites a whole storage replaces its label), and
  refuses before writing when aux data would reach a protected parameter;
- records an escape when a value leaves as a Python scalar.

Module calls are not tracked op by op: see ``amal_verified._boundary``.

Every tagged tensor is, at run time, a :class:`TaggedTensor`.  The public
types are views of its *current* label (Python's ``isinstance`` never consults
a metaclass for an object's exact type, so they are never instantiated):
``isinstance(t, PrimaryData)`` is true exactly when ``t`` is tagged and its
label is non-empty and primary-only, ``isinstance(t, AuxData)`` when its label
contains an auxiliary source -- also after an in-place write changed it.  For
mypy they are distinct ``@final`` subclasses of ``torch.Tensor``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, cast, final

import torch
from torch.utils._pytree import tree_map

from amal_verified import _protection
from amal_verified._label_store import STORE, storage_key
from amal_verified._provenance import describe
from amal_verified._runtime_checks import checked
from amal_verified.errors import IsolationViolation, TaggingError
from amal_verified.escaping import record_escape, user_call_site
from amal_verified.labels import EMPTY, Label, SourceKind

__all__ = ["AuxData", "PrimaryData", "TaggedTensor", "aux", "label_of", "primary"]

aten = torch.ops.aten

# Operations whose output values do not depend on the input's values (only on
# its shape, dtype and device): their outputs are unlabelled.  The autograd
# engine seeds backward with ``ones_like(loss)``; labelling it would taint every
# gradient with every label in the loss.
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
    }
)

# In-place operations whose result does not depend on the written tensor's old
# contents: when they overwrite a whole storage, its old label is dropped.
_OVERWRITE_PACKETS = frozenset(
    {
        aten.zero_,
        aten.fill_,
        aten.copy_,
        aten.normal_,
        aten.uniform_,
        aten._foreach_zero_,
        aten._foreach_copy_,
    }
)

_ESCAPE_KINDS = {
    aten._local_scalar_dense: ".item() / float() / int() / bool()",
    aten.is_nonzero: "bool()",
    aten.equal: "torch.equal()",
    aten.allclose: "torch.allclose()",
}


class _OpInfo:
    """What the dispatcher needs to know about one aten overload, computed once."""

    __slots__ = (
        "escape_kind",
        "is_foreach",
        "is_view",
        "metadata",
        "name",
        "neutral",
        "overwrite",
        "return_aliases",
        "written",
    )

    def __init__(self, func: torch._ops.OpOverload) -> None:
        schema = func._schema
        packet = func.overloadpacket
        self.name = f"aten.{packet.__name__}"
        self.neutral = packet in _NEUTRAL_PACKETS
        self.metadata = packet in _METADATA_PACKETS
        self.overwrite = packet in _OVERWRITE_PACKETS
        self.is_foreach = packet.__name__.startswith("_foreach_")
        self.escape_kind = _ESCAPE_KINDS.get(packet, f"aten.{packet.__name__} (returns a Python value)")
        written: list[tuple[int, str]] = []
        for i, arg in enumerate(schema.arguments):
            if arg.alias_info is not None and arg.alias_info.is_write:
                written.append((i, arg.name))
        if packet is aten.native_batch_norm:
            # Updates running_mean / running_var in training mode without declaring it.
            written += [(3, "running_mean"), (4, "running_var")]
        self.written: tuple[tuple[int, str], ...] = tuple(written)
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


_op_infos: dict[torch._ops.OpOverload, _OpInfo] = {}


def _op_info(func: torch._ops.OpOverload) -> _OpInfo:
    info = _op_infos.get(func)
    if info is None:
        info = _OpInfo(func)
        _op_infos[func] = info
    return info


class _TaggedMeta(torch._C._TensorMeta):
    """Makes ``isinstance`` reflect a tagged tensor's *current* label."""

    _label_test: Callable[[Label], bool] | None = None

    def __instancecheck__(cls, instance: object) -> bool:
        test = cls._label_test
        if test is None:
            return type.__instancecheck__(cls, instance)
        if not isinstance(instance, TaggedTensor):
            return False
        return test(STORE.of(instance.elem))


class TaggedTensor(torch.Tensor, metaclass=_TaggedMeta):
    """A tensor whose data provenance is tracked (the run-time class of all tagged data).

    ``elem`` is the plain tensor holding the data; the label lives with its
    storage (see ``amal_verified._label_store``).
    """

    elem: torch.Tensor
    __slots__ = ("elem",)

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> TaggedTensor:
        out = torch.Tensor._make_wrapper_subclass(
            cls,
            elem.shape,
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            dtype=elem.dtype,
            device=elem.device,
            layout=elem.layout,
            requires_grad=False,
        )
        out.elem = elem
        return out

    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    @property
    def label(self) -> Label:
        return STORE.of(self.elem)

    def __repr__(self, *, tensor_contents: Any = None) -> Any:  # type: ignore[override]
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

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        record_escape("numpy.asarray()", self.label)
        arr = self.elem.detach().numpy()
        return arr if dtype is None else arr.astype(dtype)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (_rebuild_tagged, (self.elem, sorted(self.label.sources)))

    def __deepcopy__(self, memo: dict[int, Any]) -> TaggedTensor:
        out = self.clone()  # labelled by dispatch
        memo[id(self)] = out
        assert isinstance(out, TaggedTensor)
        return out

    @classmethod
    def __torch_dispatch__(  # type: ignore[override]
        cls,
        func: torch._ops.OpOverload,
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        return _dispatch(func, args, kwargs or {})


@final
class PrimaryData(TaggedTensor):
    """Data derived from primary (real-environment) sources only (an ``isinstance`` view)."""

    __slots__ = ()


@final
class AuxData(TaggedTensor):
    """Data that depends on at least one auxiliary source (an ``isinstance`` view)."""

    __slots__ = ()


PrimaryData._label_test = Label.is_primary_only.fget  # type: ignore[attr-defined]
AuxData._label_test = Label.has_aux.fget  # type: ignore[attr-defined]


def _rebuild_tagged(elem: torch.Tensor, sources: list[Any]) -> TaggedTensor:
    label = Label(sources)
    STORE.join(elem, label)
    return TaggedTensor(elem)


def wrap_with_label(elem: torch.Tensor, label: Label, origin: str | None = None) -> torch.Tensor:
    """Join ``label`` into ``elem``'s storage and return it tagged (or plain if unlabelled)."""
    full = STORE.join(elem, label, origin)
    if full.is_empty:
        return elem
    return TaggedTensor(elem)


# ---------------------------------------------------------------------------
# The per-operation rule


def _unwrap_args(args: Sequence[Any], labels: list[Label]) -> list[Any]:
    out: list[Any] = []
    for a in args:
        ta = type(a)
        if ta is TaggedTensor:
            labels.append(STORE.of(a.elem))
            out.append(a.elem)
        elif ta is list or ta is tuple:
            if any(isinstance(x, torch.Tensor) for x in a):
                out.append(ta(_unwrap_args(a, labels)))
            else:
                out.append(a)
        elif isinstance(a, torch.Tensor):
            labels.append(STORE.of(a))
            out.append(a)
        else:
            out.append(a)
    return out


def _per_item_labels(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[list[Label], Label]:
    """For ``_foreach_*`` ops: the label of each list position, and of the shared (non-list) inputs."""
    per_item: list[Label] = []
    shared = EMPTY
    for a in (*args, *kwargs.values()):
        if isinstance(a, (list, tuple)):
            for i, x in enumerate(a):
                if isinstance(x, torch.Tensor):
                    lab = label_of(x)
                    if i >= len(per_item):
                        per_item.extend([EMPTY] * (i + 1 - len(per_item)))
                    per_item[i] = per_item[i].join(lab)
        elif isinstance(a, torch.Tensor):
            shared = shared.join(label_of(a))
    return per_item, shared


def _covers_whole_storage(t: torch.Tensor) -> bool:
    return (
        t.storage_offset() == 0
        and t.is_contiguous()
        and t.numel() * t.element_size() == t.untyped_storage().nbytes()
    )


def _refuse_protected_write(info: _OpInfo, target: torch.Tensor, label: Label) -> None:
    param = _protection.protected_by_storage(storage_key(target))
    if param is None:
        return
    sources = tuple(sorted(label.aux_sources))
    site = user_call_site(3)
    raise IsolationViolation(
        f"refused {info.name} at {site}: it would write data from "
        f"{', '.join(map(str, sources))} into protected parameter {param.name} "
        f"(protected by {param.owner}). Nothing was written. Protected parameters may only change "
        f"through their GatedOptimizer from primary-data gradients: give this code path its own copy "
        f"of the parameter, or detach the shared value before it meets auxiliary data.",
        parameters=(param.name,),
        sources=sources,
        operation=f"{info.name} at {site}",
    )


def _label_written(
    info: _OpInfo, target: torch.Tensor, label: Label, overwrite_label: Label, origin: str | None
) -> None:
    if isinstance(target, torch.nn.Parameter) or _protection.is_parameter_storage(storage_key(target)):
        return  # parameters are label-neutral
    if info.overwrite and _covers_whole_storage(target):
        STORE.set(target, overwrite_label, origin)
    elif not label.is_empty:
        if label.has_aux and not STORE.of(target).has_aux:
            origin = describe(info.name)  # aux data written into memory that held none
        STORE.join(target, label, origin)
    else:
        return
    STORE.written_plain += 1


def _dispatch(func: torch._ops.OpOverload, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    info = _op_info(func)
    labels: list[Label] = []
    u_args = _unwrap_args(args, labels)
    u_kwargs: dict[str, Any] = {}
    if kwargs:
        values = _unwrap_args(list(kwargs.values()), labels)
        u_kwargs = dict(zip(kwargs.keys(), values, strict=True))
    label = Label.join_all(labels)

    if info.neutral:
        out = func(*u_args, **u_kwargs)
        if isinstance(out, torch.Tensor) and torch._C._current_autograd_node() is not None:
            # Inside a backward node, a fresh buffer is about to be filled in place and then sliced
            # (CopySlices: new_empty_strided, copy_, as_strided): keep it a tracked, still
            # unlabelled tensor, or the label written into it would not follow the slices.
            return TaggedTensor(out)
        return out

    origin = _origin(info, args, kwargs, labels) if label.has_aux else None

    if info.written:
        return _dispatch_write(func, info, args, kwargs, u_args, u_kwargs, label, origin)

    out = func(*u_args, **u_kwargs)

    if info.is_foreach:
        per_item, shared = _per_item_labels(args, kwargs)
        return [wrap_with_label(o, per_item[i].join(shared), origin) for i, o in enumerate(out)]
    if info.is_view:
        return tree_map(_wrap_view, out)
    if isinstance(out, torch.Tensor):
        return wrap_with_label(out, label, origin)
    if isinstance(out, (tuple, list)):
        return tree_map(
            lambda o: wrap_with_label(o, label, origin) if isinstance(o, torch.Tensor) else o, out
        )
    if not info.metadata and out is not None:
        record_escape(info.escape_kind, label)
    return out


def _origin(info: _OpInfo, args: Sequence[Any], kwargs: dict[str, Any], labels: list[Label]) -> str:
    """Where aux data entered this operation's output: here if it mixes, else inherited."""
    if any(not lab.has_aux and not lab.is_empty for lab in labels):
        return describe(info.name)
    for t in _tensor_args(args, kwargs):
        inherited = STORE.origin(t.elem if isinstance(t, TaggedTensor) else t)
        if inherited is not None:
            return inherited
    return describe(info.name)


def _wrap_view(o: Any) -> Any:
    if not isinstance(o, torch.Tensor):
        return o
    return o if STORE.of(o).is_empty else TaggedTensor(o)


def _dispatch_write(
    func: torch._ops.OpOverload,
    info: _OpInfo,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    u_args: list[Any],
    u_kwargs: dict[str, Any],
    label: Label,
    origin: str | None,
) -> Any:
    """In-place and ``out=`` operations: check, run, then label what was written."""
    per_item: list[Label] | None = None
    shared = EMPTY
    if info.is_foreach:
        per_item, shared = _per_item_labels(args, kwargs)

    targets: list[tuple[torch.Tensor, Label, Label]] = []  # (plain target, label, overwrite label)
    for index, name in info.written:
        if info.name == "aten.native_batch_norm" and not (len(args) > 5 and args[5]):
            continue  # evaluation mode: running statistics are read, not written
        if index < len(u_args):
            u_target, o_target = u_args[index], args[index]
        else:
            u_target, o_target = u_kwargs.get(name), kwargs.get(name)
        if u_target is None:
            continue
        if isinstance(u_target, (list, tuple)):
            assert per_item is not None
            for i, t in enumerate(u_target):
                item_label = per_item[i].join(shared)
                others = _foreach_sources_excluding(args, kwargs, o_target, i).join(shared)
                targets.append((t, item_label, others))
        else:
            others = Label.join_all(label_of(a) for a in _tensor_args(args, kwargs) if a is not o_target)
            targets.append((u_target, label, others))

    for target, target_label, _ in targets:
        if target_label.has_aux:
            _refuse_protected_write(info, target, target_label)
    if info.name == "aten.resize_" and type(args[0]) is TaggedTensor:
        requested = math.prod(int(n) for n in args[1])
        if requested > args[0].numel():
            raise TaggingError(
                f"resize_ would grow a tagged tensor from {args[0].numel()} to {requested} elements, "
                f"which its wrapper cannot hold; nothing was changed. Allocate a new tensor and tag it."
            )

    out = func(*u_args, **u_kwargs)

    for target, target_label, others in targets:
        _label_written(info, target, target_label, others, origin)
    for index, name in info.written:
        original = args[index] if index < len(args) else kwargs.get(name)
        if type(original) is TaggedTensor:
            _sync_metadata(original)

    if info.is_foreach or out is None:
        return out
    names = {index: name for index, name in info.written}

    def result(position: int, value: Any) -> Any:
        alias = info.return_aliases[position] if position < len(info.return_aliases) else None
        if alias is not None:  # the written argument itself: give back the caller's object
            return args[alias] if alias < len(args) else kwargs.get(names.get(alias, ""), value)
        if isinstance(value, torch.Tensor):  # a fresh output of a writing op (batch-norm output)
            return wrap_with_label(value, label, origin)
        return value

    if isinstance(out, (tuple, list)):
        return type(out)(result(i, o) for i, o in enumerate(out))
    return result(0, out)


_PYTHON_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.Python) | torch._C.DispatchKeySet(
    torch._C.DispatchKey.PythonTLSSnapshot
)


def _sync_metadata(tagged: TaggedTensor) -> None:
    """After an in-place op that changed ``elem``'s shape (``squeeze_``, ``t_``, ``resize_``...),
    give the wrapper the same size, stride and offset, keeping its identity."""
    elem = tagged.elem
    if (
        tagged.shape == elem.shape
        and tagged.stride() == elem.stride()
        and tagged.storage_offset() == elem.storage_offset()
    ):
        return
    with torch._C._ExcludeDispatchKeyGuard(_PYTHON_KEYS):
        torch.ops.aten.as_strided_.default(tagged, elem.shape, elem.stride(), elem.storage_offset())


def _tensor_args(args: Sequence[Any], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found.extend(x for x in a if isinstance(x, torch.Tensor))
    return found


def _foreach_sources_excluding(
    args: Sequence[Any], kwargs: dict[str, Any], written_list: Any, i: int
) -> Label:
    label = EMPTY
    for a in (*args, *kwargs.values()):
        if a is written_list or not isinstance(a, (list, tuple)):
            continue
        if i < len(a) and isinstance(a[i], torch.Tensor):
            label = label.join(label_of(a[i]))
    return label


# ---------------------------------------------------------------------------
# Public constructors


class _Tag(torch.autograd.Function):
    """Tags a tensor that requires grad; the gradient passes through unchanged."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, label: Label) -> torch.Tensor:
        elem = (x.elem if isinstance(x, TaggedTensor) else x).detach()
        STORE.join(elem, label)
        return TaggedTensor(elem)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def _tag(x: torch.Tensor, kind: SourceKind, source: str) -> TaggedTensor:
    if not isinstance(source, str) or not source:
        raise TaggingError(
            f"source must be a non-empty string naming where the data comes from, got {source!r}"
        )
    if x.is_sparse or x.layout != torch.strided:
        raise TaggingError(f"only dense (strided) tensors can be tagged, got layout {x.layout}")
    new = Label.of(kind, source)
    existing = label_of(x)
    if kind is SourceKind.PRIMARY and existing.has_aux:
        raise TaggingError(
            f"cannot tag as primary data from {source!r}: this memory already holds data labelled "
            f"{existing!r}. Tag a copy instead (x.clone()) if it really is primary data."
        )
    if x.requires_grad:  # stay connected to autograd
        out: TaggedTensor = _Tag.apply(x, existing.join(new))  # type: ignore[no-untyped-call]
        return out
    elem = x.elem if isinstance(x, TaggedTensor) else x
    STORE.join(elem, new)
    return TaggedTensor(elem)


@checked
def primary(x: torch.Tensor, *, source: str = "real-env") -> PrimaryData:
    """Tag ``x`` (no copy) as primary data from ``source``.

    Raises :class:`TaggingError` if ``x``'s memory already holds auxiliary data.
    """
    from amal_verified._activation import ensure_active

    ensure_active()
    return cast(PrimaryData, _tag(x, SourceKind.PRIMARY, source))


@checked
def aux(x: torch.Tensor, *, source: str) -> AuxData:
    """Tag ``x`` (no copy) as auxiliary data from ``source`` (e.g. ``"aux-3"``)."""
    from amal_verified._activation import ensure_active

    ensure_active()
    return cast(AuxData, _tag(x, SourceKind.AUX, source))


def label_of(t: torch.Tensor) -> Label:
    """The data sources ``t`` depends on (empty for data never derived from tagged data)."""
    if isinstance(t, TaggedTensor):
        return STORE.of(t.elem)
    if isinstance(t, torch.Tensor):
        return STORE.of(t)
    raise TypeError(f"label_of expects a tensor, got {type(t).__name__}")
