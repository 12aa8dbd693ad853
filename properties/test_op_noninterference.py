"""Op-level noninterference of label tracking, over torch's own operator and module registries.

In the spirit of Opacus's per-layer gradient checks: every operator of torch's OpInfo registry
(``torch.testing._internal.common_methods_invocations.op_db``) that runs on CPU in float32,
float64, int64 or bool, and the common ``nn`` modules of ``common_modules.module_db`` (plus the
dropout layers and a ``Sequential`` with batch norm, which it lacks), are run on their own sample
inputs with each tensor argument tagged ``aux`` (each with its own source, ``aux-<i>``),
``primary`` (``real-env-<i>``) or left plain -- Hypothesis chooses the op, dtype, variant
(functional, in-place, ``out=``), sample, roles and perturbations.  The values of the aux inputs
are then replaced (noise, 0, ±1e38, NaN, ±Inf, a mix for floats; resampled, shifted, extreme
values for integers; flipped or constant booleans) and the call is repeated.  Per example:

- **noninterference (soundness)**: every observation -- each output, each input gradient (a fixed
  random ``grad_output`` is backpropagated from every differentiable output), each written
  tensor (in-place and ``out=`` targets), and for modules each parameter gradient and buffer
  (running statistics) -- whose label holds none of the perturbed sources is bit for bit the same
  (NaN-aware) in both runs.  Equivalently: a value that changes when an aux input changes carries
  that input's source, so no label is silently dropped.  A difference is re-checked against a
  repeated run first, so nondeterministic kernels are not reported as leaks;
- **precision**: every label is contained in the join of the labels of the call's inputs (no
  source from nowhere); the documented value-independent operations (``*_like``, ``new_*``
  factories) give unlabelled outputs;
- **writes**: after an in-place or ``out=`` call the written tensor carries at least the label the
  functional variant's output carries on the same inputs (for in-place operations that overwrite
  their target, its own old label may be dropped).  Not compared: a written tensor with no
  elements (what its shape depends on is the perturbation check's), a target the plain call does
  not fill with the plain functional variant's values (torch's own ``out=`` bug: then the labels
  need not agree either), and primary sources that the functional variant's output carries only
  on its memory (a plain tensor object: the first operation of a composite, README "What is
  enforced");
- **robustness**: where the plain (untagged) call succeeds, the tagged call does too, and
  computes the same values (to within rounding: torch picks other, equivalent formulas for
  tensor subclasses).

Modules are called on tagged positional and keyword inputs (module-boundary tracking), in
training mode and, where behaviour differs, in evaluation mode; modules with buffers may first be
called once in training mode on a tagged copy of their input (``warm-up``), so that evaluation
reads running statistics of aux data.  A module called on primary data alone must give parameter
gradients without an aux label (a case of precision).

What is left out is named at the top of this file: operations that return Python values
(escapes, recorded by ``av.escapes()``), take no tensor, need sparse layouts or CUDA
(``SKIPPED_OPS``); perturbations that make torch itself kill the process, untagged too
(``NATIVE_CRASHES``: those ops only get the perturbations listed with them); leaks through an
escape that the library records and warns about (``ESCAPING_OPS``).  Samples holding non-strided
or non-CPU tensors cannot be tagged and are not drawn; a sample the plain call rejects (e.g. a
broadcasting in-place target) checks nothing (a Hypothesis event says so).

Current failures of the tracking are listed in ``KNOWN_FAILURES`` and ``KNOWN_MODULE_FAILURES``
(``"<kinds>: <reason>"``, kinds among ``leak``, ``spurious label``, ``crash``, ``wrong value``).
A listed op may fail with its listed kinds only; ``test_known_failures_still_fail`` requires a
deterministic sweep of the op's samples (all inputs aux, then each input alone aux; noise, NaN,
Inf) to reproduce every listed kind, so an entry must go once the core is fixed.

Budget.  The ``default`` profile draws 500 op and 125 module examples at random (derandomized):
35-70 s on two cores, including ~10 s to import torch's registries.  The ``audit`` profile draws
2000 and 500, and adds one property per eligible op and per module, 25 examples each (~12 min).
``AMAL_OP_EXAMPLES=N`` runs that per-op, per-module sweep with ``N`` examples each in any profile,
each failing op reported with its shrunk example::

    AMAL_OP_EXAMPLES=10 pytest properties/test_op_noninterference.py -k "every_op or every_module"
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import _op_registry as reg
import numpy as np
import pytest
import torch
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from amal_verified.isolation.labels import EMPTY, Label, Source, SourceKind

Kind = Literal["leak", "spurious label", "crash", "wrong value"]
KINDS: tuple[Kind, ...] = ("leak", "spurious label", "crash", "wrong value")

# ---------------------------------------------------------------------------
# What is left out, and why (never silently).

_PYTHON_VALUE = "returns a Python value: an escape (recorded by av.escapes(), README 'Escapes')"
_NO_TENSOR = "takes no tensor argument: nothing to tag"
_SPARSE = "sparse layouts cannot be tagged (README: dense strided tensors only)"

_CUDA_ONLY = "runs on CUDA / ROCm only (jiterator): every CPU call raises"

SKIPPED_OPS: dict[str, str] = {
    "item": _PYTHON_VALUE,
    "allclose": _PYTHON_VALUE,
    "equal": _PYTHON_VALUE,
    **dict.fromkeys(
        (
            "arange",
            "broadcast_shapes",
            "linspace",
            "logspace",
            "randn",
            "randint",
            "ones",
            "zeros",
            "full",
            "empty",
            "empty_strided",
            "empty_permuted",
            "eye",
            "scalar_tensor",
            "triu_indices",
            "tril_indices",
            "signal.windows.hamming",
            "signal.windows.hann",
            "signal.windows.bartlett",
            "signal.windows.blackman",
            "signal.windows.cosine",
            "signal.windows.exponential",
            "signal.windows.gaussian",
            "signal.windows.kaiser",
            "signal.windows.general_cosine",
            "signal.windows.general_hamming",
            "signal.windows.nuttall",
        ),
        _NO_TENSOR,
    ),
    "sparse.sampled_addmm": _SPARSE,
    "sparse.mm.reduce": _SPARSE,
    "to_sparse": _SPARSE + " (its output is sparse)",
    **dict.fromkeys(
        (
            "jiterator_unary",
            "jiterator_binary",
            "jiterator_4inputs_with_extra_args",
            "jiterator_binary_return_by_ref",
            "jiterator_2inputs_2outputs",
        ),
        _CUDA_ONLY,
    ),
}

_FINITE = ("noise", "zero", "large", "-large")
_SMALL_FINITE = ("noise", "zero")

NATIVE_CRASHES: dict[str, tuple[tuple[str, ...], str]] = {
    "linalg.eigvals": (_FINITE, "segfault in oneMKL (SGEBAL) on NaN input"),
    "nn.functional.grid_sample": (_FINITE, "segfault on a NaN or ±Inf grid"),
    "grid_sampler_2d": (_SMALL_FINITE, "segfault on a NaN, ±Inf or ±1e38 grid"),
    "nn.functional.ctc_loss": (
        (*_FINITE, "zero", "resample"),
        "abort / segfault on negative or inconsistent target lengths, heap corruption on target classes "
        "out of range",
    ),
    "_segment_reduce.offsets": (
        (*_FINITE, "arbitrary", "zero", "resample"),
        "segfault / abort on invalid offsets",
    ),
    "_segment_reduce.lengths": (
        (*_FINITE, "arbitrary", "zero"),
        "abort on lengths that do not sum to the size",
    ),
    "lcm": (("arbitrary", "zero", "resample", "shift"), "SIGFPE on int64 extremes"),
}
"""Ops on which torch itself kills the process (segfault, abort: no exception), untagged too, for
some input values: their aux inputs are only perturbed by the kinds listed first."""

NEUTRAL_OPS: frozenset[str] = frozenset(
    {
        "zeros_like",
        "ones_like",
        "empty_like",
        "full_like",
        "rand_like",
        "randn_like",
        "randint_like",
        "new_zeros",
        "new_ones",
        "new_empty",
        "new_full",
        "new_empty_strided",
    }
)
"""Documented value-independent operations (``amal_verified.isolation.tagging``'s factory-like operations):
their outputs must be unlabelled."""

OVERWRITING_INPLACE: frozenset[str] = frozenset(
    {"fill", "zero_", "normal.in_place", "uniform", "cauchy", "exponential", "geometric", "log_normal"}
)
"""In-place variants whose result does not depend on the target's old values."""

ESCAPING_OPS: dict[str, str] = {
    "narrow": "a tensor `start` is read with .item(): an escape, recorded and warned (README 'Escapes'); "
    "what depends on it (the input gradient's zero pattern) is not labelled",
}
"""Ops that turn a tensor argument into a Python number internally: a leak in a call that recorded
an escape is the documented behaviour, not a failure (any other finding still is)."""

SKIPPED_MODULES: dict[str, str] = {}

# ---------------------------------------------------------------------------
# Current failures of the tracking ("<kind>[, <kind>...]: reason").  Strict: a listed kind that
# the sweep no longer reproduces fails test_known_failures_still_fail, so the lists only shrink.

_COMPOSITE_OUT = (
    "torch's composite out= kernel computes the result through the tracked ops and then writes it into "
    "the target below the Python dispatcher"
)
_SVD_INF = (
    "an aux input holding ±Inf makes the tagged call raise _LinAlgError (svd did not converge) where the "
    "plain call returns NaN: under the Python dispatcher the composite runs _linalg_svd, which checks "
    "convergence, instead of the fused kernel"
)

KNOWN_FAILURES: dict[str, str] = {
    "linalg.matrix_rank": f"leak, wrong value, crash: out= leaves the target unwritten and unlabelled "
    f"({_COMPOSITE_OUT}, without passing the values on); {_SVD_INF}",
    "linalg.matrix_rank.hermitian": f"leak, wrong value: out= leaves the target unwritten and unlabelled "
    f"({_COMPOSITE_OUT}, without passing the values on)",
    "linalg.cond": f"crash: {_SVD_INF}",
    "norm.nuc": f"crash: {_SVD_INF}",
    "tensor_split": "leak: torch's composite kernel reads a 1-D tensor of split indices from its memory, "
    "below the Python dispatcher, and splits with the numbers it read: what is split carries only its "
    "own label, not the indices', and no escape is recorded",
}

KNOWN_MODULE_FAILURES: dict[str, str] = {}


# ---------------------------------------------------------------------------
# Findings


@dataclass(frozen=True)
class Finding:
    kind: Kind
    where: str
    detail: str
    escaped: bool = False  # a leak in a call that recorded an escape (av.escapes())

    def __str__(self) -> str:
        return f"{self.kind} at {self.where}: {self.detail}"


class LeakFound(AssertionError):
    """An observation whose label lacks a perturbed aux source changed value, or a written
    tensor lost a label its functional variant keeps."""


class SpuriousLabel(AssertionError):
    """A label holds a source no input carried, or a value-independent output is labelled."""


class TrackingCrash(AssertionError):
    """The tagged call raised where the plain call did not."""


class WrongValue(AssertionError):
    """The tagged call computed other values than the plain call (beyond rounding)."""


_ERRORS: dict[Kind, type[AssertionError]] = {
    "leak": LeakFound,
    "spurious label": SpuriousLabel,
    "crash": TrackingCrash,
    "wrong value": WrongValue,
}


def listed_kinds(reason: str) -> frozenset[Kind]:
    """The kinds a ``KNOWN_FAILURES`` entry names before its colon."""
    head = reason.split(":", 1)[0]
    parts = {part.strip() for part in head.split(",")}
    return frozenset(k for k in KINDS if k in parts)


def raise_unexpected(
    findings: Sequence[Finding], known: str | None, example: object, escapes: bool = False
) -> None:
    """Fail with the first finding of each kind not tolerated by ``known`` (one exception class per
    kind, so that Hypothesis reports each kind of failure of an op separately); with ``escapes``
    (an ``ESCAPING_OPS`` entry), leaks in calls that recorded an escape are expected."""
    tolerated = listed_kinds(known) if known else frozenset()
    if escapes:
        for finding in findings:
            if finding.escaped:
                event("leak through a recorded escape")
        findings = [f for f in findings if not (f.kind == "leak" and f.escaped)]
    for finding in findings:
        if finding.kind in tolerated:
            event(f"known failure: {finding.kind}")
    for kind in KINDS:
        first = next((f for f in findings if f.kind == kind and kind not in tolerated), None)
        if first is not None:
            more = sum(1 for f in findings if f.kind == kind) - 1
            raise _ERRORS[kind](f"{example}\n  {first}" + (f"\n  (+{more} more)" if more else ""))


# ---------------------------------------------------------------------------
# The contract, on the runs of one example


def _lacks(label: Label, perturbed: frozenset[Source]) -> bool:
    return not (label.sources & perturbed)


def _shape(obs: reg.Observed) -> str:
    return repr(obs.python) if obs.value is None else f"{obs.value.dtype}{list(obs.value.shape)}"


def _error_line(run: reg.Run) -> str:
    exc = run.error
    assert exc is not None
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:240]} (in {run.error_where})"


