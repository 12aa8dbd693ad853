"""Machinery of ``test_op_noninterference.py``: torch's OpInfo and ModuleInfo registries, run tagged.

This module knows how to

- enumerate the operators of ``torch.testing._internal.common_methods_invocations.op_db`` and the
  modules of ``torch.testing._internal.common_modules.module_db`` with their CPU dtypes in
  float32 / float64 / int64 / bool (:func:`op_entries`, :func:`module_entries`);
- materialise their sample inputs reproducibly (torch's generator is seeded from the op name, dtype
  and flags, and the lists are cached: every run clones the tensors it uses, so the cache is never
  written or labelled);
- split a sample into its tensor leaves (:class:`Leaves`), replace their values
  (:func:`perturbed`), tag each as ``primary`` / ``aux`` / plain with its own source name, run the
  op (or module) and record every output, input gradient, written tensor, parameter gradient and
  buffer as an :class:`Observed` label and a bit-exact NumPy copy of its value (:class:`Run`).

Which properties those observations must satisfy is stated, and checked, by the test module.
Only the public API of ``amal_verified`` is used: ``primary``, ``aux``, ``label_of``,
``declassify`` (to read tagged values without an escape warning), ``escapes`` and ``labels``.
"""

from __future__ import annotations

import contextlib
import functools
import random
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch.utils._pytree import keystr, tree_flatten_with_path, tree_unflatten

import amal_verified as av
from amal_verified.isolation.labels import EMPTY, Label, Source, SourceKind

__all__ = [
    "DTYPES",
    "ROLES",
    "Leaves",
    "ModuleEntry",
    "Observed",
    "OpEntry",
    "Role",
    "Run",
    "module_entries",
    "module_samples",
    "op_entries",
    "op_samples",
    "perturbed",
    "run_module",
    "run_op",
    "same_value",
    "source_of",
]

DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.int64, torch.bool)
"""The dtypes checked, where the OpInfo / ModuleInfo supports them on CPU."""

Role = Literal["aux", "primary", "plain"]
ROLES: tuple[Role, ...] = ("aux", "primary", "plain")
Variant = Literal["functional", "inplace", "out"]

_READ_REASON = "op-noninterference property: reads outputs to compare them bit for bit"
_RNG_SEED = 20_231_207  # torch's global generator is reset to this before every run


def _stable_seed(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode()) & 0x7FFF_FFFF


# ---------------------------------------------------------------------------
# The registries


@functools.cache
def _registries() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """``op_db`` and ``module_db``.  Importing torch's test utilities loads a Hypothesis profile of
    their own and freezes ``torch.backends`` flags: both are undone, so the rest of the suite runs
    as configured.  Call it at import time, not inside a Hypothesis test (profiles registered
    there are refused)."""
    from hypothesis import settings

    profile = settings.get_current_profile_name()
    frozen = torch.backends.flags_frozen()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.testing._internal.common_methods_invocations import op_db
        from torch.testing._internal.common_modules import module_db
    settings.load_profile(profile)
    if not frozen:
        torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
    return tuple(op_db), tuple(module_db)


def _op_db() -> tuple[Any, ...]:
    return _registries()[0]


def _module_db() -> tuple[Any, ...]:
    return _registries()[1]


@contextlib.contextmanager
def _seeded(*key: object) -> Iterator[None]:
    """torch's, Python's and NumPy's global generators seeded from ``key``, and restored after."""
    py_state, np_state = random.getstate(), np.random.get_state()
    seed = _stable_seed(*key)
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def all_opinfos() -> tuple[Any, ...]:
    """Every OpInfo of ``op_db``, whatever its dtypes."""
    return _op_db()


@dataclass(frozen=True)
class OpEntry:
    """One OpInfo: its full name (``name.variant_test_name``), the checked dtypes it supports."""

    name: str
    info: Any
    dtypes: tuple[torch.dtype, ...]

    @property
    def variants(self) -> tuple[Variant, ...]:
        found: list[Variant] = ["functional"]
        if self.info.inplace_variant is not None:
            found.append("inplace")
        if self.info.supports_out:
            found.append("out")
        return tuple(found)

    def differentiable(self, dtype: torch.dtype) -> bool:
        return bool(self.info.supports_autograd) and dtype.is_floating_point


@dataclass(frozen=True)
class ModuleEntry:
    """One ModuleInfo (by class name, plus a suffix for a mode: ``BatchNorm1d.eval``)."""

    name: str
    info: Any
    dtypes: tuple[torch.dtype, ...]
    training: bool


