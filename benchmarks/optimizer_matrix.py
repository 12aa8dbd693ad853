"""Drop-in matrix: does ``GatedOptimizer`` behave exactly like the torch optimizer it wraps?

Usage, from the repository root (``PYTHONPATH=.`` so that this checkout's ``amal_verified`` is the
one measured; the output names the commit of the package that was imported)::

    PYTHONPATH=. .venv/bin/python benchmarks/optimizer_matrix.py --jobs 2  # benchmarks/optimizer_matrix.*
    PYTHONPATH=. .venv/bin/python benchmarks/optimizer_matrix.py --quick   # < 30 s, into build/

Commit first: the output states ``git rev-parse --short HEAD`` of the imported package, with
``+dirty`` when its tracked files differ from that commit.  The full run (about 3 minutes on 2 cores)
spreads its rows over ``--jobs`` spawned worker processes (default 2; ``--jobs 1`` runs in this
process, as ``--quick`` and the test do); each row is computed in one process.

Rows are optimizer configurations: every ``OptimizerInput`` that torch's own optimizer database
(``torch.testing._internal.common_optimizers.optim_db``) gives for ``device="cpu",
dtype=torch.float32``, expanded as torch's ``_get_optim_inputs_including_global_cliquey_kwargs`` does
(one variant per supported implementation flag: ``differentiable``, ``fused``) plus a ``foreach``
variant of each (torch's helper leaves foreach out on CPU, where it has no fast kernels, but
``foreach=True`` runs there), a ``capturable`` variant of each optimizer's default configuration
(and ``fused & capturable`` where fused exists), and a sparse-gradient row for each optimizer with
``supports_sparse``.  Models: ``Linear(4, 8) -> Tanh -> Linear(8, 3)``, MSE on a fixed batch of 8;
the same without biases when the plain optimizer refuses 1-D parameters (Muon); two
``nn.Embedding(16, 4, sparse=True)`` tables for sparse rows (all of SparseAdam's, which
``only_supports_sparse_grads``).  ``differentiable=True`` rows step *non-leaf* copies of the MLP's
parameters (``NonLeafMLP``: gradients retained, each backward keeps the graph), since such an
optimizer updates its parameters in place under autograd, which PyTorch refuses for leaves.
Optimizers with ``step_requires_closure`` (LBFGS) always step with a closure.

Every check runs one scenario twice in one process: on the bare optimizer with plain tensors
(*plain*), then with the optimizer wrapped in ``av.GatedOptimizer`` and the same data tagged
``av.primary(..., source="real-env")`` (*gated*), both from the same seeds.  It records parameters,
the wrapped optimizer's ``state_dict()``, returned losses, learning rates, hook calls and the
warnings raised, and compares plain with gated bit for bit (NaN-aware: tensors are compared as
bytes, floats by their IEEE bits).  A cell is

- ``PASS``: identical observations, and where the scenario leaves a gated optimizer the user
  will step (after 10 steps, a state-dict load, ``add_param_group``, a copy and its original), that
  optimizer still refuses a step whose gradients carry auxiliary data (IsolationViolation), leaving
  parameters, gradients and the wrapped optimizer's ``state_dict()`` bit-identical;
- ``FAIL``: gated raised (type and first message line recorded), observations differ (the first
  difference is given), or the gate was lost;
- ``N/A``: plain torch itself raises on this scenario (the reason is torch's error).  A
  configuration whose plain 10-step run raises on every model is N/A on every feature.

Features (matrix columns): 10 steps; ``step(closure)``; atomic refusal (the gradients of a loss on
``av.aux`` inputs are refused on the fresh optimizer and again after one step, with parameters,
gradients and state bit-identical before and after each refusal; then ``zero_grad()`` and 9 clean
steps, which must match plain torch's 10); ``torch.amp.GradScaler("cpu")`` around a
bf16 ``torch.autocast`` forward, with ``unscale_`` + ``clip_grad_norm_`` and without;
``state_dict()``/``load_state_dict()`` from plain into gated and from gated into plain (continuing
5 steps each side after the load); ``torch.save`` of the state dict, ``torch.load(weights_only=True)``
into a fresh optimizer; ``copy.deepcopy`` and ``pickle`` of ``(model, optimizer)`` (the copy steps
first, then the original: both must match plain, so a copy sharing state fails); the six hooks
registered on the optimizer the user holds (``register_step_pre_hook`` ...
``register_load_state_dict_post_hook``: call count, the optimizer passed, and their effect) and the global
``register_optimizer_step_pre_hook``/``post_hook``; ``zero_grad(set_to_none=False/True)``
(gradients after each call); ``add_param_group`` after 3 steps; changing ``param_groups[i]["lr"]``
in place; ``opt.state[p]`` reads, membership and writes; ``repr`` (the wrapped optimizer's repr,
verbatim, inside the wrapper's).  A second table runs, on each optimizer's default configuration
(and its foreach / fused / tensor-lr variants), every class of ``torch.optim.lr_scheduler.__all__``,
``swa_utils.SWALR`` and ``swa_utils.AveragedModel`` (plain and EMA) for 10 steps, comparing the
learning rates returned by ``get_last_lr()`` after every step as well as parameters and state.

The output states the torch version and the commit of the ``amal_verified`` source that was imported
(``git rev-parse --short HEAD``, ``+dirty`` when tracked files differ from it).  Paths in error
messages are written relative to their package, memory addresses are masked.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import math
import pickle
import re
import struct
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

import amal_verified as av

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks"
QUICK_OUT = ROOT / "build" / "optimizer_matrix-quick"
STEM = "optimizer_matrix"

SEED = 0
STEPS = 10
SOURCE = "real-env"
AUX_SOURCE = "aux-probe"

Status = Literal["PASS", "FAIL", "N/A"]
ModelKind = Literal["mlp", "mlp-nobias", "mlp-nonleaf", "mlp-nobias-nonleaf", "embedding"]
Obs = dict[str, Any]

QUICK_ROWS = (
    "Adam: default",
    "Adam: default & foreach",
    "Adam: default & fused",
    "SGD: default",
    "LBFGS: default",
    "SparseAdam: default",
    "Adam: default & differentiable",
)
QUICK_SCHEDULER_ROWS = ("Adam: default", "SGD: default")
# The configurations of each optimizer the scheduler table runs on (besides its first tensor-lr one).
SCHEDULER_DESCS = ("default", "default & foreach", "default & fused")


# -- rows --------------------------------------------------------------------------------------------


@dataclass
class Config:
    """One optimizer configuration (a row)."""

    optimizer: str
    desc: str
    kwargs: dict[str, Any]
    optim_cls: type[torch.optim.Optimizer]
    requires_closure: bool
    kinds: tuple[ModelKind, ...]
    origin: str

    @property
    def name(self) -> str:
        return f"{self.optimizer}: {self.desc}"


def _import_optim_db() -> list[Any]:
    """torch's optimizer database (needs ``expecttest``).

    Importing ``common_utils`` calls ``torch.backends.disable_global_flags()``; that side effect is
    undone so that the rest of the process (a pytest session) is unaffected.
    """
    frozen = torch.backends.flags_frozen()
    from torch.testing._internal.common_optimizers import optim_db

    if not frozen:
        setattr(torch.backends, "__allow_nonbracketed_mutation_flag", True)  # the module global it cleared
    return list(optim_db)


def configurations() -> list[Config]:
    """Every row of the main table, in optim_db order."""
    rows: list[Config] = []
    for info in _import_optim_db():
        kinds: tuple[ModelKind, ...] = (
            ("embedding",) if info.only_supports_sparse_grads else ("mlp", "mlp-nobias")
        )

        def add(
            desc: str,
            kwargs: dict[str, Any],
            origin: str,
            kinds: tuple[ModelKind, ...] = kinds,
            info: Any = info,
        ) -> None:
            if kwargs.get("differentiable") and kinds == ("mlp", "mlp-nobias"):
                kinds = ("mlp-nonleaf", "mlp-nobias-nonleaf")
            rows.append(
                Config(
                    optimizer=info.name,
                    desc=desc,
                    kwargs=kwargs,
                    optim_cls=info.optim_cls,
                    requires_closure=bool(info.step_requires_closure),
                    kinds=kinds,
                    origin=origin,
                )
            )

        impls = [
            flag
            for flag in info.supported_impls
            if flag in ("differentiable", "foreach") or (flag == "fused" and "cpu" in info.supports_fused_on)
        ]
        db_flags = [flag for flag in impls if flag != "foreach"]  # torch's helper, on CPU
        for index, optim_input in enumerate(info.optim_inputs_func(device="cpu", dtype=torch.float32)):
            base = copy.deepcopy(optim_input.kwargs)
            for flag in db_flags:
                base[flag] = False
            add(optim_input.desc, base, "optim_db")
            for flag in impls:
                variant = {**copy.deepcopy(base), flag: True}
                origin = "optim_db" if flag in db_flags else "optim_db + foreach=True"
                add(f"{optim_input.desc} & {flag}", variant, origin)
            if index == 0 and info.has_capturable_arg:
                add(
                    f"{optim_input.desc} & capturable",
                    {**copy.deepcopy(base), "capturable": True},
                    "capturable",
                )
                if "fused" in impls:
                    fused_capturable = {**copy.deepcopy(base), "fused": True, "capturable": True}
                    add(f"{optim_input.desc} & fused & capturable", fused_capturable, "capturable")
        if info.supports_sparse and not info.only_supports_sparse_grads:
            sparse_kwargs = copy.deepcopy(info.metadata_for_sparse[0])
            add("sparse grads", sparse_kwargs, "metadata_for_sparse", ("embedding",))
    seen: dict[str, int] = {}
    for row in rows:
        seen[row.name] = seen.get(row.name, 0) + 1
        if seen[row.name] > 1:
            row.desc = f"{row.desc} #{seen[row.name]}"
    return rows


# -- models, data, one side of a comparison -----------------------------------------------------------


class TwoTables(nn.Module):
    """Two sparse embedding tables (sparse gradients for every parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Embedding(16, 4, sparse=True)
        self.b = nn.Embedding(16, 4, sparse=True)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.a(idx) + self.b(idx))