@dataclass
class Runs:
    """The runs of one example; ``rerun_*`` repeat a run (for determinism checks), lazily."""

    plain: reg.Run
    orig: reg.Run
    pert: reg.Run | None
    plain_pert: Callable[[], reg.Run]
    rerun_plain: Callable[[], reg.Run]
    rerun_orig: Callable[[], reg.Run]


def check_runs(
    runs: Runs,
    *,
    allowed: Label,
    perturbed: frozenset[Source],
    neutral: bool = False,
    values_meaningful: bool = True,
    must_contain: dict[str, Label] | None = None,
) -> list[Finding]:
    found: list[Finding] = []
    orig, pert = runs.orig, runs.pert
    if orig.error is not None:
        return [Finding("crash", orig.error_where, _error_line(orig))]
    if values_meaningful:
        plain_again: reg.Run | None = None
        for key, ref in runs.plain.observed.items():
            got = orig.observed.get(key)
            if got is None:
                found.append(Finding("wrong value", key, "computed by the plain call, missing when tagged"))
            elif not reg.close_value(ref, got):
                plain_again = plain_again or runs.rerun_plain()
                again = plain_again.observed.get(key)
                if again is not None and reg.same_value(ref, again):
                    found.append(Finding("wrong value", key, "the tagged call computed other values"))
    checked = [orig] if pert is None or pert.error is not None else [orig, pert]
    for run in checked:
        for key, obs in run.observed.items():
            extra = obs.label.sources - allowed.sources
            if extra:
                found.append(Finding("spurious label", key, f"{obs.label!r} holds {sorted(map(str, extra))}"))
            elif neutral and key.startswith("output") and not obs.label.is_empty:
                found.append(Finding("spurious label", key, f"value-independent output is {obs.label!r}"))
        for key, needed in (must_contain or {}).items():
            obs = run.observed.get(key)
            if obs is not None and not needed.flows_to(obs.label):
                missing = sorted(map(str, needed.sources - obs.label.sources))
                found.append(
                    Finding(
                        "leak",
                        key,
                        f"written tensor is {obs.label!r}: lost {missing}, which the "
                        "functional variant's output carries",
                    )
                )
    if pert is None:
        return found
    if pert.error is not None:
        if runs.plain_pert().error is None:
            found.append(Finding("crash", pert.error_where, _error_line(pert) + " (perturbed values)"))
        return found
    if not values_meaningful:
        return found
    orig_again: reg.Run | None = None
    for key, a in orig.observed.items():
        b = pert.observed.get(key)
        if b is None or reg.same_value(a, b):
            continue
        if not (_lacks(a.label, perturbed) or _lacks(b.label, perturbed)):
            continue
        orig_again = orig_again or runs.rerun_orig()
        again = orig_again.observed.get(key)
        if again is None or not reg.same_value(a, again):
            event("nondeterministic observation (not compared)")
            continue
        escaped = orig.escaped or pert.escaped
        found.append(
            Finding(
                "leak",
                key,
                f"labelled {a.label!r} (perturbed run: {b.label!r}) but changed ({_shape(a)} -> "
                f"{_shape(b)}) when {sorted(map(str, perturbed))} changed"
                + ("; an escape was recorded" if escaped else ""),
                escaped=escaped,
            )
        )
    return found