@functools.cache
def op_entries() -> dict[str, OpEntry]:
    """Every OpInfo of ``op_db`` with at least one checked CPU dtype, by full name."""
    found: dict[str, OpEntry] = {}
    for info in _op_db():
        supported = info.supported_dtypes("cpu")
        dtypes = tuple(d for d in DTYPES if d in supported)
        if dtypes:
            found[info.full_name] = OpEntry(info.full_name, info, dtypes)
    return found


def _extra_module_inputs(
    module_info: Any, device: str, dtype: torch.dtype, requires_grad: bool, training: bool, **kwargs: Any
) -> list[Any]:
    """Inputs for modules ``module_db`` does not cover (dropout, containers)."""
    from torch.testing._internal.common_modules import FunctionInput, ModuleInput

    def make(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=dtype, device=device).requires_grad_(requires_grad)

    cls = module_info.module_cls
    if cls is MLPWithBatchNorm:
        return [ModuleInput(FunctionInput(), FunctionInput(make(6, 4)), desc="mlp_with_batchnorm")]
    if cls in (torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.FeatureAlphaDropout):
        return [ModuleInput(FunctionInput(0.5), FunctionInput(make(2, 3, 4, 4)), desc="p_0.5")]
    return [
        ModuleInput(FunctionInput(0.5), FunctionInput(make(4, 5)), desc="p_0.5"),
        ModuleInput(FunctionInput(), FunctionInput(make(3)), desc="default"),
    ]


class MLPWithBatchNorm(torch.nn.Sequential):
    """Linear, BatchNorm1d, Tanh, Linear: nested modules with running statistics."""

    def __init__(self) -> None:
        super().__init__(
            torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
        )


@functools.cache
def _extra_modules() -> tuple[Any, ...]:
    from torch.testing._internal.common_modules import ModuleInfo

    classes = (
        torch.nn.Dropout,
        torch.nn.Dropout1d,
        torch.nn.Dropout2d,
        torch.nn.AlphaDropout,
        torch.nn.FeatureAlphaDropout,
        MLPWithBatchNorm,
    )
    return tuple(
        ModuleInfo(cls, module_inputs_func=_extra_module_inputs, train_and_eval_differ=True)
        for cls in classes
    )


@functools.cache
def module_entries() -> dict[str, ModuleEntry]:
    """Every ModuleInfo of ``module_db`` (plus dropout layers and a ``Sequential`` with batch norm,
    which it lacks) with a checked dtype, in training mode (``nn.Name``) and, where the module
    behaves differently in evaluation mode, also in it (``nn.Name.eval``)."""
    found: dict[str, ModuleEntry] = {}
    for info in (*_module_db(), *_extra_modules()):
        supported = info.supported_dtypes("cpu")
        dtypes = tuple(d for d in DTYPES[:2] if d in supported)
        if not dtypes:
            continue
        name = info.name
        found[name] = ModuleEntry(name, info, dtypes, training=True)
        if info.train_and_eval_differ:
            found[f"{name}.eval"] = ModuleEntry(f"{name}.eval", info, dtypes, training=False)
    return found


@functools.lru_cache(maxsize=96)
def op_samples(name: str, dtype: torch.dtype, requires_grad: bool) -> tuple[Any, ...]:
    """The OpInfo's sample inputs, generated reproducibly (never modified: runs clone them)."""
    entry = op_entries()[name]
    with _seeded(name, str(dtype), requires_grad):
        return tuple(entry.info.sample_inputs("cpu", dtype, requires_grad=requires_grad))


@functools.lru_cache(maxsize=32)
def module_samples(name: str, dtype: torch.dtype) -> tuple[Any, ...]:
    """The ModuleInfo's module inputs (constructor and forward arguments), generated reproducibly."""
    entry = module_entries()[name]
    with _seeded(name, str(dtype)):
        samples = entry.info.module_inputs_func(
            entry.info, device="cpu", dtype=dtype, requires_grad=True, training=entry.training
        )
        return tuple(s for s in samples if s.forward_input is not None)


# ---------------------------------------------------------------------------
# Tensor leaves of a call