class NonLeafMLP(nn.Module):
    """The MLP run on non-leaf copies of its parameters (``tensors``, gradients retained).

    A ``differentiable=True`` optimizer updates its parameters in place with autograd on, which
    PyTorch refuses for a leaf that requires grad: such optimizers step non-leaf tensors (as in
    torch's own differentiable-optimizer tests).  Every backward keeps the graph, which runs through
    the previous steps.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.names = [name for name, _ in net.named_parameters()]
        self.tensors = [p.clone() for p in net.parameters()]  # a list attribute: not registered
        for t in self.tensors:
            t.retain_grad()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.func.functional_call(
            self.net, dict(zip(self.names, self.tensors, strict=True)), (x,)
        )
        return out


def make_model(kind: ModelKind) -> nn.Module:
    torch.manual_seed(SEED)
    if kind == "embedding":
        return TwoTables()
    bias = not kind.startswith("mlp-nobias")
    net = nn.Sequential(nn.Linear(4, 8, bias=bias), nn.Tanh(), nn.Linear(8, 3, bias=bias))
    return NonLeafMLP(net) if kind.endswith("-nonleaf") else net


def params_of(model: nn.Module) -> list[torch.Tensor]:
    """The tensors the optimizer steps: the model's parameters, or a NonLeafMLP's tensors."""
    if isinstance(model, NonLeafMLP):
        return list(model.tensors)
    return list(model.parameters())


def make_data(kind: ModelKind) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(SEED + 1)
    if kind == "embedding":
        return torch.randint(0, 16, (8, 3), generator=g), torch.randn(8, 3, 4, generator=g)
    return torch.randn(8, 4, generator=g), torch.randn(8, 3, generator=g)


@dataclass
class Side:
    """A model, the optimizer the user holds (plain or gated) and a fixed batch."""

    gated: bool
    model: nn.Module
    opt: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    requires_closure: bool
    set_to_none: bool = True

    @property
    def inner(self) -> torch.optim.Optimizer:
        """The torch optimizer itself (the wrapped one on the gated side)."""
        if isinstance(self.opt, av.GatedOptimizer):
            return self.opt.original_optimizer
        return self.opt

    @property
    def params(self) -> list[torch.Tensor]:
        return params_of(self.model)

    def loss(self) -> torch.Tensor:
        return F.mse_loss(self.model(self.x), self.y)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward(retain_graph=isinstance(self.model, NonLeafMLP))

    def closure(self) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=self.set_to_none)
        loss = self.loss()
        self.backward(loss)
        return loss

    def step(self) -> torch.Tensor:
        if self.requires_closure:
            out: torch.Tensor = step_with_closure(self.opt, self.closure)
            return out
        loss = self.closure()
        self.opt.step()
        return loss

    def train(self, n: int) -> list[Any]:
        return [snap(self.step()) for _ in range(n)]

    def derive(self, model: nn.Module, opt: torch.optim.Optimizer) -> Side:
        return dataclasses.replace(self, model=model, opt=opt)


def step_with_closure(opt: torch.optim.Optimizer, closure: Callable[[], torch.Tensor]) -> Any:
    """``opt.step(closure)`` (torch annotates closures as returning float; they return the loss tensor)."""
    return opt.step(closure)  # type: ignore[arg-type]


class Builder(Protocol):
    def __call__(self, role: str, *, params: Literal["all", "first"] = "all") -> Side: ...


def make_side(cfg: Config, kind: ModelKind, gated: bool, params: Literal["all", "first"] = "all") -> Side:
    model = make_model(kind)
    x, y = make_data(kind)
    if gated:
        x, y = av.primary(x, source=SOURCE), av.primary(y, source=SOURCE)
    plist = params_of(model)
    if params == "first":
        plist = plist[: len(plist) // 2]
    opt: torch.optim.Optimizer = cfg.optim_cls(plist, **copy.deepcopy(cfg.kwargs))
    if gated:
        opt = av.GatedOptimizer(opt, names=model)
    return Side(gated, model, opt, x, y, cfg.requires_closure)


# -- observing and comparing ---------------------------------------------------------------------------

_tagged_paths: list[str] = []


def snap(value: Any, path: str = "") -> Any:
    """A detached copy of ``value`` (tensors cloned, tagged tensors unwrapped and noted)."""
    if isinstance(value, torch.Tensor):
        if isinstance(value, av.TaggedTensor):
            _tagged_paths.append(path or "<value>")
            value = value.elem
        value = value.detach()
        if value.is_sparse:
            return value.coalesce().clone()
        return value.clone()
    if isinstance(value, dict):
        return {k: snap(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [snap(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    return value


def state_of(side: Side) -> Obs:
    params = snap(side.params, "params")
    return {"params": params, "optimizer": snap(side.inner.state_dict(), "optimizer")}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def _tensor_diff(a: torch.Tensor, b: torch.Tensor, path: str) -> str | None:
    if a.layout != b.layout or a.dtype != b.dtype or a.shape != b.shape:
        gated, plain = f"{b.dtype} {tuple(b.shape)} {b.layout}", f"{a.dtype} {tuple(a.shape)} {a.layout}"
        return f"{path}: gated {gated}, plain {plain}"
    if a.is_sparse:
        return _tensor_diff(a._indices(), b._indices(), f"{path} (indices)") or _tensor_diff(
            a._values(), b._values(), f"{path} (values)"
        )
    if a.numel() == 0:
        return None
    ab, bb = _bits(a), _bits(b)
    if torch.equal(ab, bb):
        return None
    per_element = (ab.reshape(a.numel(), -1) != bb.reshape(b.numel(), -1)).any(dim=1)
    count = int(per_element.sum())
    delta = (a.reshape(-1).double() - b.reshape(-1).double()).abs()[per_element]
    worst = float(delta.max()) if delta.numel() else math.nan
    return f"{path}: {count}/{a.numel()} elements differ (max |Δ| {worst:.2g})"


def diff(a: Any, b: Any, path: str = "") -> str | None:
    """The first difference between plain observation ``a`` and gated observation ``b``, or None."""
    where = path or "<root>"
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return f"{where}: gated {type(b).__name__}, plain {type(a).__name__}"
        return _tensor_diff(a, b, where)
    if isinstance(a, float) and isinstance(b, float):
        if struct.pack("<d", a) == struct.pack("<d", b):
            return None
        return f"{where}: gated {b!r}, plain {a!r}"
    if type(a) is not type(b):
        return f"{where}: gated {type(b).__name__} {_short(b)}, plain {type(a).__name__} {_short(a)}"
    if isinstance(a, dict):
        if list(a) != list(b):
            missing = [k for k in a if k not in b]
            extra = [k for k in b if k not in a]
            return f"{where}: gated lacks keys {missing}, has extra {extra}"
        for k in a:
            found = diff(a[k], b[k], f"{path}.{k}" if path else str(k))
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: gated has {len(b)} entries, plain {len(a)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = diff(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    if a != b:
        return f"{where}: gated {_short(b)}, plain {_short(a)}"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- results -----------------------------------------------------------------------------------------


@dataclass
class Cell:
    status: Status
    reason: str = ""
    error_type: str | None = None
    error_message: str | None = None
    raised_at: str | None = None
    amal_frame: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Empty fields left out, except that an exception always has its type and message line."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, "", [])}
        if self.error_type is not None:
            out["error_message"] = self.error_message or ""
        return out


class GateLost(Exception):
    """The gated optimizer stepped (or changed parameters) on an auxiliary-labelled gradient."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