def _leaf_label(role: reg.Role, index: int | str) -> Label:
    source = reg.source_of(role, index)
    return Label(() if source is None else (source,))


# ---------------------------------------------------------------------------
# One op example


@dataclass(frozen=True)
class OpExample:
    name: str
    dtype: torch.dtype
    variant: reg.Variant
    index: int
    roles: tuple[reg.Role, ...]
    kinds: tuple[str, ...]  # perturbation per leaf ("keep" for leaves that are not aux)
    seeds: tuple[int, ...]
    out_role: reg.Role = "plain"
    out_kind: str = "keep"
    out_seed: int = 0

    def __str__(self) -> str:
        text = (
            f"op={self.name} dtype={self.dtype} variant={self.variant} sample={self.index} "
            f"roles={list(self.roles)} perturbations={list(self.kinds)} seeds={list(self.seeds)}"
        )
        if self.variant == "out":
            text += f" out=({self.out_role}, {self.out_kind}, {self.out_seed})"
        return text

    @property
    def grads(self) -> bool:
        return self.variant == "functional" and reg.op_entries()[self.name].differentiable(self.dtype)


def check_op_example(example: OpExample) -> list[Finding] | None:
    """The findings of one example; ``None`` when the plain call rejects the sample (an input
    this variant does not accept: broadcasting into an in-place target, a dtype it cannot write)."""
    entry = reg.op_entries()[example.name]
    grads = example.grads
    sample = reg.op_samples(example.name, example.dtype, grads)[example.index]
    leaves = reg.Leaves.of((sample.input, sample.args, sample.kwargs))
    roles = example.roles
    plain_roles: tuple[reg.Role, ...] = ("plain",) * len(leaves)
    variant = example.variant
    out: reg.OutSpec | None = None
    if variant == "out":
        shapes = reg.run_op(entry, sample, "functional", leaves.values, plain_roles, grads=False)
        out = None if shapes.error is not None else reg.out_spec(shapes, example.out_role)
        if out is None:
            return None
    perturbed = frozenset(
        s
        for i, (role, kind) in enumerate(zip(roles, example.kinds, strict=True))
        if role == "aux" and kind != "keep" and (s := reg.source_of(role, i)) is not None
    )
    out_perturbation = ("keep", 0)
    if out is not None and out.role == "aux" and example.out_kind != "keep":
        perturbed |= out.label.sources
        out_perturbation = (example.out_kind, example.out_seed)
    values = [
        reg.perturbed(v, kind, seed) if role == "aux" else v
        for v, role, kind, seed in zip(leaves.values, roles, example.kinds, example.seeds, strict=True)
    ]

    def run(
        what: reg.Variant, values: Sequence[torch.Tensor], roles: Sequence[reg.Role], pert: bool = False
    ) -> reg.Run:
        return reg.run_op(
            entry,
            sample,
            what,
            values,
            roles,
            grads=grads and what == "functional",
            out=out,
            out_perturbation=out_perturbation if pert else ("keep", 0),
        )

    plain = run(variant, leaves.values, plain_roles)
    if plain.error is not None:
        return None
    if plain.python_values:
        return [Finding("crash", "output", f"returns Python values {plain.python_values}: list it")]
    orig = run(variant, leaves.values, roles)
    pert = run(variant, values, roles, pert=True) if perturbed else None
    runs = Runs(
        plain=plain,
        orig=orig,
        pert=pert,
        plain_pert=lambda: run(variant, values, plain_roles, pert=True),
        rerun_plain=lambda: run(variant, leaves.values, plain_roles),
        rerun_orig=lambda: run(variant, leaves.values, roles),
    )
    input_labels = [_leaf_label(role, i) for i, role in enumerate(roles)]
    allowed = Label.join_all(input_labels)
    must_contain: dict[str, Label] = {}
    if variant != "functional" and orig.error is None:
        functional = run("functional", leaves.values, roles)
        plain_functional = run("functional", leaves.values, plain_roles)
        if variant == "inplace":
            written = {"written:input": "output"}
        else:
            assert out is not None
            allowed = allowed.join(out.label)
            keys = ["output"] if not out.as_tuple else [f"output[{i}]" for i in range(len(out.templates))]
            written = {f"written:out[{i}]": key for i, key in enumerate(keys)}
        for target, key in written.items():
            needed = _written_label_needed(
                functional.observed.get(key), plain_functional.observed.get(key), plain.observed.get(target)
            )
            if variant == "inplace" and example.name in OVERWRITING_INPLACE:
                needed = Label(needed.sources - input_labels[0].sources)
            must_contain[target] = needed
    return check_runs(
        runs,
        allowed=allowed,
        perturbed=perturbed,
        neutral=example.name in NEUTRAL_OPS,
        values_meaningful=not entry.info.has_nondeterministic_output,
        must_contain=must_contain,
    )