@dataclass(frozen=True)
class Leaves:
    """The tensor leaves of ``(input, args, kwargs)``; everything else stays as it is."""

    paths: tuple[str, ...]
    values: tuple[torch.Tensor, ...]
    requires_grad: tuple[bool, ...]
    _flat: tuple[Any, ...]
    _positions: tuple[int, ...]
    _spec: Any

    @staticmethod
    def of(structure: Any) -> Leaves:
        pairs, spec = tree_flatten_with_path(structure)
        flat = tuple(value for _, value in pairs)
        positions = tuple(i for i, value in enumerate(flat) if isinstance(value, torch.Tensor))
        return Leaves(
            paths=tuple(_path(pairs[i][0]) for i in positions),
            values=tuple(flat[i] for i in positions),
            requires_grad=tuple(bool(flat[i].requires_grad) for i in positions),
            _flat=flat,
            _positions=positions,
            _spec=spec,
        )

    def __len__(self) -> int:
        return len(self.values)

    @property
    def taggable(self) -> bool:
        """At least one leaf, and every leaf a strided CPU tensor (the only kind that can be tagged)."""
        return bool(self.values) and all(
            v.layout == torch.strided and v.device.type == "cpu" for v in self.values
        )

    def rebuild(self, tensors: Sequence[torch.Tensor]) -> Any:
        flat = list(self._flat)
        for position, tensor in zip(self._positions, tensors, strict=True):
            flat[position] = tensor
        return tree_unflatten(flat, self._spec)


def _path(keys: Any) -> str:
    text = keystr(keys)
    # ((input, args, kwargs)) -> input / args[0] / kwargs['weight']
    for index, head in enumerate(("input", "args", "kwargs")):
        prefix = f"[{index}]"
        if text.startswith(prefix):
            return head + text[len(prefix) :]
    return text


def source_of(role: Role, index: int | str) -> Source | None:
    """The source a leaf is tagged with: each tagged leaf has its own (``aux-0``, ``real-env-1``)."""
    if role == "aux":
        return Source(SourceKind.AUX, f"aux-{index}")
    if role == "primary":
        return Source(SourceKind.PRIMARY, f"real-env-{index}")
    return None


def _tag(tensor: torch.Tensor, role: Role, index: int | str) -> torch.Tensor:
    source = source_of(role, index)
    if source is None:
        return tensor
    if source.kind is SourceKind.AUX:
        return av.aux(tensor, source=source.name)
    return av.primary(tensor, source=source.name)


def _fresh(value: torch.Tensor, requires_grad: bool) -> torch.Tensor:
    """A copy with its own storage (same strides where possible), a leaf."""
    copy = value.detach().clone()
    return copy.requires_grad_(requires_grad) if requires_grad else copy


# ---------------------------------------------------------------------------
# Perturbations: other values of the same shape and dtype

FLOAT_PERTURBATIONS = ("noise", "zero", "large", "-large", "nan", "inf", "-inf", "mixed", "keep")
INT_PERTURBATIONS = ("resample", "zero", "shift", "arbitrary", "extreme", "keep")
BOOL_PERTURBATIONS = ("flip", "false", "true", "random", "keep")


def perturbations(dtype: torch.dtype) -> tuple[str, ...]:
    if dtype == torch.bool:
        return BOOL_PERTURBATIONS
    if dtype.is_floating_point or dtype.is_complex:
        return FLOAT_PERTURBATIONS
    return INT_PERTURBATIONS