_ABS_PATH = re.compile(r"(?<![\w.])/(?:[\w.+-]+/)+[\w.+-]+")


def relative_path(filename: str) -> str:
    """A source file's path from its package directory (never a machine path)."""
    parts = Path(filename).parts
    for anchor in ("amal_verified", "torch", "benchmarks", "tests"):
        if anchor in parts:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            return "/".join(parts[i:])
    return Path(filename).name


def scrub(text: str) -> str:
    text = _ANSI.sub("", text)
    text = _ADDRESS.sub("0x…", text)
    return _ABS_PATH.sub(lambda m: relative_path(m.group(0)), text)


def first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return scrub(lines[0].strip()) if lines else ""


def _frames(exc: BaseException) -> tuple[str | None, str | None]:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return None, None
    last = frames[-1]
    raised_at = f"{relative_path(last.filename)}:{last.lineno} ({last.name})"
    amal = [f for f in frames if "amal_verified" in Path(f.filename).parts]
    amal_frame = f"{relative_path(amal[-1].filename)}:{amal[-1].lineno} ({amal[-1].name})" if amal else None
    return raised_at, (amal_frame if amal_frame != raised_at else None)


def detail_line(exc: BaseException) -> str | None:
    """A later message line naming amal_verified (torch.load's explanation comes after its first line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines[1:]:
        if "amal_verified" in line:
            sentence = line.split(". ")[0]
            return scrub(sentence if len(sentence) <= 200 else sentence[:199] + "…")
    return None


def _exc_summary(exc: BaseException) -> str:
    message = detail_line(exc) or first_line(exc)
    name = type(exc).__name__
    return f"{name}: {message}" if message else f"{name} (no message)"


def cell_from_exception(status: Status, exc: BaseException, prefix: str = "") -> Cell:
    raised_at, amal_frame = _frames(exc)
    return Cell(
        status=status,
        reason=prefix + _exc_summary(exc),
        error_type=type(exc).__name__,
        error_message=first_line(exc),
        raised_at=raised_at,
        amal_frame=amal_frame,
    )


# -- the gate probe ------------------------------------------------------------------------------------


def _untouched(side: Side) -> Obs:
    """What a refused step must leave as it was: parameters, gradients, the wrapped optimizer's state."""
    params = side.params
    return {
        "params": snap(params),
        "grads": snap([p.grad for p in params]),
        "optimizer": snap(side.inner.state_dict()),
        "state_size": len(side.inner.state),
    }


def expect_refusal(side: Side, step: Callable[[], Any], grads: Callable[[], Any] | None = None) -> None:
    """``step()`` must raise IsolationViolation and change nothing (``grads``: the gradients it must
    leave, when ``step`` computes them itself, as ``step(closure)`` does)."""
    before = _untouched(side)
    try:
        step()
    except av.IsolationViolation:
        pass
    except Exception as exc:
        raise GateLost(f"gate lost: a step on aux gradients raised {_exc_summary(exc)}") from exc
    else:
        raise GateLost("gate lost: a step on aux-labelled gradients was not refused")
    after = _untouched(side)
    if grads is not None:
        before["grads"] = grads()
    found = diff(before, after)
    if found is not None:
        raise GateLost(f"refusal not atomic: {scrub(found)}")


def probe_gate(side: Side, params: Sequence[torch.Tensor] | None = None) -> None:
    """On a gated side: a step on aux-labelled gradients of ``params`` must be refused, changing nothing."""
    if not side.gated:
        return
    targets = list(params) if params is not None else side.params
    for p in targets:
        p.grad = av.aux(torch.ones_like(p.detach()), source=AUX_SOURCE)

    def closure() -> torch.Tensor:
        return torch.zeros(())

    if side.requires_closure:
        expect_refusal(side, lambda: step_with_closure(side.opt, closure))
    else:
        expect_refusal(side, side.opt.step)


def refuse_aux_derived_step(side: Side) -> None:
    """On a gated side: gradients of a loss computed from auxiliary inputs are refused atomically."""
    if not side.gated:
        return
    x_aux = av.aux(
        side.x.elem.clone() if isinstance(side.x, av.TaggedTensor) else side.x.clone(), source=AUX_SOURCE
    )

    def aux_loss() -> torch.Tensor:
        return F.mse_loss(side.model(x_aux), side.y)

    if not side.requires_closure:
        side.opt.zero_grad(set_to_none=side.set_to_none)
        side.backward(aux_loss())
        expect_refusal(side, side.opt.step)
        return
    computed: list[Any] = []

    def closure() -> torch.Tensor:
        side.opt.zero_grad(set_to_none=side.set_to_none)
        loss = aux_loss()
        side.backward(loss)
        computed.append(snap([p.grad for p in side.params]))
        return loss

    expect_refusal(side, lambda: step_with_closure(side.opt, closure), lambda: computed[-1])