def _holds(written: reg.Observed | None, result: reg.Observed | None) -> bool:
    """Whether a written target holds ``result``'s values (in the target's dtype, if another)."""
    if written is None or result is None or written.value is None or result.value is None:
        return False
    if written.value.dtype != result.value.dtype and written.value.shape == result.value.shape:
        with np.errstate(all="ignore"):
            cast = result.value.astype(written.value.dtype)
        result = reg.Observed(result.label, cast)
    return reg.close_value(result, written)


def _written_label_needed(
    functional: reg.Observed | None, plain_functional: reg.Observed | None, plain_written: reg.Observed | None
) -> Label:
    """What a written target must carry: the functional variant's output's label, where the
    contract's *writes* clause compares them (module docstring)."""
    if functional is None or functional.value is None or functional.value.size == 0:
        return EMPTY
    if not _holds(plain_written, plain_functional):
        return EMPTY  # torch's out= variant does not write what its functional variant returns
    if functional.tracked:
        return functional.label
    return Label(s for s in functional.label.sources if s.kind is SourceKind.AUX)


# ---------------------------------------------------------------------------
# One module example


@dataclass(frozen=True)
class ModuleExample:
    name: str
    dtype: torch.dtype
    index: int
    roles: tuple[reg.Role, ...]
    kinds: tuple[str, ...]
    seeds: tuple[int, ...]
    warmup: reg.Role | None = None  # a training-mode call on the first input, tagged so, first
    warm_kind: str = "keep"
    warm_seed: int = 0

    def __str__(self) -> str:
        text = (
            f"module={self.name} dtype={self.dtype} sample={self.index} roles={list(self.roles)} "
            f"perturbations={list(self.kinds)} seeds={list(self.seeds)}"
        )
        if self.warmup is not None:
            text += f" warm-up=({self.warmup}, {self.warm_kind}, {self.warm_seed})"
        return text