def perturbed(value: torch.Tensor, kind: str, seed: int) -> torch.Tensor:
    """``value`` with other contents (``kind`` from :func:`perturbations`); ``keep`` copies it."""
    out = value.detach().clone()
    if kind == "keep" or out.numel() == 0:
        return out
    g = torch.Generator().manual_seed(seed)
    shape, dtype = out.shape, out.dtype
    new: torch.Tensor
    if dtype == torch.bool:
        if kind == "flip":
            new = ~out
        elif kind in ("false", "true", "zero"):
            new = torch.full(shape, kind == "true")  # "zero": all False
        else:
            new = torch.rand(shape, generator=g) < 0.5
    elif dtype.is_floating_point or dtype.is_complex:
        large = 1e38 if torch.finfo(dtype).max > 1e38 else torch.finfo(dtype).max
        constants = {"zero": 0.0, "large": large, "-large": -large, "nan": np.nan}
        constants |= {"inf": np.inf, "-inf": -np.inf}
        noise = torch.randn(shape, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(
            -3, 4, (), generator=g
        )
        if kind == "noise":
            new = noise
        elif kind == "mixed":
            table = torch.tensor([0.0, large, -large, np.nan, np.inf, -np.inf], dtype=torch.float64)
            pick = torch.randint(0, len(table) + 2, shape, generator=g)
            new = torch.where(pick < len(table), table[pick.clamp(max=len(table) - 1)], noise)
        elif kind in constants:
            new = torch.full(shape, constants[kind], dtype=torch.float64)
        else:  # a kind of another dtype family
            new = noise
    else:
        info = torch.iinfo(dtype)
        flat = out.reshape(-1)
        if kind == "resample":
            new = flat[torch.randint(0, flat.numel(), shape, generator=g)]
        elif kind == "zero":
            new = torch.zeros(shape, dtype=dtype)
        elif kind == "shift":
            new = out + torch.randint(-2, 3, shape, generator=g, dtype=dtype)
        elif kind == "extreme":
            # ±max, not min: min / -1 traps (SIGFPE) in torch's integer division, untagged too
            new = torch.where(torch.rand(shape, generator=g) < 0.5, info.max, -info.max).to(dtype)
        else:  # "arbitrary" (any value in [-100, 100)), or a kind of another dtype family
            new = torch.randint(-100, 100, shape, generator=g, dtype=dtype)
    out.copy_(new.to(dtype))
    return out


# ---------------------------------------------------------------------------
# Observing a run


@dataclass(frozen=True)
class Observed:
    """A tensor after a run: its label and a copy of its value (``None``: not a tensor)."""

    label: Label
    value: np.ndarray[Any, Any] | None
    python: object = None
    tracked: bool = False  # a tracked tensor object (not a plain one whose memory carries the label)


def _snapshot(t: torch.Tensor) -> np.ndarray[Any, Any]:
    with av.declassify(reason=_READ_REASON):
        detached = t.detach()
        if detached.dtype in (torch.bfloat16, torch.complex32) or detached.is_quantized:
            detached = detached.to(torch.float64 if not detached.is_complex() else torch.complex128)
        return np.array(detached.numpy(force=True), copy=True)


def observe(t: Any) -> Observed:
    if isinstance(t, torch.Tensor):
        return Observed(av.label_of(t), _snapshot(t), tracked=isinstance(t, av.TaggedTensor))
    return Observed(EMPTY, None, t)


def same_value(a: Observed, b: Observed) -> bool:
    """Bit for bit (NaN-aware: NaN equals NaN whatever its payload; 0.0 and -0.0 differ)."""
    if a.value is None or b.value is None:
        return a.value is None and b.value is None and repr(a.python) == repr(b.python)
    x, y = a.value, b.value
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.dtype.kind in "fc":
        nan_x, nan_y = np.isnan(x), np.isnan(y)
        if not np.array_equal(nan_x, nan_y):
            return False
        x, y = np.where(nan_x, 0, x), np.where(nan_y, 0, y)
    return bool(np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes())


def close_value(a: Observed, b: Observed) -> bool:
    """Equal up to rounding: same dtype, shape and non-finite positions; exact for integers and
    booleans; floating values within a few units of the last place of float32 / float64 (torch
    picks other, equivalent formulas for tensor subclasses, e.g. ``prod``'s backward)."""
    if same_value(a, b):
        return True
    x, y = a.value, b.value
    if x is None or y is None or x.dtype != y.dtype or x.shape != y.shape or x.dtype.kind not in "fc":
        return False
    finite_x, finite_y = np.isfinite(x), np.isfinite(y)
    if not np.array_equal(finite_x, finite_y) or not np.array_equal(
        x[~finite_x], y[~finite_y], equal_nan=True
    ):
        return False
    x, y = x[finite_x], y[finite_y]
    if x.size == 0:
        return True
    tiny = np.finfo(x.real.dtype).eps ** 0.75  # ~1.5e-6 for float32, ~2e-12 for float64
    scale = max(float(np.max(np.abs(y))), 1.0)
    return bool(np.all(np.abs(x - y) <= tiny * (scale + np.abs(y))))


def _undeclassified_escapes() -> int:
    return sum(e.count for e in av.escapes() if e.declassified is None)


@dataclass
class Run:
    """What one call produced.

    ``observed`` keys: ``output<path>``, ``grad:<leaf path>`` (input gradients), ``written:<what>``
    (in-place and ``out=`` targets), ``param_grad:<name>``, ``buffer:<name>``.
    """

    observed: dict[str, Observed] = field(default_factory=dict)
    error: BaseException | None = None
    error_where: str = ""
    escaped: bool = False

    @property
    def python_values(self) -> dict[str, object]:
        return {k: o.python for k, o in self.observed.items() if o.value is None and o.python is not None}

    def fail(self, where: str, exc: BaseException) -> Run:
        self.error, self.error_where = exc, where
        return self


def _observe_tree(run: Run, prefix: str, value: Any) -> None:
    pairs, _ = tree_flatten_with_path(value)
    for keys, leaf in pairs:
        if leaf is None:
            continue
        run.observed[prefix + keystr(keys)] = observe(leaf)


def _grad_outputs(outputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A fixed random ``grad_output`` per output (the same in every run)."""
    found = []
    for j, o in enumerate(outputs):
        g = torch.Generator().manual_seed(7919 + j)
        found.append(torch.randn(o.shape, generator=g, dtype=o.dtype))
    return found


def _differentiable(value: Any) -> list[torch.Tensor]:
    pairs, _ = tree_flatten_with_path(value)
    return [
        t
        for _, t in pairs
        if isinstance(t, torch.Tensor) and t.requires_grad and (t.is_floating_point() or t.is_complex())
    ]


class _Quiet:
    """Runs a call with warnings silenced (escapes are counted from ``av.escapes()`` instead)
    and torch's global generator reset, so that random ops draw the same numbers in every run."""

    def __enter__(self) -> _Quiet:
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        self._rng = torch.random.fork_rng()
        self._rng.__enter__()
        torch.manual_seed(_RNG_SEED)
        self._escapes = _undeclassified_escapes()
        return self

    def escaped(self) -> bool:
        return _undeclassified_escapes() != self._escapes

    def __exit__(self, *exc: object) -> None:
        self._rng.__exit__(None, None, None)
        self._warnings.__exit__(None, None, None)


@dataclass(frozen=True)
class OutSpec:
    """``out=`` targets: shapes and dtypes of the plain functional run's outputs, and the role
    (tag) of the targets' old contents."""

    templates: tuple[tuple[tuple[int, ...], torch.dtype], ...]
    as_tuple: bool
    role: Role

    @property
    def label(self) -> Label:
        return Label(s for i in range(len(self.templates)) if (s := source_of(self.role, f"out{i}")))

    def targets(self, kind: str, seed: int) -> tuple[Any, list[torch.Tensor]]:
        tensors = [
            _tag(perturbed(torch.zeros(shape, dtype=dtype), kind, seed + i), self.role, f"out{i}")
            for i, (shape, dtype) in enumerate(self.templates)
        ]
        return (tuple(tensors) if self.as_tuple else tensors[0]), tensors


def _torch_dtype(value: np.ndarray[Any, Any]) -> torch.dtype:
    return torch.from_numpy(np.zeros((), dtype=value.dtype)).dtype


def out_spec(functional: Run, role: Role) -> OutSpec | None:
    """The ``out=`` argument matching a plain functional run (``None`` unless it returned tensors)."""
    keys = list(functional.observed)
    if keys == ["output"]:
        obs = [functional.observed["output"]]
        as_tuple = False
    elif keys and keys == [f"output[{i}]" for i in range(len(keys))]:
        obs = [functional.observed[k] for k in keys]
        as_tuple = True
    else:
        return None
    if any(o.value is None for o in obs):
        return None
    templates = tuple((tuple(o.value.shape), _torch_dtype(o.value)) for o in obs if o.value is not None)
    return OutSpec(templates, as_tuple, role)


def run_op(
    entry: OpEntry,
    sample: Any,
    variant: Variant,
    values: Sequence[torch.Tensor],
    roles: Sequence[Role],
    *,
    grads: bool,
    out: OutSpec | None = None,
    out_perturbation: tuple[str, int] = ("keep", 0),
) -> Run:
    """Run one variant of the op on ``values`` (one per leaf of ``sample``), tagged by ``roles``;
    for ``out=``, the targets start as zeros, or as ``perturbed`` zeros (``out_perturbation``)."""
    leaves = Leaves.of((sample.input, sample.args, sample.kwargs))
    run = Run()
    with _Quiet() as quiet:
        try:
            tensors = [
                _tag(_fresh(v, grads and rg), role, i)
                for i, (v, rg, role) in enumerate(zip(values, leaves.requires_grad, roles, strict=True))
            ]
        except Exception as exc:
            return run.fail("tagging", exc)
        first, args, kwargs = leaves.rebuild(tensors)
        targets: list[torch.Tensor] = []
        try:
            if variant == "functional":
                result = entry.info(first, *args, **kwargs)
            elif variant == "inplace":
                result = entry.info.inplace_variant(first, *args, **kwargs)
                targets = [first]
            else:
                assert out is not None
                out_arg, targets = out.targets(*out_perturbation)
                result = entry.info(first, *args, **kwargs, out=out_arg)
        except Exception as exc:
            run.escaped = quiet.escaped()
            return run.fail(variant, exc)
        try:
            _observe_tree(run, "output", result)
            for i, target in enumerate(targets):
                run.observed[f"written:{'input' if variant == 'inplace' else f'out[{i}]'}"] = observe(target)
        except Exception as exc:
            return run.fail("reading the outputs", exc)
        if grads:
            try:
                _input_grads(run, sample.output_process_fn_grad(result), leaves.paths, tensors)
            except Exception as exc:
                run.escaped = quiet.escaped()
                return run.fail("backward", exc)
        run.escaped = quiet.escaped()
    return run


def _input_grads(run: Run, result: Any, paths: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
    outputs = _differentiable(result)
    wanted = [(p, t) for p, t in zip(paths, tensors, strict=True) if t.requires_grad]
    if not outputs or not wanted:
        return
    found = torch.autograd.grad(outputs, [t for _, t in wanted], _grad_outputs(outputs), allow_unused=True)
    for (path, _), g in zip(wanted, found, strict=True):
        if g is not None:
            run.observed[f"grad:{path}"] = observe(g)


# ---------------------------------------------------------------------------
# Modules


def build_module(entry: ModuleEntry, sample: Any, dtype: torch.dtype) -> torch.nn.Module:
    """The module of ``sample``, initialised reproducibly, in ``entry``'s mode."""
    with _seeded(entry.name, str(dtype), sample.desc):
        c = sample.constructor_input
        module: torch.nn.Module = entry.info.module_cls(*c.args, **c.kwargs)
        return module.to(dtype=dtype)


@functools.lru_cache(maxsize=512)
def has_buffers(name: str, dtype: torch.dtype, index: int) -> bool:
    """Whether the module built for this sample has buffers (running statistics)."""
    entry = module_entries()[name]
    try:
        module = build_module(entry, module_samples(name, dtype)[index], dtype)
    except Exception:
        return False
    return any(True for _ in module.buffers())


def module_leaves(sample: Any) -> Leaves:
    return Leaves.of((None, sample.forward_input.args, sample.forward_input.kwargs))


def run_module(
    entry: ModuleEntry,
    sample: Any,
    dtype: torch.dtype,
    values: Sequence[torch.Tensor],
    roles: Sequence[Role],
    *,
    warmup: tuple[Role, torch.Tensor] | None = None,
) -> Run:
    """Build the module, optionally call it once in training mode on ``warmup`` (a tagged first
    input, so that its buffers hold statistics of that data), then call it in ``entry``'s mode on
    ``values`` tagged by ``roles``, backpropagate a fixed ``grad_output`` from every output, and
    observe outputs, input and parameter gradients and buffers."""
    leaves = module_leaves(sample)
    run = Run()
    with _Quiet() as quiet:
        try:
            module = build_module(entry, sample, dtype)
        except Exception as exc:  # construction does not involve tagged data
            return run.fail("construction", exc)
        torch.manual_seed(_RNG_SEED)
        try:
            if warmup is not None:
                module.train(True)
                role, first = warmup
                module(_tag(_fresh(first, False), role, "warm"))
            bases = [_fresh(v, rg) for v, rg in zip(values, leaves.requires_grad, strict=True)]
            tensors = [_tag(b, role, i) for i, (b, role) in enumerate(zip(bases, roles, strict=True))]
        except Exception as exc:
            run.escaped = quiet.escaped()
            return run.fail("warm-up call", exc)
        module.train(entry.training)
        _, args, kwargs = leaves.rebuild(tensors)
        try:
            result = module(*args, **kwargs)
        except Exception as exc:
            run.escaped = quiet.escaped()
            return run.fail("forward", exc)
        try:
            _observe_tree(run, "output", result)
            for name, buf in module.named_buffers():
                run.observed[f"buffer:{name}"] = observe(buf)
        except Exception as exc:
            return run.fail("reading the outputs", exc)
        try:
            outputs = _differentiable(result)
            if outputs:
                torch.autograd.backward(outputs, _grad_outputs(outputs))
            for name, p in module.named_parameters():
                if p.grad is not None:
                    run.observed[f"param_grad:{name}"] = observe(p.grad)
            for path, base in zip(leaves.paths, bases, strict=True):
                if base.grad is not None:
                    run.observed[f"grad:{path}"] = observe(base.grad)
        except Exception as exc:
            run.escaped = quiet.escaped()
            return run.fail("backward", exc)
        run.escaped = quiet.escaped()
    return run