# -- scenarios -----------------------------------------------------------------------------------------

Scenario = Callable[[Builder], Obs]


def sc_steps(build: Builder) -> Obs:
    s = build("main")
    obs = {"losses": s.train(STEPS), **state_of(s)}
    probe_gate(s)
    return obs


def sc_refusal(build: Builder) -> Obs:
    """Aux-derived gradients refused on a fresh optimizer and after a step; zero_grad, then clean steps."""
    s = build("main")
    refuse_aux_derived_step(s)
    s.opt.zero_grad()
    losses = [snap(s.step())]
    refuse_aux_derived_step(s)
    s.opt.zero_grad()
    losses += s.train(STEPS - 1)
    obs = {"losses": losses, **state_of(s)}
    probe_gate(s)
    return obs


def sc_closure(build: Builder) -> Obs:
    s = build("main")
    returned = [snap(step_with_closure(s.opt, s.closure)) for _ in range(STEPS)]
    obs = {"returned": returned, **state_of(s)}
    probe_gate(s)
    return obs


def sc_grad_scaler(unscale_and_clip: bool) -> Scenario:
    def scenario(build: Builder) -> Obs:
        s = build("main")
        scaler = torch.amp.GradScaler("cpu")
        losses = []
        for _ in range(STEPS):
            s.opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = s.loss()
            s.backward(scaler.scale(loss))
            if unscale_and_clip:
                scaler.unscale_(s.opt)
                torch.nn.utils.clip_grad_norm_(s.params, 1.0)
            scaler.step(s.opt)
            scaler.update()
            losses.append(snap(loss))
        return {"losses": losses, "scaler": snap(scaler.state_dict()), **state_of(s)}

    return scenario


def _load_scenario(through_file: bool) -> Scenario:
    def scenario(build: Builder) -> Obs:
        src = build("source")
        src.train(5)
        if through_file:
            buffer = io.BytesIO()
            torch.save(src.opt.state_dict(), buffer)
            buffer.seek(0)
            saved = torch.load(buffer, weights_only=True)
        else:
            saved = copy.deepcopy(src.opt.state_dict())
        dst = build("target")
        dst.model.load_state_dict(src.model.state_dict())
        with torch.no_grad():
            for mine, theirs in zip(dst.params, src.params, strict=True):
                mine.copy_(theirs)  # a NonLeafMLP's tensors are not in its state_dict
        dst.opt.load_state_dict(saved)
        loaded = snap(dst.opt.state_dict(), "loaded")
        obs = {
            "loaded": loaded,
            "source_losses": src.train(5),
            "target_losses": dst.train(5),
            "source": state_of(src),
            "target": state_of(dst),
        }
        probe_gate(dst)
        return obs

    return scenario


def _copy_scenario(duplicate: Callable[[Any], Any]) -> Scenario:
    def scenario(build: Builder) -> Obs:
        s = build("main")
        s.train(3)
        model, opt = duplicate((s.model, s.opt))
        c = s.derive(model, opt)
        obs = {"copy_losses": c.train(4), "copy": state_of(c)}
        obs |= {"original_losses": s.train(3), "original": state_of(s)}
        probe_gate(c)
        probe_gate(s)
        return obs

    return scenario


def _pickle_round_trip(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value))


HookKind = Literal["step_pre", "step_post", "state_dict_pre", "state_dict_post", "load_pre", "load_post"]


def sc_hook(kind: HookKind) -> Scenario:
    """One hook registered on the optimizer the user holds; fired by steps, state_dict and load."""

    def scenario(build: Builder) -> Obs:
        s = build("main")
        opt = s.opt
        calls: list[tuple[Any, ...]] = []

        def on_step(o: Any, args: Any, kwargs: Any) -> None:
            calls.append((kind, o is opt, len(args), sorted(kwargs)))

        def on_state_dict_pre(o: Any) -> None:
            calls.append((kind, o is opt))

        def on_state_dict_post(o: Any, sd: dict[str, Any]) -> None:
            calls.append((kind, o is opt, sorted(sd)))
            sd["amal_matrix_post_hook"] = True

        def on_load_pre(o: Any, sd: dict[str, Any]) -> dict[str, Any]:
            calls.append((kind, o is opt, sorted(sd)))
            edited = dict(sd)
            edited["param_groups"] = [{**g, "amal_matrix_load_pre_hook": True} for g in sd["param_groups"]]
            return edited

        def on_load_post(o: Any) -> None:
            calls.append((kind, o is opt))

        if kind == "step_pre":
            handle = opt.register_step_pre_hook(on_step)
        elif kind == "step_post":
            handle = opt.register_step_post_hook(on_step)
        elif kind == "state_dict_pre":
            handle = opt.register_state_dict_pre_hook(on_state_dict_pre)
        elif kind == "state_dict_post":
            handle = opt.register_state_dict_post_hook(on_state_dict_post)
        elif kind == "load_pre":
            handle = opt.register_load_state_dict_pre_hook(on_load_pre)
        else:
            handle = opt.register_load_state_dict_post_hook(on_load_post)
        s.train(2)
        sd = opt.state_dict()
        keys = sorted(sd)
        opt.load_state_dict(copy.deepcopy(sd))
        marked = [bool(g.get("amal_matrix_load_pre_hook")) for g in opt.param_groups]
        s.train(2)
        handle.remove()
        s.train(1)
        opt.state_dict()
        return {"hook_calls": calls, "state_dict_keys": keys, "load_pre_hook_effect": marked, **state_of(s)}

    return scenario


def sc_global_step_hooks(build: Builder) -> Obs:
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    s = build("main")
    calls: list[tuple[str, bool]] = []
    pre = register_optimizer_step_pre_hook(lambda o, a, k: calls.append(("pre", o is s.opt)))
    post = register_optimizer_step_post_hook(lambda o, a, k: calls.append(("post", o is s.opt)))
    try:
        s.train(3)
    finally:
        pre.remove()
        post.remove()
    return {"global_hook_calls": calls, **state_of(s)}


def sc_zero_grad(set_to_none: bool) -> Scenario:
    def scenario(build: Builder) -> Obs:
        s = build("main")
        s.set_to_none = set_to_none
        grads = []
        for _ in range(STEPS):
            s.step()
            s.opt.zero_grad(set_to_none=set_to_none)
            grads.append(snap([p.grad for p in s.params], "grads"))
        return {"grads_after_zero_grad": grads, **state_of(s)}

    return scenario


def sc_add_param_group(build: Builder) -> Obs:
    s = build("main", params="first")
    s.train(3)
    held = {id(p) for group in s.opt.param_groups for p in group["params"]}
    rest = [p for p in s.params if id(p) not in held]
    s.opt.add_param_group({"params": rest})
    obs = {"losses": s.train(STEPS - 3), "groups": len(s.opt.param_groups), **state_of(s)}
    probe_gate(s, rest)
    return obs