def check_module_example(example: ModuleExample) -> list[Finding] | None:
    """The findings of one module example; ``None`` when the plain call rejects it."""
    entry = reg.module_entries()[example.name]
    sample = reg.module_samples(example.name, example.dtype)[example.index]
    leaves = reg.module_leaves(sample)
    roles = example.roles
    plain_roles: tuple[reg.Role, ...] = ("plain",) * len(leaves)
    warm = leaves.values[0] if example.warmup is not None else None
    warm_role: reg.Role = example.warmup or "plain"
    perturbed = frozenset(
        s
        for i, (role, kind) in enumerate(zip(roles, example.kinds, strict=True))
        if role == "aux" and kind != "keep" and (s := reg.source_of(role, i)) is not None
    )
    warm_pert = warm
    if warm is not None and warm_role == "aux" and example.warm_kind != "keep":
        perturbed |= _leaf_label("aux", "warm").sources
        warm_pert = reg.perturbed(warm, example.warm_kind, example.warm_seed)
    values = [
        reg.perturbed(v, kind, seed) if role == "aux" else v
        for v, role, kind, seed in zip(leaves.values, roles, example.kinds, example.seeds, strict=True)
    ]

    def run(
        values: Sequence[torch.Tensor], roles: Sequence[reg.Role], warm: torch.Tensor | None, role: reg.Role
    ) -> reg.Run:
        return reg.run_module(
            entry, sample, example.dtype, values, roles, warmup=None if warm is None else (role, warm)
        )

    plain = run(leaves.values, plain_roles, warm, "plain")
    if plain.error is not None:
        return None
    runs = Runs(
        plain=plain,
        orig=run(leaves.values, roles, warm, warm_role),
        pert=run(values, roles, warm_pert, warm_role) if perturbed else None,
        plain_pert=lambda: run(values, plain_roles, warm_pert, "plain"),
        rerun_plain=lambda: run(leaves.values, plain_roles, warm, "plain"),
        rerun_orig=lambda: run(leaves.values, roles, warm, warm_role),
    )
    labels = [_leaf_label(role, i) for i, role in enumerate(roles)]
    if warm is not None:
        labels.append(_leaf_label(warm_role, "warm"))
    return check_runs(runs, allowed=Label.join_all(labels), perturbed=perturbed)