def sc_lr_edit(build: Builder) -> Obs:
    s = build("main")
    s.train(3)
    for group in s.opt.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].mul_(0.5)
        else:
            group["lr"] = group["lr"] * 0.5
    return {"losses": s.train(STEPS - 3), **state_of(s)}


def sc_state_access(build: Builder) -> Obs:
    s = build("main")
    s.train(3)
    params = s.params
    per_param = [snap(dict(s.opt.state[p]), f"state[{i}]") for i, p in enumerate(params)]
    contained = [p in s.opt.state for p in params]
    size = len(s.opt.state)
    s.opt.state[params[0]]["amal_matrix_marker"] = 1.5
    marker = s.opt.state_dict()["state"].get(0, {}).get("amal_matrix_marker")
    losses = s.train(2)
    return {
        "per_param": per_param,
        "contained": contained,
        "size": size,
        "marker": marker,
        "losses": losses,
        **state_of(s),
    }


def sc_repr(build: Builder) -> Obs:
    s = build("main")
    s.train(2)
    inner, outer = repr(s.inner), repr(s.opt)
    return {"wrapped_repr": inner, "wrapped_repr_shown_verbatim": inner in outer}


# -- LR schedulers ------------------------------------------------------------------------------------


def _lr0(opt: torch.optim.Optimizer) -> float:
    return float(opt.param_groups[0]["lr"])


def _cycles_momentum(opt: torch.optim.Optimizer) -> bool:
    return "momentum" in opt.defaults or "betas" in opt.defaults


def scheduler_constructors() -> dict[str, Callable[[torch.optim.Optimizer], Any]]:
    from torch.optim import lr_scheduler as L
    from torch.optim import swa_utils

    return {
        "LambdaLR": lambda o: L.LambdaLR(o, lambda epoch: 0.9**epoch),
        "MultiplicativeLR": lambda o: L.MultiplicativeLR(o, lambda epoch: 0.95),
        "StepLR": lambda o: L.StepLR(o, step_size=3, gamma=0.5),
        "MultiStepLR": lambda o: L.MultiStepLR(o, milestones=[2, 5, 8], gamma=0.5),
        "ConstantLR": lambda o: L.ConstantLR(o, factor=0.5, total_iters=4),
        "LinearLR": lambda o: L.LinearLR(o, start_factor=0.25, total_iters=6),
        "ExponentialLR": lambda o: L.ExponentialLR(o, gamma=0.9),
        "SequentialLR": lambda o: L.SequentialLR(
            o, [L.ConstantLR(o, factor=0.5, total_iters=3), L.ExponentialLR(o, gamma=0.9)], milestones=[3]
        ),
        "CosineAnnealingLR": lambda o: L.CosineAnnealingLR(o, T_max=STEPS),
        "ChainedScheduler": lambda o: L.ChainedScheduler(
            [L.StepLR(o, step_size=3, gamma=0.5), L.ExponentialLR(o, gamma=0.9)], optimizer=o
        ),
        "ReduceLROnPlateau": lambda o: L.ReduceLROnPlateau(o, mode="max", factor=0.5, patience=1),
        "CyclicLR": lambda o: L.CyclicLR(
            o,
            base_lr=_lr0(o) / 10,
            max_lr=_lr0(o),
            step_size_up=3,
            cycle_momentum=_cycles_momentum(o),
        ),
        "CosineAnnealingWarmRestarts": lambda o: L.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2),
        "OneCycleLR": lambda o: L.OneCycleLR(
            o, max_lr=_lr0(o), total_steps=STEPS + 2, cycle_momentum=_cycles_momentum(o)
        ),
        "PolynomialLR": lambda o: L.PolynomialLR(o, total_iters=8, power=2.0),
        "SWALR": lambda o: swa_utils.SWALR(o, swa_lr=_lr0(o) / 2, anneal_epochs=3),
    }


def sc_scheduler(name: str) -> Scenario:
    def scenario(build: Builder) -> Obs:
        s = build("main")
        sched = scheduler_constructors()[name](s.opt)
        lrs = []
        for _ in range(STEPS):
            loss = s.step()
            if name == "ReduceLROnPlateau":
                sched.step(loss)
            else:
                sched.step()
            lrs.append(snap(sched.get_last_lr(), "lrs"))
        group_lrs = snap([g["lr"] for g in s.opt.param_groups], "group_lrs")
        return {"lrs": lrs, "group_lrs": group_lrs, **state_of(s)}

    return scenario


def sc_averaged_model(ema: bool) -> Scenario:
    def scenario(build: Builder) -> Obs:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        s = build("main")
        averaged = AveragedModel(s.model, multi_avg_fn=get_ema_multi_avg_fn(0.9) if ema else None)
        for _ in range(STEPS):
            s.step()
            averaged.update_parameters(s.model)
        return {
            "averaged": snap(list(averaged.parameters()), "averaged"),
            "n_averaged": snap(averaged.n_averaged),
            **state_of(s),
        }

    return scenario


# -- features -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    key: str
    title: str
    group: str
    what: str
    scenario: Scenario | None
    gated_roles: frozenset[str] = frozenset({"main"})


MAIN = frozenset({"main"})

FEATURES: tuple[Feature, ...] = (
    Feature("steps", "10 steps", "Training", "10 steps; parameters, state and losses", sc_steps),
    Feature("closure", "step(closure)", "Training", "10 × step(closure); returned losses too", sc_closure),
    Feature(
        "refusal",
        "atomic refusal",
        "Training",
        "gradients of a loss on av.aux inputs: step refused (IsolationViolation) on the fresh optimizer "
        "and after 1 step, parameters, gradients and state bit-identical; zero_grad, 9 clean steps",
        sc_refusal,
    ),
    Feature(
        "grad_scaler_clip",
        "GradScaler+clip",
        "Training",
        "bf16 autocast, scale(loss).backward, unscale_, clip_grad_norm_, scaler.step, update",
        sc_grad_scaler(True),
    ),
    Feature(
        "grad_scaler",
        "GradScaler",
        "Training",
        "the same without unscale_ and clipping (fused optimizers unscale in-kernel)",
        sc_grad_scaler(False),
    ),
    Feature(
        "load_plain_into_gated",
        "sd plain→gated",
        "Checkpointing",
        "plain.state_dict() loaded into a fresh gated optimizer; 5 more steps each",
        _load_scenario(False),
        frozenset({"target"}),
    ),
    Feature(
        "load_gated_into_plain",
        "sd gated→plain",
        "Checkpointing",
        "gated.state_dict() loaded into a fresh plain optimizer; 5 more steps each",
        _load_scenario(False),
        frozenset({"source"}),
    ),
    Feature(
        "save_load",
        "save/load",
        "Checkpointing",
        "torch.save(opt.state_dict()), torch.load(weights_only=True) into a fresh gated optimizer",
        _load_scenario(True),
        frozenset({"source", "target"}),
    ),
    Feature(
        "deepcopy",
        "deepcopy",
        "Checkpointing",
        "copy.deepcopy((model, opt)); the copy steps, then the original",
        _copy_scenario(copy.deepcopy),
    ),
    Feature(
        "pickle",
        "pickle",
        "Checkpointing",
        "pickle.loads(pickle.dumps((model, opt))); the copy steps, then the original",
        _copy_scenario(_pickle_round_trip),
    ),
    Feature("step_pre_hook", "step pre", "Hooks", "opt.register_step_pre_hook", sc_hook("step_pre")),
    Feature("step_post_hook", "step post", "Hooks", "opt.register_step_post_hook", sc_hook("step_post")),
    Feature(
        "state_dict_pre_hook",
        "sd pre",
        "Hooks",
        "opt.register_state_dict_pre_hook",
        sc_hook("state_dict_pre"),
    ),
    Feature(
        "state_dict_post_hook",
        "sd post",
        "Hooks",
        "opt.register_state_dict_post_hook (its edit of the dict must show)",
        sc_hook("state_dict_post"),
    ),
    Feature(
        "load_state_dict_pre_hook",
        "load pre",
        "Hooks",
        "opt.register_load_state_dict_pre_hook (the dict it returns must be loaded)",
        sc_hook("load_pre"),
    ),
    Feature(
        "load_state_dict_post_hook",
        "load post",
        "Hooks",
        "opt.register_load_state_dict_post_hook",
        sc_hook("load_post"),
    ),
    Feature(
        "global_step_hooks",
        "global step",
        "Hooks",
        "torch.optim.optimizer.register_optimizer_step_pre_hook / _post_hook: calls per user step",
        sc_global_step_hooks,
    ),
    Feature(
        "zero_grad_false",
        "zero_grad(False)",
        "API",
        "zero_grad(set_to_none=False) everywhere; gradients after each call",
        sc_zero_grad(False),
    ),
    Feature(
        "zero_grad_true",
        "zero_grad(True)",
        "API",
        "zero_grad(set_to_none=True) everywhere; gradients after each call",
        sc_zero_grad(True),
    ),
    Feature(
        "add_param_group",
        "add_param_group",
        "API",
        "optimizer over the first half of the parameters, add_param_group(rest) after 3 steps",
        sc_add_param_group,
    ),
    Feature(
        "lr_edit",
        "lr edit",
        "API",
        "param_groups[i]['lr'] halved in place after 3 steps",
        sc_lr_edit,
    ),
    Feature(
        "state_access",
        "state[p]",
        "API",
        "opt.state[p] values, `p in opt.state`, len, a written entry shows in state_dict()",
        sc_state_access,
    ),
    Feature("repr", "repr", "API", "repr(opt) shows repr(wrapped optimizer) verbatim", sc_repr),
)