# ---------------------------------------------------------------------------
# Which ops and modules are checked


reg.op_entries()  # torch's registries load at collection, outside any Hypothesis test
reg.module_entries()


def eligible_ops() -> list[str]:
    return [name for name in reg.op_entries() if name not in SKIPPED_OPS]


def eligible_modules() -> list[str]:
    return [name for name in reg.module_entries() if name not in SKIPPED_MODULES]


def _perturbation_kinds(name: str, dtype: torch.dtype) -> tuple[str, ...]:
    kinds = reg.perturbations(dtype)
    if name in NATIVE_CRASHES:
        kinds = tuple(k for k in kinds if k in NATIVE_CRASHES[name][0]) or ("keep",)
    return kinds


@st.composite
def _roles_and_perturbations(
    draw: st.DrawFn, name: str, values: Sequence[torch.Tensor]
) -> tuple[tuple[reg.Role, ...], tuple[str, ...], tuple[int, ...]]:
    n = len(values)
    roles = draw(st.lists(st.sampled_from(reg.ROLES), min_size=n, max_size=n))
    if n and "aux" not in roles and draw(st.integers(0, 3)):  # mostly at least one aux input
        roles[draw(st.integers(0, n - 1))] = "aux"
    kinds = tuple(
        draw(st.sampled_from(_perturbation_kinds(name, v.dtype))) if role == "aux" else "keep"
        for v, role in zip(values, roles, strict=True)
    )
    seeds = tuple(draw(st.integers(0, 2**16)) if role == "aux" else 0 for role in roles)
    return tuple(roles), kinds, seeds


@st.composite
def op_examples(draw: st.DrawFn, names: Sequence[str]) -> OpExample | None:
    """An example of one of ``names``; ``None`` if the drawn (dtype, variant) has no usable sample."""
    name = draw(st.sampled_from(names))
    entry = reg.op_entries()[name]
    dtype = draw(st.sampled_from(entry.dtypes))
    variant = draw(st.sampled_from(entry.variants))
    grads = variant == "functional" and entry.differentiable(dtype)
    samples = reg.op_samples(name, dtype, grads)
    usable = [i for i, s in enumerate(samples) if reg.Leaves.of((s.input, s.args, s.kwargs)).taggable]
    if not usable:
        return None
    index = draw(st.sampled_from(usable))
    sample = samples[index]
    leaves = reg.Leaves.of((sample.input, sample.args, sample.kwargs))
    roles, kinds, seeds = draw(_roles_and_perturbations(name, leaves.values))
    out_role: reg.Role = "plain"
    out_kind, out_seed = "keep", 0
    if variant == "out":
        out_role = draw(st.sampled_from(reg.ROLES))
        if out_role == "aux":
            out_kind = draw(st.sampled_from(("noise", "nan", "keep")))
            out_seed = draw(st.integers(0, 2**16))
    return OpExample(name, dtype, variant, index, roles, kinds, seeds, out_role, out_kind, out_seed)


@st.composite
def module_examples(draw: st.DrawFn, names: Sequence[str]) -> ModuleExample | None:
    name = draw(st.sampled_from(names))
    entry = reg.module_entries()[name]
    dtype = draw(st.sampled_from(entry.dtypes))
    samples = reg.module_samples(name, dtype)
    usable = [i for i, s in enumerate(samples) if reg.module_leaves(s).taggable]
    if not usable:
        return None
    index = draw(st.sampled_from(usable))
    leaves = reg.module_leaves(samples[index])
    roles, kinds, seeds = draw(_roles_and_perturbations(name, leaves.values))
    warmup: reg.Role | None = None
    warm_kind, warm_seed = "keep", 0
    if reg.has_buffers(name, dtype, index):
        warmup = draw(st.sampled_from((None, "aux", "primary")))
        if warmup == "aux":
            warm_kind = draw(st.sampled_from(_perturbation_kinds(name, leaves.values[0].dtype)))
            warm_seed = draw(st.integers(0, 2**16))
    return ModuleExample(name, dtype, index, roles, kinds, seeds, warmup, warm_kind, warm_seed)


def _check_drawn(example: OpExample | ModuleExample | None) -> None:
    if example is None:
        event("no taggable sample for the drawn dtype and variant")
        return
    note(str(example))
    if isinstance(example, OpExample):
        findings = check_op_example(example)
        known = KNOWN_FAILURES.get(example.name)
    else:
        findings = check_module_example(example)
        known = KNOWN_MODULE_FAILURES.get(example.name)
    if findings is None:
        event("the plain call rejects this sample")
        return
    raise_unexpected(findings, known, example, escapes=example.name in ESCAPING_OPS)


# ---------------------------------------------------------------------------
# Budgets

_PROFILE_EXAMPLES = settings.default.max_examples  # default profile: 25, audit: 1000
_PER_OP_ENV = "AMAL_OP_EXAMPLES"
_PER_OP = int(os.environ.get(_PER_OP_ENV, "0") or 0) or (25 if _PROFILE_EXAMPLES >= 1000 else 0)
_SAMPLED_OPS = 20 * min(_PROFILE_EXAMPLES, 100)  # default: 500; audit: 2000 (plus the per-op sweep)
_SAMPLED_MODULES = 5 * min(_PROFILE_EXAMPLES, 100)  # default: 125; audit: 500


# ---------------------------------------------------------------------------
# The properties


@settings(max_examples=_SAMPLED_OPS)
@given(data=st.data())
def test_ops_sampled(data: st.DataObject) -> None:
    """Ops drawn from every eligible OpInfo: noninterference, precision, writes, robustness."""
    _check_drawn(data.draw(op_examples(eligible_ops())))


@settings(max_examples=_SAMPLED_MODULES)
@given(data=st.data())
def test_modules_sampled(data: st.DataObject) -> None:
    """Modules drawn from module_db (and the dropout layers): the same contract, plus parameter
    gradients and buffers."""
    _check_drawn(data.draw(module_examples(eligible_modules())))


def _per_op_params(names: Callable[[], list[str]]) -> list[object]:
    if not _PER_OP:
        return [
            pytest.param(
                None,
                marks=pytest.mark.skip(
                    reason=f"per-op sweep: set {_PER_OP_ENV}=N or use --hypothesis-profile=audit"
                ),
            )
        ]
    return list(names())


@pytest.mark.parametrize("name", _per_op_params(eligible_ops))
def test_every_op(name: str) -> None:
    @settings(max_examples=max(_PER_OP, 1))
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        _check_drawn(data.draw(op_examples([name])))

    check()


@pytest.mark.parametrize("name", _per_op_params(eligible_modules))
def test_every_module(name: str) -> None:
    @settings(max_examples=max(_PER_OP, 1))
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        _check_drawn(data.draw(module_examples([name])))

    check()


# ---------------------------------------------------------------------------
# Strictness: every listed failure is still reproduced


def _sweep_roles(n: int) -> list[tuple[reg.Role, ...]]:
    """All inputs aux, then each input alone aux with the others primary."""
    patterns: list[tuple[reg.Role, ...]] = [("aux",) * n]
    if n > 1:
        patterns += [tuple("aux" if i == j else "primary" for i in range(n)) for j in range(n)]
    return patterns


def _sweep_kinds(
    name: str, values: Sequence[torch.Tensor], roles: Sequence[reg.Role]
) -> list[tuple[str, ...]]:
    found = []
    for pick in ("noise", "nan", "inf"):
        kinds = []
        for v, role in zip(values, roles, strict=True):
            options = _perturbation_kinds(name, v.dtype)
            kinds.append("keep" if role != "aux" else pick if pick in options else options[0])
        found.append(tuple(kinds))
    return found


def _hinted(count: int, first: int | None) -> list[int]:
    order = list(range(count))
    if first is not None and first < count:
        order.remove(first)
        order.insert(0, first)
    return order