def scheduler_features() -> tuple[Feature, ...]:
    from torch.optim import lr_scheduler

    constructors = scheduler_constructors()
    found: list[Feature] = []
    for name in lr_scheduler.__all__:
        if name == "LRScheduler":
            continue
        scenario = sc_scheduler(name) if name in constructors else None
        found.append(Feature(name, name, "LR schedulers", f"lr_scheduler.{name}", scenario))
    found.append(Feature("SWALR", "SWALR", "SWA", "swa_utils.SWALR", sc_scheduler("SWALR")))
    found.append(
        Feature("AveragedModel", "AveragedModel", "SWA", "swa_utils.AveragedModel", sc_averaged_model(False))
    )
    found.append(
        Feature(
            "AveragedModel_ema",
            "AveragedModel(EMA)",
            "SWA",
            "AveragedModel(multi_avg_fn=get_ema_multi_avg_fn(0.9))",
            sc_averaged_model(True),
        )
    )
    return tuple(found)


# -- running ------------------------------------------------------------------------------------------


@dataclass
class Observed:
    obs: Obs
    warnings: list[str]
    tagged: list[str]


def observe(scenario: Scenario, build: Builder) -> Observed:
    """Run ``scenario``, recording every warning (torch's warn-once ones included)."""
    _tagged_paths.clear()
    warn_always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            obs = scenario(build)
    finally:
        torch.set_warn_always(warn_always)
    messages = [f"{w.category.__name__}: {scrub(str(w.message).splitlines()[0])}" for w in caught]
    return Observed(obs, messages, list(dict.fromkeys(_tagged_paths)))


# Snapshot paths of optimizer state (see the scenarios): a TaggedTensor there is noted.
_STATE_PATHS = ("optimizer", "loaded", "state[")


def run_check(cfg: Config, kind: ModelKind, feature: Feature) -> Cell:
    scenario = feature.scenario
    if scenario is None:
        return Cell("N/A", reason="no generic constructor in this script for this class")

    def plain_build(role: str, *, params: Literal["all", "first"] = "all") -> Side:
        return make_side(cfg, kind, False, params)

    def gated_build(role: str, *, params: Literal["all", "first"] = "all") -> Side:
        return make_side(cfg, kind, role in feature.gated_roles, params)

    try:
        ref = observe(scenario, plain_build)
    except Exception as exc:
        return cell_from_exception("N/A", exc, "plain torch raises ")
    try:
        test = observe(scenario, gated_build)
    except GateLost as exc:
        cause = exc.__cause__
        cell = Cell("FAIL", reason=str(exc))
        if cause is not None:
            cell.error_type, cell.error_message = type(cause).__name__, first_line(cause)
            cell.raised_at, cell.amal_frame = _frames(cause)
        return cell
    except Exception as exc:
        return cell_from_exception("FAIL", exc)
    in_state = [p for p in test.tagged if p.startswith(_STATE_PATHS)]
    notes = [f"gated optimizer state holds TaggedTensor at: {', '.join(in_state[:6])}"] if in_state else []
    found = diff(ref.obs, test.obs)
    if found is None and ref.warnings != test.warnings:
        extra = [w for w in test.warnings if w not in ref.warnings]
        missing = [w for w in ref.warnings if w not in test.warnings]
        found = f"warnings: gated adds {extra}, lacks {missing}"
    if found is not None:
        return Cell("FAIL", reason=f"differs from plain: {scrub(found)}", notes=notes)
    return Cell("PASS", notes=notes)


REJECTED = "plain torch rejects this configuration (see the row's rejected_by_plain_torch)"


@dataclass
class Row:
    cfg: Config
    kind: ModelKind | None
    cells: dict[str, Cell]
    rejected: Cell | None = None  # set when plain torch rejects the configuration outright


def choose_model(cfg: Config) -> tuple[ModelKind | None, Cell | None]:
    """The first model on which the plain optimizer takes 10 steps, or the plain error."""
    first_error: Cell | None = None
    for kind in cfg.kinds:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                make_side(cfg, kind, False).train(STEPS)
        except Exception as exc:
            if first_error is None:
                first_error = cell_from_exception("N/A", exc, "plain torch raises ")
            continue
        return kind, None
    return None, first_error


def run_row(cfg: Config, features: Sequence[Feature]) -> Row:
    kind, rejected = choose_model(cfg)
    cells: dict[str, Cell] = {}
    for feature in features:
        cells[feature.key] = Cell("N/A", reason=REJECTED) if kind is None else run_check(cfg, kind, feature)
    return Row(cfg, kind, cells, rejected)


def _progress_line(row: Row, seconds: float) -> str:
    fails = sum(c.status == "FAIL" for c in row.cells.values())
    outcome = "rejected by plain torch" if row.kind is None else f"{fails} FAIL"
    return f"{row.cfg.name}: {outcome} ({seconds:.1f} s)"


def run_rows(
    configs: Iterable[Config], features: Sequence[Feature], progress: Callable[[str], None]
) -> list[Row]:
    rows = []
    for cfg in configs:
        start = time.perf_counter()
        rows.append(run_row(cfg, features))
        progress(_progress_line(rows[-1], time.perf_counter() - start))
    return rows


_worker_configs: dict[str, Config] = {}


def _worker_row(table: Literal["main", "schedulers"], name: str) -> dict[str, Any]:
    """In a worker process: one row, as plain data (the classes of a spawned ``__main__`` do not pickle)."""
    if not _worker_configs:
        torch.set_num_threads(1)
        _worker_configs.update((c.name, c) for c in configurations())
    start = time.perf_counter()
    row = run_row(_worker_configs[name], FEATURES if table == "main" else scheduler_features())
    return {
        "kind": row.kind,
        "rejected": dataclasses.asdict(row.rejected) if row.rejected else None,
        "cells": {key: dataclasses.asdict(cell) for key, cell in row.cells.items()},
        "seconds": time.perf_counter() - start,
    }


def run_tables_in_workers(
    configs: Sequence[Config], sched_configs: Sequence[Config], jobs: int, progress: Callable[[str], None]
) -> tuple[list[Row], list[Row]]:
    """Both tables, rows spread over ``jobs`` spawned processes (closure-driven optimizers first)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    tasks: list[tuple[Literal["main", "schedulers"], Config]] = [("main", c) for c in configs]
    tasks += [("schedulers", c) for c in sched_configs]
    order = sorted(range(len(tasks)), key=lambda i: not tasks[i][1].requires_closure)
    rows: dict[int, Row] = {}
    # A spawned worker unpickles _worker_row by module name, so this file's directory must be on the
    # sys.path it inherits, also when the module was loaded by file path (the report's property).
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.append(here)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(_worker_row, tasks[i][0], tasks[i][1].name): i for i in order}
        for future in as_completed(futures):
            index = futures[future]
            data = future.result()
            rejected = Cell(**data["rejected"]) if data["rejected"] else None
            cells = {key: Cell(**cell) for key, cell in data["cells"].items()}
            rows[index] = Row(tasks[index][1], data["kind"], cells, rejected)
            progress(_progress_line(rows[index], data["seconds"]))
    return [rows[i] for i in range(len(configs))], [rows[i] for i in range(len(configs), len(tasks))]


def scheduler_configs(configs: Sequence[Config]) -> list[Config]:
    chosen: list[Config] = []
    tensor_lr_seen: set[str] = set()
    for cfg in configs:
        if cfg.origin == "metadata_for_sparse":
            continue
        if cfg.desc in SCHEDULER_DESCS:
            chosen.append(cfg)
        elif (
            isinstance(cfg.kwargs.get("lr"), torch.Tensor)
            and cfg.optimizer not in tensor_lr_seen
            and not any(cfg.kwargs.get(flag) for flag in ("differentiable", "fused", "foreach", "capturable"))
        ):
            tensor_lr_seen.add(cfg.optimizer)
            chosen.append(cfg)
    return chosen


# -- provenance and output --------------------------------------------------------------------------


def describe_commit() -> str:
    """Commit of the imported amal_verified source: short hash, ``+dirty`` if tracked files differ."""
    repo = Path(av.__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + ("+dirty" if dirty else "")


def _jsonable_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            out[key] = f"tensor({value.tolist()!r}, dtype={value.dtype})"
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[key] = value
        else:
            out[key] = repr(value)
    return out


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "name": row.cfg.name,
        "optimizer": row.cfg.optimizer,
        "desc": row.cfg.desc,
        "kwargs": _jsonable_kwargs(row.cfg.kwargs),
        "origin": row.cfg.origin,
        "model": row.kind,
        "rejected_by_plain_torch": row.rejected.to_json() if row.rejected else None,
        "cells": {key: cell.to_json() for key, cell in row.cells.items()},
    }


def dump_json(data: dict[str, Any]) -> str:
    """JSON with one line per list item (rows, features): compact, and diffs stay row by row."""

    def encode(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    parts = []
    for key, value in data.items():
        if isinstance(value, list) and value:
            items = ",\n".join(f"  {encode(item)}" for item in value)
            parts.append(f" {encode(key)}: [\n{items}\n ]")
        else:
            parts.append(f" {encode(key)}: {encode(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def counts(rows: Sequence[Row]) -> dict[str, int]:
    found = {"PASS": 0, "FAIL": 0, "N/A": 0}
    for row in rows:
        for cell in row.cells.values():
            found[cell.status] += 1
    return found


@dataclass
class Matrix:
    torch_version: str
    commit: str
    mode: str
    features: tuple[Feature, ...]
    rows: list[Row]
    scheduler_features: tuple[Feature, ...]
    scheduler_rows: list[Row]

    def to_json(self) -> dict[str, Any]:
        def feature_json(f: Feature) -> dict[str, str]:
            return {"key": f.key, "title": f.title, "group": f.group, "what": f.what}

        return {
            "torch": self.torch_version,
            "commit": self.commit,
            "mode": self.mode,
            "python": ".".join(map(str, sys.version_info[:3])),
            "steps": STEPS,
            "features": [feature_json(f) for f in self.features],
            "rows": [_row_json(r) for r in self.rows],
            "scheduler_features": [feature_json(f) for f in self.scheduler_features],
            "scheduler_rows": [_row_json(r) for r in self.scheduler_rows],
            "counts": {
                "main": {"rows": len(self.rows), "features": len(self.features), **counts(self.rows)},
                "schedulers": {
                    "rows": len(self.scheduler_rows),
                    "features": len(self.scheduler_features),
                    **counts(self.scheduler_rows),
                },
            },
        }


def _md_cell(cell: Cell, limit: int = 70) -> str:
    if cell.status == "PASS":
        return "PASS"
    reason = cell.reason if len(cell.reason) <= limit else cell.reason[: limit - 1] + "…"
    return f"{cell.status}: {reason}".replace("|", "\\|")


def _md_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines


def _summary_cell(cells: Sequence[Cell]) -> str:
    runnable = [c for c in cells if c.status != "N/A"]
    fails = [c for c in runnable if c.status == "FAIL"]
    if not runnable:
        return "N/A"
    if not fails:
        return f"PASS {len(runnable)}/{len(runnable)}"
    return f"FAIL {len(fails)}/{len(runnable)}"


def _failure_groups(rows: Sequence[Row], features: Sequence[Feature]) -> list[str]:
    """One bullet per distinct failure reason: where it was raised, which features, how many rows."""
    cells_by_reason: dict[str, list[tuple[Row, Feature, Cell]]] = {}
    for row in rows:
        for feature in features:
            cell = row.cells[feature.key]
            if cell.status == "FAIL":
                cells_by_reason.setdefault(cell.reason, []).append((row, feature, cell))
    lines = []
    for reason, found in sorted(cells_by_reason.items(), key=lambda item: (-len(item[1]), item[0])):
        cell = found[0][2]
        where = f" Raised at `{cell.raised_at}`" if cell.raised_at else ""
        if cell.amal_frame and cell.amal_frame != cell.raised_at:
            where += f", via `{cell.amal_frame}`"
        if where:
            where += "."
        per_feature: dict[str, int] = {}
        for _, feature, _ in found:
            per_feature[feature.title] = per_feature.get(feature.title, 0) + 1
        in_features = ", ".join(f"{title} ({n})" for title, n in per_feature.items())
        names = list(dict.fromkeys(row.cfg.name for row, _, _ in found))
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        lines.append(
            f"- **{reason}** ({len(found)} cells).{where}\n  Features: {in_features}.\n"
            f"  Rows ({len(names)}): {shown}."
        )
    return lines


def render_markdown(m: Matrix) -> str:
    main, sched = counts(m.rows), counts(m.scheduler_rows)
    rejected = [r for r in m.rows if r.rejected is not None]
    runnable = [r for r in m.rows if r.rejected is None]
    out = [
        "# GatedOptimizer drop-in matrix",
        "",
        "Generated by `benchmarks/optimizer_matrix.py` (its docstring says what each check does); do not "
        "edit by hand. Regenerate, after committing, from the repository root with "
        "`PYTHONPATH=. .venv/bin/python benchmarks/optimizer_matrix.py --jobs 2`.",
        "",
        f"- torch **{m.torch_version}**, amal_verified at commit **{m.commit}**"
        + (" (`+dirty`: tracked files differed from that commit)" if m.commit.endswith("+dirty") else ""),
        f"- mode: {m.mode}; every check compares plain torch with `GatedOptimizer` bit for bit over "
        f"{STEPS} steps (or the stated schedule) from identical seeds",
        f"- main table: {len(m.rows)} configurations × {len(m.features)} features = "
        f"{len(m.rows) * len(m.features)} cells: **{main['PASS']} PASS, {main['FAIL']} FAIL, "
        f"{main['N/A']} N/A** ({len(rejected)} configurations rejected by plain torch on CPU count as "
        f"N/A in every column)",
        f"- scheduler table: {len(m.scheduler_rows)} configurations × {len(m.scheduler_features)} "
        f"schedulers = {len(m.scheduler_rows) * len(m.scheduler_features)} cells: **{sched['PASS']} PASS, "
        f"{sched['FAIL']} FAIL, {sched['N/A']} N/A**",
        "",
        "PASS: identical parameters, optimizer state, losses, learning rates, hook calls and warnings, and "
        "(where a gated optimizer is left to step) a step on auxiliary-labelled gradients is still refused. "
        "FAIL: the gated side raised, differed, or lost the gate. N/A: plain torch itself raises there.",
        "",
        "## Summary by optimizer",
        "",
        "`PASS n/n` or `FAIL k/n`: over the optimizer's configurations where plain torch runs the check.",
        "",
    ]
    families = list(dict.fromkeys(r.cfg.optimizer for r in m.rows))
    body = []
    for family in families:
        members = [r for r in runnable if r.cfg.optimizer == family]
        cells = [_summary_cell([r.cells[f.key] for r in members]) for f in m.features]
        body.append([family, str(len(members)), *cells])
    out += _md_table(["optimizer", "configs", *(f.title for f in m.features)], body)
    out += ["", "## Failures, grouped by reason", ""]
    out += _failure_groups(m.rows, m.features) or ["None."]
    out += _failure_groups(m.scheduler_rows, m.scheduler_features)
    for group in dict.fromkeys(f.group for f in m.features):
        features = [f for f in m.features if f.group == group]
        out += ["", f"## {group}", ""]
        out += [f"- **{f.title}**: {f.what}" for f in features]
        out += [""]
        body = [[r.cfg.name, *(_md_cell(r.cells[f.key]) for f in features)] for r in runnable]
        out += _md_table(["configuration", *(f.title for f in features)], body)
    out += ["", "## LR schedulers and SWA", ""]
    out += [
        "Each scheduler is built on the optimizer the user holds and stepped after every optimizer step "
        "(`ReduceLROnPlateau` on the loss tensor, mode max, so it reduces); `get_last_lr()` is compared "
        "after every step. `CyclicLR` and `OneCycleLR` cycle momentum when the optimizer has `momentum` "
        "or `betas`.",
        "",
    ]
    for group in dict.fromkeys(f.group for f in m.scheduler_features):
        features = [f for f in m.scheduler_features if f.group == group]
        body = [[r.cfg.name, *(_md_cell(r.cells[f.key]) for f in features)] for r in m.scheduler_rows]
        out += _md_table(["configuration", *(f.title for f in features)], body)
        out += [""]
    out += ["## Configurations plain torch rejects on CPU (N/A in every column)", ""]
    if rejected:
        body = [[r.cfg.name, r.rejected.reason.replace("|", "\\|") if r.rejected else ""] for r in rejected]
        out += _md_table(["configuration", "plain torch, 10 steps on each model"], body)
    else:
        out += ["None."]
    return "\n".join(out) + "\n"


def _assert_no_machine_paths(text: str) -> None:
    for marker in {str(ROOT), str(Path.home()), "site-packages", sys.prefix}:
        if marker and marker in text:
            raise AssertionError(f"output would contain a machine path ({marker!r})")


def build_matrix(
    quick: bool = False, jobs: int = 1, progress: Callable[[str], None] = lambda _line: None
) -> Matrix:
    """Run the matrix (``jobs`` > 1: in that many worker processes, else in this one)."""
    all_configs = configurations()
    if quick:
        by_name = {c.name: c for c in all_configs}
        configs = [by_name[name] for name in QUICK_ROWS]
        sched_configs = [by_name[name] for name in QUICK_SCHEDULER_ROWS]
    else:
        configs = all_configs
        sched_configs = scheduler_configs(all_configs)
    sched_features = scheduler_features()
    if jobs > 1:
        rows, sched_rows = run_tables_in_workers(configs, sched_configs, jobs, progress)
    else:
        rows = run_rows(configs, FEATURES, progress)
        sched_rows = run_rows(sched_configs, sched_features, progress)
    return Matrix(
        torch_version=torch.__version__,
        commit=describe_commit(),
        mode="quick (--quick subset)" if quick else "full",
        features=FEATURES,
        rows=rows,
        scheduler_features=sched_features,
        scheduler_rows=sched_rows,
    )


def write(matrix: Matrix, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(matrix)
    payload = dump_json(matrix.to_json())
    _assert_no_machine_paths(markdown)
    _assert_no_machine_paths(payload)
    md_path, json_path = out_dir / f"{STEM}.md", out_dir / f"{STEM}.json"
    md_path.write_text(markdown, encoding="utf-8")
    json_path.write_text(payload, encoding="utf-8")
    return md_path, json_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the representative subset (< 30 s)")
    parser.add_argument(
        "--out", type=Path, help=f"output directory (default {DEFAULT_OUT.name}/, quick: build/)"
    )
    parser.add_argument(
        "--jobs", type=int, help="worker processes (default: 1 with --quick, else 2); 1 runs in this process"
    )
    parser.add_argument("--verbose", action="store_true", help="print one line per configuration")
    args = parser.parse_args(argv)
    out_dir: Path = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    start = time.perf_counter()
    jobs: int = args.jobs or (1 if args.quick else 2)
    torch.set_num_threads(1)  # tiny tensors: intra-op threads only add scheduling noise on 2 cores
    matrix = build_matrix(args.quick, jobs, print if args.verbose else lambda _line: None)
    md_path, json_path = write(matrix, out_dir)
    main_counts, sched_counts = counts(matrix.rows), counts(matrix.scheduler_rows)
    print(f"torch {matrix.torch_version}, amal_verified {matrix.commit}, {matrix.mode}")
    print(f"main: {len(matrix.rows)} configurations × {len(matrix.features)} features: {main_counts}")
    print(
        f"schedulers: {len(matrix.scheduler_rows)} configurations × {len(matrix.scheduler_features)}: "
        f"{sched_counts}"
    )
    print(f"wrote {md_path} and {json_path} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