def sweep_op(name: str, first: int | None = None) -> Iterator[tuple[OpExample, list[Finding]]]:
    """A deterministic sweep of one op: every dtype, variant and sample (sample ``first`` first),
    all inputs aux and each input alone aux, noise / NaN / Inf perturbations."""
    entry = reg.op_entries()[name]
    combos = [
        (dtype, variant, variant == "functional" and entry.differentiable(dtype))
        for dtype in entry.dtypes
        for variant in entry.variants
    ]
    longest = max(len(reg.op_samples(name, d, g)) for d, _, g in combos)
    for index in _hinted(longest, first):
        for dtype, variant, grads in combos:
            samples = reg.op_samples(name, dtype, grads)
            if index >= len(samples):
                continue
            leaves = reg.Leaves.of((samples[index].input, samples[index].args, samples[index].kwargs))
            if not leaves.taggable:
                continue
            for roles in _sweep_roles(len(leaves)):
                for kinds in _sweep_kinds(name, leaves.values, roles):
                    seeds = tuple(range(len(leaves)))
                    example = OpExample(name, dtype, variant, index, roles, kinds, seeds)
                    findings = check_op_example(example)
                    if findings is not None:
                        yield example, findings


def sweep_module(name: str, first: int | None = None) -> Iterator[tuple[ModuleExample, list[Finding]]]:
    """The same for a module; all inputs primary too, and with an aux warm-up where it has buffers."""
    entry = reg.module_entries()[name]
    longest = max(len(reg.module_samples(name, d)) for d in entry.dtypes)
    for index in _hinted(longest, first):
        for dtype in entry.dtypes:
            samples = reg.module_samples(name, dtype)
            if index >= len(samples):
                continue
            leaves = reg.module_leaves(samples[index])
            if not leaves.taggable:
                continue
            warmups: list[tuple[reg.Role | None, str]] = [(None, "keep")]
            if reg.has_buffers(name, dtype, index):
                warmups += [("aux", "noise"), ("aux", "keep")]
            for roles in [*_sweep_roles(len(leaves)), ("primary",) * len(leaves)]:
                for kinds in _sweep_kinds(name, leaves.values, roles):
                    for warmup, warm_kind in warmups:
                        seeds = tuple(range(len(leaves)))
                        example = ModuleExample(name, dtype, index, roles, kinds, seeds, warmup, warm_kind, 7)
                        findings = check_module_example(example)
                        if findings is not None:
                            yield example, findings


def _first_of_each_kind(
    sweep: Iterator[tuple[object, list[Finding]]], kinds: frozenset[Kind]
) -> dict[Kind, tuple[object, Finding]]:
    found: dict[Kind, tuple[object, Finding]] = {}
    for example, findings in sweep:
        for finding in findings:
            if finding.kind in kinds and finding.kind not in found:
                found[finding.kind] = (example, finding)
        if set(found) == kinds:
            break
    return found


SWEEP_HINTS: dict[str, int] = {}
"""Where the sweep of a listed failure starts (the sample index of its first witness): a speed-up
only; the whole sweep runs before a listed kind is declared fixed."""


@pytest.mark.parametrize(
    ("registry", "name"),
    [("op", name) for name in KNOWN_FAILURES] + [("module", name) for name in KNOWN_MODULE_FAILURES],
)
def test_known_failures_still_fail(registry: str, name: str) -> None:
    """Each listed failure kind is still reproduced (remove the entry, or the kind, once fixed)."""
    reason = (KNOWN_FAILURES if registry == "op" else KNOWN_MODULE_FAILURES)[name]
    kinds = listed_kinds(reason)
    first = SWEEP_HINTS.get(name)
    sweep = sweep_op(name, first) if registry == "op" else sweep_module(name, first)
    found = _first_of_each_kind(sweep, kinds)
    missing = sorted(kinds - set(found))
    assert not missing, (
        f"{registry} {name!r} no longer shows {missing} on its sweep: the tracking was fixed, so "
        f"remove {'it' if len(missing) == len(kinds) else 'those kinds'} from KNOWN_"
        f"{'' if registry == 'op' else 'MODULE_'}FAILURES ({reason!r})"
    )


def test_lists_name_registered_ops_and_modules() -> None:
    """Every name in the lists above is an op or module of torch's registries, with a reason
    naming its kinds, and no op is both left out and listed as failing."""
    ops, modules = set(reg.op_entries()), set(reg.module_entries())
    all_ops = {info.full_name for info in reg.all_opinfos()}
    for listing in (SKIPPED_OPS, NATIVE_CRASHES, ESCAPING_OPS, KNOWN_FAILURES):
        assert set(listing) <= all_ops, sorted(set(listing) - all_ops)
    named = NEUTRAL_OPS | OVERWRITING_INPLACE
    assert not named - all_ops, sorted(named - all_ops)
    assert set(SKIPPED_MODULES) | set(KNOWN_MODULE_FAILURES) <= modules
    assert not set(SKIPPED_OPS) & set(KNOWN_FAILURES)
    for reason in (*KNOWN_FAILURES.values(), *KNOWN_MODULE_FAILURES.values()):
        assert listed_kinds(reason), f"reason must start with its kinds ({', '.join(KINDS)}): {reason!r}"
    assert len(ops) > 500 and len(modules) > 80
