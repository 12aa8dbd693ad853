"""Theorem 1 on generated training programs: differential noninterference of the torch core.

Hypothesis generates small programs in a DSL of what users' code does around a world model, and
runs each one twice under the gate, with the *same* primary data and *different* auxiliary data
(values chosen by Hypothesis: noise, 0, ±1, ±1e38, NaN, ±Inf, a mix).  Every run builds its
modules from fixed ``torch.Generator`` seeds and runs inside ``torch.random.fork_rng`` seeded
identically (only ``nn.Dropout`` in training mode draws from the global generator, the same number
of times in both runs: shapes never depend on auxiliary values), so the two runs are comparable
bit for bit.

The DSL (:class:`Config` and the step classes below; a failing example prints the program):

- a world model ``wm = head(encoder(x))`` whose encoder stacks blocks drawn from ``Linear``, an
  MLP, ``GRU``, ``BatchNorm1d``, ``LayerNorm``, ``Dropout`` (p = 0 and p = 0.5), ``Identity`` and a
  module that keeps a running normaliser in buffers; gated by ``GatedOptimizer`` (Adam or SGD with
  momentum) with ``names=wm``, so its buffers are protected too;
- a policy with its own head on top of either the world model's encoder (shared) or an encoder of
  its own (same architecture), stepped by a plain Adam or SGD over all its parameters or its head
  only; a target network (a copy of the world model); optionally a standalone observation
  normaliser (running normaliser or ``BatchNorm1d``) used to preprocess the world model's input;
  primary data tagged followed (``av.primary(x)``) or memory only (``av.primary(x, follow=False)``,
  the tensors plain);
- losses (:class:`WMLoss`, :class:`PolicyLoss`, :class:`Imagined`, :class:`Penalty`) on primary
  rows, auxiliary rows, a concatenation of both, the primary rows sliced back out of it, a replay
  tensor written through views, an accumulator, the normaliser's output; world-model targets that
  are primary, auxiliary, distilled from the policy or read from the target network; weights from
  primary or auxiliary rewards; the world model called as one module or as encoder then head, in
  training or evaluation mode; a gradient penalty built with ``create_graph=True``;
- one backward over the sum of the pending losses (:class:`Backward`); gradient surgery with
  ``torch.autograd.grad`` and a branch-free PCGrad projection (:class:`Surgery`); global gradient
  clipping over the world model alone or together with the policy (:class:`Clip`);
- optimizer steps and ``zero_grad`` (:class:`StepWM`, :class:`StepPolicy`, :class:`ZeroGrad`);
  Polyak averaging through ``.data`` or ``torch._foreach_lerp_`` from the world model into the
  target, from the policy into the world model, or a hard reset from the target
  (:class:`Polyak`); writes into buffers and through views (:class:`Write`);
  ``parameters_to_vector``/``vector_to_parameters`` (:class:`ParamVector`); ``param.data = ...``
  (:class:`DataAssign`); ``torch.save``/``torch.load`` round trips (:class:`Checkpoint`); the
  policy optimizer's state handed to the gated optimizer (:class:`ShareState`);
- every run starts with one clean gated step on primary data (the gated optimizer has state); a
  statement that writes parameters, buffers or data in place first runs the pending backward pass
  (as user code must: plain PyTorch refuses a backward pass through memory written since);
- a program is a *scenario* -- one route by which auxiliary data could reach the world model
  (distillation, ``.data`` assignment, ``vector_to_parameters``, optimizer state, the normaliser, a
  policy loss through the shared encoder, the replay tensor, the accumulator, Polyak averaging,
  clipping, a gradient penalty, gradient surgery, a world-model buffer, imagined rollouts), in its
  leaking or its clean variant, or free statements -- among up to three random statements, and
  ends with ``Backward(); StepWM()`` and a final ``gated.check()``: a swap of a parameter's
  memory (``.data =``) is refused at the next gated step, after the fact (README), so a run that
  completes has been checked.

Contract checked per example (:func:`check_program`):

- **soundness**: the two runs either both complete or are both refused (by an
  ``IsolationViolation``: labels never depend on values, so aux *values* must not decide whether
  world-model training stops); when both complete, the world model's parameters, buffers and
  gated optimizer state are bit for bit the same (NaN-aware).  When both are refused and the
  program replaced no object the gate guards (``.data =``, ``vector_to_parameters``, the gated
  optimizer's state dicts: caught at the next step, after the fact), the state at the refusal is
  the same too (refusals are atomic);
- **liveness**: a program whose world model, by the DSL's own provenance semantics
  (:class:`Shadow`, at row granularity for concatenations and views), reads no auxiliary data --
  not through its inputs, targets, weights, gradients, buffers, parameters, optimizer state, nor
  through anything the policy learnt from auxiliary data -- must not be refused.

Outside the DSL (README, "What the dynamic layer cannot see"): Python control flow on auxiliary
values (the surgery is branch-free), escapes (``.item()``), global-RNG consumption that depends on
auxiliary data, auxiliary shapes and counts.

Budget: ``default`` profile 40 x 25 = 1000 programs (about 40 s on two cores); ``audit`` profile
10 000.  A fortieth of that budget runs again with each run in a fresh process
(:func:`test_generated_programs_are_noninterfering_at_the_start_of_a_process`: the library's
process-wide switches off, as when a user's script starts).  ``AMAL_PROGRAM_EXAMPLES=N``
overrides both.  The test records the features the programs exercised (evidence
``program_coverage``) and fails if a statement kind, an encoder block, a scenario, a refused or a
completed run, or a liveness-checked program never occurred.
"""

from __future__ import annotations

import copy
import io
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import _fresh_process
import torch
from hypothesis import event, example, given, note, settings
from hypothesis import strategies as st
from torch import nn

import amal_verified as av

D, H, N = 3, 4, 4  # observation size, hidden size, rows per batch
HALF = N // 2  # replay rows [0, HALF) may be overwritten; rows [HALF, N) are read back alone

# --------------------------------------------------------------------------------------- the modules


class RunningNormaliser(nn.Module):
    """Observation normaliser with running mean and variance in buffers (updated in training mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(D))
        self.register_buffer("var", torch.ones(D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.mean.mul_(0.9).add_(x.mean(0), alpha=0.1)
                self.var.mul_(0.9).add_(x.var(0, unbiased=False), alpha=0.1)
        return (x - self.mean) / (self.var + 1e-5).sqrt()


class GRUBlock(nn.Module):
    """A GRU over each row as a sequence of length one; returns the last hidden output."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(D, D, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x.unsqueeze(1))
        return out[:, -1]


BLOCKS: dict[str, Callable[[], nn.Module]] = {
    "linear": lambda: nn.Linear(D, D),
    "mlp": lambda: nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, D)),
    "gru": GRUBlock,
    "batchnorm": lambda: nn.BatchNorm1d(D),
    "layernorm": lambda: nn.LayerNorm(D),
    "dropout0": lambda: nn.Dropout(0.0),
    "dropout": lambda: nn.Dropout(0.5),
    "identity": nn.Identity,
    "normaliser": RunningNormaliser,
}
BUFFERED = frozenset({"batchnorm", "normaliser"})


def make_encoder(blocks: tuple[str, ...]) -> nn.Sequential:
    return nn.Sequential(*(BLOCKS[b]() for b in blocks), nn.Linear(D, H), nn.Tanh())


class Model(nn.Module):
    """``head(encoder(x))``: the world model, the policy (encoder shared or its own) and the target."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(H, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.encoder(x))
        return out


def init_(module: nn.Module, gen: torch.Generator) -> None:
    """Fixed initial values from ``gen`` (no global RNG)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


# --------------------------------------------------------------------------------------- the DSL

Source = Literal["p", "a", "cat", "cat_p", "replay", "replay_tail", "acc", "pre"]
SOURCES: tuple[Source, ...] = ("p", "a", "cat", "cat_p", "replay", "replay_tail", "acc", "pre")
PRIMARY_SOURCES: tuple[Source, ...] = ("p", "cat_p", "replay", "replay_tail", "acc", "pre")


@dataclass(frozen=True)
class Config:
    blocks: tuple[str, ...]
    policy_encoder: Literal["shared", "own"]
    policy_params: Literal["all", "head"]
    wm_optimizer: Literal["adam", "sgd"]
    policy_optimizer: Literal["adam", "sgd"]
    preprocessor: Literal["none", "normaliser", "batchnorm"]
    follow_primary: bool  # False: primary data tagged av.primary(..., follow=False), memory only
    seed: int

    def __str__(self) -> str:
        return (
            f"wm = Model(encoder={'+'.join(self.blocks) or 'linear-only'}); "
            f"gated = GatedOptimizer({self.wm_optimizer}(wm)); "
            f"policy = Model({self.policy_encoder} encoder); "
            f"popt = {self.policy_optimizer}(policy {self.policy_params}); "
            f"preprocessor = {self.preprocessor}; primary(follow={self.follow_primary}); "
            f"seed = {self.seed}"
        )


class Step:
    """One statement of a program; ``str()`` is its pseudo-Python."""

    def __str__(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))  # type: ignore[arg-type]
        return f"{type(self).__name__}({args})"


@dataclass(frozen=True)
class WMLoss(Step):
    """Pending world-model loss ``mean(w * |wm(x) - target|^2)``."""

    source: Source
    target: Literal["p", "a", "distill", "ema"]
    weight: Literal["none", "p", "a"]
    split: bool  # wm.head(wm.encoder(x)): two top-level module calls
    train: bool  # training or evaluation mode during the call


@dataclass(frozen=True)
class PolicyLoss(Step):
    """Pending behaviour-cloning loss ``|policy(x) - actions|^2`` (through a shared encoder if shared);
    ``split``: ``policy.head(policy.encoder(x))``, two top-level module calls."""

    source: Literal["p", "a", "cat"]
    actions: Literal["p", "a"]
    split: bool


@dataclass(frozen=True)
class TrainPolicy(Step):
    """``PolicyLoss(source, actions)``, then ``Backward()`` and ``StepPolicy()``: a policy update."""

    source: Literal["p", "a", "cat"]
    actions: Literal["p", "a"]


@dataclass(frozen=True)
class Imagined(Step):
    """The policy learns from the world model's predictions on auxiliary states (wm in eval mode)."""


@dataclass(frozen=True)
class Penalty(Step):
    """Pending gradient penalty ``|d wm(x).sum() / dx|^2`` built with ``create_graph=True``."""

    source: Literal["p", "a", "cat_p"]


@dataclass(frozen=True)
class Backward(Step):
    """One ``backward()`` over the sum of the pending losses."""


@dataclass(frozen=True)
class Surgery(Step):
    """PCGrad: world-model gradients of two losses by ``autograd.grad``, projected without branching,
    added into ``.grad``."""

    first: Source
    second: Source


@dataclass(frozen=True)
class Clip(Step):
    """``clip_grad_norm_`` over the world model, or over the world model and the policy together."""

    scope: Literal["wm", "all"]
    max_norm: float


@dataclass(frozen=True)
class StepWM(Step):
    """``gated.step(); gated.zero_grad()``."""


@dataclass(frozen=True)
class StepPolicy(Step):
    """``popt.step(); popt.zero_grad()``."""


@dataclass(frozen=True)
class ZeroGrad(Step):
    which: Literal["wm", "policy"]


@dataclass(frozen=True)
class Polyak(Step):
    """Soft update ``dst <- (1 - tau) dst + tau src`` (``.data`` loop or ``_foreach_lerp_``), or a hard
    reset of the world model from the target network."""

    direction: Literal["wm->target", "policy->wm", "target->wm"]
    via: Literal["data", "foreach"]


@dataclass(frozen=True)
class Write(Step):
    """In-place writes: replay rows through a view, an accumulator, a world-model buffer, the normaliser."""

    what: Literal["replay", "acc", "wm_buffer", "preprocessor"]
    source: Literal["p", "a"]


@dataclass(frozen=True)
class ParamVector(Step):
    """``vector_to_parameters(parameters_to_vector(wm) - 0.05 * grads, wm)``: a hand-made step."""


@dataclass(frozen=True)
class DataAssign(Step):
    """``wm.head.weight.data = ...``: half of itself, or a copy of the policy head's weight."""

    source: Literal["self", "policy"]


@dataclass(frozen=True)
class Checkpoint(Step):
    """``torch.save`` to memory and ``torch.load`` back (``weights_only``), then restored."""

    what: Literal["policy", "preprocessor", "replay", "wm"]


@dataclass(frozen=True)
class ShareState(Step):
    """Warm-start the world model's optimizer state from the policy optimizer's (heads, and encoders
    if the policy has its own): ``gated.state[p] = popt.state[q]`` (``share``), a dict of
    ``.clone()`` s (``clone``), or ``gated.state[p][k].data = popt.state[q][k].data`` (``data``)."""

    how: Literal["share", "clone", "data"]


@dataclass(frozen=True)
class Program:
    config: Config
    steps: tuple[Step, ...]
    scenario: str = "free"

    def __str__(self) -> str:
        return "\n".join([str(self.config), *(f"  {s}" for s in self.steps), "  gated.check()"])


# --------------------------------------------------------------------------------------- strategies

FILLS = ("noise", "zero", "one", "-one", "large", "-large", "nan", "inf", "-inf", "mix")


@dataclass(frozen=True)
class AuxValues:
    fill: str
    seed: int


def aux_tensor(values: AuxValues, shape: tuple[int, ...], salt: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(values.seed * 7919 + salt)
    noise = torch.randn(shape, generator=gen)
    constants = {
        "zero": 0.0,
        "one": 1.0,
        "-one": -1.0,
        "large": 1e38,
        "-large": -1e38,
        "nan": float("nan"),
        "inf": float("inf"),
        "-inf": float("-inf"),
    }
    if values.fill == "noise":
        return noise
    if values.fill == "mix":
        choices = torch.tensor([0.0, 1e38, -1e38, float("nan"), float("inf"), float("-inf"), 1.0])
        index = torch.randint(0, len(choices) + 1, shape, generator=gen)
        return torch.where(index < len(choices), choices[index.clamp(max=len(choices) - 1)], noise)
    return torch.full(shape, constants[values.fill])


configs = st.builds(
    Config,
    blocks=st.lists(st.sampled_from(tuple(BLOCKS)), max_size=2).map(tuple),
    policy_encoder=st.sampled_from(("shared", "own")),
    policy_params=st.sampled_from(("all", "head")),
    wm_optimizer=st.sampled_from(("adam", "sgd")),
    policy_optimizer=st.sampled_from(("adam", "sgd")),
    preprocessor=st.sampled_from(("none", "normaliser", "batchnorm")),
    follow_primary=st.booleans(),
    seed=st.integers(0, 3),
)


def _policy_sources() -> st.SearchStrategy[Any]:
    return st.sampled_from(("p", "a", "cat"))


def aux_side_steps() -> st.SearchStrategy[Step]:
    """What happens to auxiliary data before the world model is trained: the policy learns from it,
    it is written into the replay tensor, the accumulator or the normaliser, checkpoints."""
    return st.one_of(
        st.builds(TrainPolicy, _policy_sources(), st.sampled_from(("p", "a"))),
        st.builds(Write, st.sampled_from(("replay", "acc", "preprocessor")), st.sampled_from(("p", "a"))),
        st.builds(Polyak, st.just("wm->target"), st.sampled_from(("data", "foreach"))),
        st.builds(Checkpoint, st.sampled_from(("policy", "preprocessor", "replay"))),
        st.just(Imagined()),
    )


def wm_side_steps(primary_world_model: bool) -> st.SearchStrategy[Step]:
    """Statements around the world model's update; with ``primary_world_model`` its own inputs,
    targets, weights and penalties are primary (aux data may still reach it through the policy,
    the normaliser, the replay tensor, the accumulator: the shadow decides)."""
    wm_sources = st.sampled_from(PRIMARY_SOURCES if primary_world_model else SOURCES)
    targets = st.sampled_from(
        ("p", "distill", "ema") if primary_world_model else ("p", "a", "distill", "ema")
    )
    weights = st.sampled_from(("none", "p") if primary_world_model else ("none", "p", "a"))
    penalty = st.sampled_from(("p", "cat_p") if primary_world_model else ("p", "a", "cat_p"))
    wm_loss = st.builds(WMLoss, wm_sources, targets, weights, st.booleans(), st.booleans())
    return st.one_of(
        wm_loss,
        wm_loss,
        st.builds(PolicyLoss, _policy_sources(), st.sampled_from(("p", "a")), st.booleans()),
        st.builds(Penalty, penalty),
        st.just(Backward()),
        st.builds(Surgery, wm_sources, wm_sources),
        st.builds(Clip, st.sampled_from(("wm", "all")), st.sampled_from((0.1, 1e3))),
        st.just(StepWM()),
        st.just(StepPolicy()),
        st.builds(ZeroGrad, st.sampled_from(("wm", "policy"))),
        st.builds(
            Polyak, st.sampled_from(("policy->wm", "target->wm")), st.sampled_from(("data", "foreach"))
        ),
        st.builds(Write, st.just("wm_buffer"), st.sampled_from(("p", "a"))),
        st.just(ParamVector()),
        st.builds(DataAssign, st.sampled_from(("self", "policy"))),
        st.builds(Checkpoint, st.sampled_from(("wm", "policy"))),
        st.builds(ShareState, st.sampled_from(("share", "clone", "data"))),
    )


def _either(*options: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(options)


def scenarios(primary_world_model: bool) -> dict[str, st.SearchStrategy[list[Step]]]:
    """Short patterns in which auxiliary data could reach the world model by one route (or, in their
    clean variants, could not), so that every route is exercised in a few hundred programs."""
    wm_src = _either(*(PRIMARY_SOURCES if primary_world_model else SOURCES))
    target = _either(*(("p", "distill", "ema") if primary_world_model else ("p", "a", "distill", "ema")))
    weight = _either(*(("none", "p") if primary_world_model else ("none", "p", "a")))
    kind = _either("p", "a")
    loss = st.builds(WMLoss, wm_src, target, weight, st.booleans(), st.booleans())
    train = st.builds(TrainPolicy, _policy_sources(), kind)

    def seq(*parts: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Step]]:
        return st.tuples(*parts).map(
            lambda xs: [x for part in xs for x in (part if isinstance(part, list) else [part])]
        )

    def maybe(step: st.SearchStrategy[Step]) -> st.SearchStrategy[list[Step]]:
        return st.lists(step, max_size=1)

    return {
        "distill": seq(
            train,
            maybe(st.builds(Checkpoint, st.just("policy"))),
            st.builds(WMLoss, wm_src, st.just("distill"), weight, st.booleans(), st.booleans()),
        ),
        "assign": seq(
            train, maybe(loss), maybe(st.just(Backward())), st.builds(DataAssign, _either("self", "policy"))
        ),
        "param-vector": seq(
            loss, st.just(Backward()), st.just(ParamVector()), maybe(st.builds(ZeroGrad, st.just("wm")))
        ),
        "state": seq(train, st.builds(ShareState, _either("share", "clone", "data")), maybe(train)),
        "preprocessor": seq(
            st.builds(Write, st.just("preprocessor"), kind),
            maybe(st.builds(Checkpoint, st.just("preprocessor"))),
            st.builds(WMLoss, st.just("pre"), target, weight, st.booleans(), st.booleans()),
        ),
        "policy-through-encoder": seq(
            maybe(train), st.builds(PolicyLoss, _policy_sources(), kind, st.booleans())
        ),
        "replay": seq(
            st.builds(Write, st.just("replay"), kind),
            maybe(st.builds(Checkpoint, st.just("replay"))),
            st.builds(WMLoss, _either("replay", "replay_tail"), target, weight, st.booleans(), st.booleans()),
        ),
        "accumulator": seq(
            st.builds(Write, st.just("acc"), kind),
            st.builds(WMLoss, st.just("acc"), target, weight, st.booleans(), st.booleans()),
        ),
        "polyak": seq(
            maybe(train),
            st.builds(Polyak, _either("policy->wm", "wm->target", "target->wm"), _either("data", "foreach")),
            maybe(loss),
        ),
        "clip": seq(
            st.builds(PolicyLoss, _policy_sources(), kind, st.booleans()),
            loss,
            st.just(Backward()),
            st.builds(Clip, _either("wm", "all"), _either(0.1, 1e3)),
        ),
        "penalty": seq(
            st.builds(Penalty, _either(*(("p", "cat_p") if primary_world_model else ("p", "a", "cat_p")))),
            maybe(loss),
        ),
        "surgery": seq(st.builds(Surgery, wm_src, wm_src)),
        "wm-buffer": seq(st.builds(Write, st.just("wm_buffer"), kind), maybe(loss)),
        "imagined": seq(
            st.just(Imagined()),
            st.just(Backward()),
            st.just(StepPolicy()),
            st.builds(WMLoss, wm_src, st.just("distill"), weight, st.booleans(), st.booleans()),
        ),
        "free": st.lists(wm_side_steps(primary_world_model), min_size=1, max_size=4),
    }


@st.composite
def programs(draw: st.DrawFn) -> Program:
    """A scenario (one route by which aux data could reach the world model) among random statements
    (up to two aux-side before, one around the world model after), then ``Backward(); StepWM()``."""
    primary_world_model = draw(st.booleans())
    options = scenarios(primary_world_model)
    name = draw(st.sampled_from(sorted(options)))
    prefix = draw(st.lists(aux_side_steps(), max_size=2))
    body = draw(options[name])
    suffix = draw(st.lists(wm_side_steps(primary_world_model), max_size=1))
    return Program(draw(configs), (*prefix, *body, *suffix, Backward(), StepWM()), name)


@st.composite
def aux_pairs(draw: st.DrawFn) -> tuple[AuxValues, AuxValues]:
    first = AuxValues(draw(st.sampled_from(FILLS)), draw(st.integers(0, 2**16)))
    fill = draw(st.sampled_from(FILLS))
    seed = draw(st.integers(0, 2**16).filter(lambda s: fill not in ("noise", "mix") or s != first.seed))
    if fill == first.fill and fill not in ("noise", "mix"):
        fill = "noise"  # two constant fills that agree would give the same data
    return first, AuxValues(fill, seed)


# --------------------------------------------------------------------------------------- the shadow


@dataclass
class Shadow:
    """The DSL's own provenance semantics: which values depend on auxiliary data.

    Row-precise for the replay tensor and for the primary rows of a concatenation; otherwise a
    value depends on aux data if anything it is computed from does.  ``exposed`` is set when the
    world model (its gradients at a step, its parameters, buffers or optimizer state) would read
    auxiliary data: a program that never sets it must not be refused.
    """

    replay: list[bool] = field(default_factory=lambda: [False] * N)
    acc: bool = False
    preprocessor: bool = False
    policy_head: bool = False
    policy_encoder: bool = False  # the policy's own encoder (unused when shared)
    policy_state: bool = False
    state_shared: set[str] = field(default_factory=set)  # policy groups whose optimizer state the gate reads
    target: bool = False
    wm_params: bool = False
    grads: dict[str, bool | None] = field(default_factory=dict)  # group -> None (no grad) / tainted
    pending: list[tuple[frozenset[str], bool]] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)

    def grad(self, group: str, tainted: bool) -> None:
        self.grads[group] = bool(self.grads.get(group)) or tainted

    def expose(self, why: str) -> None:
        self.exposed.append(why)


WM_GROUPS = frozenset({"wm.encoder", "wm.head"})


# --------------------------------------------------------------------------------------- a run


class Refused(Exception):
    """The run stopped at an ``IsolationViolation``."""


class Run:
    """One execution of a program on fixed primary data and the given auxiliary values."""

    def __init__(self, config: Config, aux_values: AuxValues) -> None:
        self.config = config
        gen = torch.Generator().manual_seed(1000 + config.seed)
        follow = config.follow_primary
        self.obs_p = av.primary(torch.randn(N, D, generator=gen), source="real-env", follow=follow)
        self.act_p = av.primary(torch.randn(N, D, generator=gen), source="real-env", follow=follow)
        self.next_p = av.primary(torch.randn(N, D, generator=gen), source="real-env", follow=follow)
        self.rew_p = av.primary(torch.randn(N, generator=gen), source="real-env", follow=follow)
        self.obs_a = av.aux(aux_tensor(aux_values, (N, D), 1), source="aux-1")
        self.act_a = av.aux(aux_tensor(aux_values, (N, D), 2), source="aux-1")
        self.next_a = av.aux(aux_tensor(aux_values, (N, D), 3), source="aux-1")
        self.rew_a = av.aux(aux_tensor(aux_values, (N,), 4), source="aux-1")
        self.replay = av.primary(torch.randn(N, D, generator=gen), source="real-env", follow=follow)
        self.acc = torch.zeros(D)  # plain memory, written in place

        self.wm = Model(make_encoder(config.blocks))
        init_(self.wm, gen)
        shared = config.policy_encoder == "shared"
        self.policy = Model(self.wm.encoder if shared else make_encoder(config.blocks))
        init_(self.policy.head, gen)
        if not shared:
            init_(self.policy.encoder, gen)
        self.target = copy.deepcopy(self.wm)
        self.pre: nn.Module | None = {
            "none": lambda: None,
            "normaliser": RunningNormaliser,
            "batchnorm": lambda: nn.BatchNorm1d(D, affine=False),
        }[config.preprocessor]()
        if self.pre is not None:
            self.pre.eval()

        wm_opt: torch.optim.Optimizer = (
            torch.optim.Adam(self.wm.parameters(), lr=0.05)
            if config.wm_optimizer == "adam"
            else torch.optim.SGD(self.wm.parameters(), lr=0.05, momentum=0.9)
        )
        self.gated = av.GatedOptimizer(wm_opt, names=self.wm)
        policy_params = list(
            (self.policy if config.policy_params == "all" else self.policy.head).parameters()
        )
        self.popt: torch.optim.Optimizer = (
            torch.optim.Adam(policy_params, lr=0.05)
            if config.policy_optimizer == "adam"
            else torch.optim.SGD(policy_params, lr=0.05, momentum=0.9)
        )
        self.pending: list[torch.Tensor] = []
        self.shadow = Shadow()
        self.data_assigned = False
        # A first, clean world-model step: the gated optimizer has state before the program runs.
        (self.wm(self.obs_p) - self.next_p).pow(2).mean().backward()
        self.gated.step()
        self.gated.zero_grad()

    # -- values and their shadow taint --------------------------------------------------------------

    def rows(self, kind: Literal["p", "a"], which: str, count: int) -> torch.Tensor:
        base = {
            ("p", "next"): self.next_p,
            ("a", "next"): self.next_a,
            ("p", "act"): self.act_p,
            ("a", "act"): self.act_a,
            ("p", "rew"): self.rew_p,
            ("a", "rew"): self.rew_a,
        }[(kind, which)]
        return torch.cat([base, base])[:count]

    def source(self, name: str) -> tuple[torch.Tensor, bool]:
        s = self.shadow
        if name == "p":
            return self.obs_p, False
        if name == "a":
            return self.obs_a, True
        if name == "cat":
            return torch.cat([self.obs_p, self.obs_a]), True
        if name == "cat_p":
            return torch.cat([self.obs_p, self.obs_a])[:N], False
        if name == "replay":
            return self.replay, any(s.replay)
        if name == "replay_tail":
            return self.replay[HALF:], any(s.replay[HALF:])
        if name == "acc":
            return self.obs_p + self.acc, s.acc
        if name == "pre":
            if self.pre is None:
                return self.obs_p, False
            return self.pre(self.obs_p), s.preprocessor
        raise ValueError(name)

    def policy_taint(self) -> bool:
        s = self.shadow
        encoder = s.wm_params if self.config.policy_encoder == "shared" else s.policy_encoder
        return s.policy_head or encoder

    def wm_buffered(self) -> bool:
        return any(b in BUFFERED for b in self.config.blocks)

    def policy_groups(self) -> frozenset[str]:
        encoder = "wm.encoder" if self.config.policy_encoder == "shared" else "policy.encoder"
        return frozenset({"policy.head", encoder})

    def call_wm(self, x: torch.Tensor, tainted: bool, split: bool, train: bool) -> torch.Tensor:
        if train and tainted and self.wm_buffered():
            self.shadow.expose("a training-mode call on aux data would update protected buffers")
        self.wm.train(train)
        try:
            return self.wm.head(self.wm.encoder(x)) if split else self.wm(x)
        finally:
            self.wm.train(True)

    def call_policy(self, x: torch.Tensor, tainted: bool, split: bool = False) -> torch.Tensor:
        if tainted and self.wm_buffered():
            if self.config.policy_encoder == "shared":
                self.shadow.expose("the policy's call on aux data would update the shared encoder's buffers")
            else:
                self.shadow.policy_encoder = True
        if split:
            out: torch.Tensor = self.policy.head(self.policy.encoder(x))
            return out
        return self.policy(x)

    # -- the statements --------------------------------------------------------------------------

    def execute(self, step: Step) -> None:
        if isinstance(step, WRITING_STEPS):
            # Writes into memory a pending loss may have saved for backward: the user's code runs its
            # backward pass first (plain PyTorch would refuse the backward pass after the write).
            self.do_Backward(Backward())
        handler = getattr(self, f"do_{type(step).__name__}")
        handler(step)

    def do_WMLoss(self, step: WMLoss) -> None:
        s = self.shadow
        x, taint = self.source(step.source)
        count = x.shape[0]
        pred = self.call_wm(x, taint, step.split, step.train)
        if step.target in ("p", "a"):
            target, target_taint = self.rows(step.target, "next", count), step.target == "a"
        elif step.target == "distill":
            with torch.no_grad():
                target = self.call_policy(x, taint).detach()
            target_taint = taint or self.policy_taint()
        else:
            with torch.no_grad():
                target = self.target(x).detach()
            target_taint = taint or s.target
            if taint and self.wm_buffered():
                s.target = True  # its running statistics now hold aux data
        err = (pred - target).pow(2).mean(1)
        if step.weight == "none":
            loss = err.mean()
        else:
            loss = (err * torch.sigmoid(self.rows(step.weight, "rew", count))).mean()
        self.pending.append(loss)
        tainted = taint or target_taint or step.weight == "a" or s.wm_params
        s.pending.append((WM_GROUPS, tainted))

    def do_PolicyLoss(self, step: PolicyLoss) -> None:
        x, taint = self.source(step.source)
        actions = self.rows(step.actions, "act", x.shape[0])
        out = self.call_policy(x, taint, step.split)
        self.pending.append((out - actions).pow(2).mean())
        self.shadow.pending.append(
            (self.policy_groups(), taint or step.actions == "a" or self.policy_taint())
        )

    def do_TrainPolicy(self, step: TrainPolicy) -> None:
        self.do_PolicyLoss(PolicyLoss(step.source, step.actions, split=False))
        self.do_Backward(Backward())
        self.do_StepPolicy(StepPolicy())

    def do_Imagined(self, step: Imagined) -> None:
        self.wm.eval()
        try:
            with torch.no_grad():
                imagined = self.wm(self.obs_a)
        finally:
            self.wm.train()
        self.pending.append((self.call_policy(self.obs_a, True) - imagined).pow(2).mean())
        self.shadow.pending.append((self.policy_groups(), True))

    def do_Penalty(self, step: Penalty) -> None:
        x, taint = self.source(step.source)
        x = x.detach().clone().requires_grad_(True)
        out = self.call_wm(x, taint, split=False, train=True).sum()
        (g,) = torch.autograd.grad(out, x, create_graph=True)
        self.pending.append(0.1 * g.pow(2).mean())
        self.shadow.pending.append((WM_GROUPS, taint or self.shadow.wm_params))

    def do_Backward(self, step: Backward) -> None:
        if not self.pending:
            return
        total = self.pending[0]
        for loss in self.pending[1:]:
            total = total + loss
        total.backward()
        self.pending.clear()
        for groups, tainted in self.shadow.pending:
            for group in groups:
                self.shadow.grad(group, tainted)
        self.shadow.pending.clear()

    def _wm_loss_for_surgery(self, name: str) -> tuple[torch.Tensor, bool]:
        x, taint = self.source(name)
        pred = self.call_wm(x, taint, split=False, train=True)
        return (pred - self.rows("p", "next", x.shape[0])).pow(2).mean(), taint or self.shadow.wm_params

    def do_Surgery(self, step: Surgery) -> None:
        params = list(self.wm.parameters())
        l1, t1 = self._wm_loss_for_surgery(step.first)
        l2, t2 = self._wm_loss_for_surgery(step.second)
        g1 = torch.autograd.grad(l1, params, allow_unused=True)
        g2 = torch.autograd.grad(l2, params, allow_unused=True)

        def flat(grads: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
            return torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1)
                    for g, p in zip(grads, params, strict=True)
                ]
            )

        v1, v2 = flat(g1), flat(g2)
        dot = (v1 * v2).sum()
        projected = torch.where(dot < 0, v1 - dot / (v2.pow(2).sum() + 1e-12) * v2, v1) + v2
        offset = 0
        for p in params:
            piece = projected[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
            if p.grad is None:
                p.grad = piece.clone()
            else:
                p.grad.add_(piece)
        for group in WM_GROUPS:
            self.shadow.grad(group, t1 or t2)

    def _grad_groups(self, scope: Literal["wm", "all"]) -> list[tuple[str, list[torch.Tensor]]]:
        groups: list[tuple[str, list[torch.Tensor]]] = [
            ("wm.encoder", list(self.wm.encoder.parameters())),
            ("wm.head", list(self.wm.head.parameters())),
        ]
        if scope == "all":
            groups.append(("policy.head", list(self.policy.head.parameters())))
            if self.config.policy_encoder == "own":
                groups.append(("policy.encoder", list(self.policy.encoder.parameters())))
        return groups

    def do_Clip(self, step: Clip) -> None:
        groups = self._grad_groups(step.scope)
        params = [p for _, ps in groups for p in ps]
        torch.nn.utils.clip_grad_norm_(params, step.max_norm)
        s = self.shadow
        with_grads = [g for g, ps in groups if any(p.grad is not None for p in ps)]
        tainted = any(s.grads.get(g) for g in with_grads)
        for g in with_grads:
            s.grad(g, tainted)

    def do_StepWM(self, step: StepWM) -> None:
        s = self.shadow
        if any(s.grads.get(g) for g in WM_GROUPS):
            s.expose("a world-model gradient depends on aux data")
        self.gated.step()
        self.gated.zero_grad()
        for g in WM_GROUPS:
            s.grads[g] = None

    def do_StepPolicy(self, step: StepPolicy) -> None:
        s = self.shadow
        own = self.config.policy_encoder == "own"
        stepped = {"policy.head"}
        if self.config.policy_params == "all":
            stepped.add("policy.encoder" if own else "wm.encoder")
        if "wm.encoder" in stepped and s.grads.get("wm.encoder"):
            s.expose("the policy optimizer would step the shared encoder with aux-derived gradients")
        if any(s.grads.get(g) for g in stepped & s.state_shared):
            s.expose("the policy optimizer would write aux-derived moments into state the gate reads")
        self.popt.step()
        self.popt.zero_grad()
        if s.grads.get("policy.head"):
            s.policy_head = s.policy_state = True
        if "policy.encoder" in stepped and s.grads.get("policy.encoder"):
            s.policy_encoder = s.policy_state = True
        for g in stepped:
            s.grads[g] = None

    def do_ZeroGrad(self, step: ZeroGrad) -> None:
        s = self.shadow
        if step.which == "wm":
            self.gated.zero_grad()
            for g in WM_GROUPS:
                s.grads[g] = None
        else:
            self.popt.zero_grad()
            s.grads["policy.head"] = None
            if self.config.policy_params == "all":
                s.grads["wm.encoder" if self.config.policy_encoder == "shared" else "policy.encoder"] = None

    def _polyak_pairs(self, direction: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if direction == "wm->target":
            return list(zip(self.target.parameters(), self.wm.parameters(), strict=True))
        if direction == "target->wm":
            return list(zip(self.wm.parameters(), self.target.parameters(), strict=True))
        pairs = list(zip(self.wm.head.parameters(), self.policy.head.parameters(), strict=True))
        if self.config.policy_encoder == "own":
            pairs += list(zip(self.wm.encoder.parameters(), self.policy.encoder.parameters(), strict=True))
        return pairs

    def do_Polyak(self, step: Polyak) -> None:
        s = self.shadow
        if step.direction == "wm->target":
            s.target = s.target or s.wm_params
        elif step.direction == "target->wm":
            if s.target:
                s.expose("the world model would be reset from an aux-derived target network")
        else:
            own = self.config.policy_encoder == "own"
            if s.policy_head or (own and s.policy_encoder):
                s.expose("the policy's aux-trained parameters would be averaged into the world model")
        pairs = self._polyak_pairs(step.direction)
        if step.direction == "target->wm":
            with torch.no_grad():
                for dst, src in pairs:
                    dst.data.copy_(src.data)
        elif step.via == "data":
            for dst, src in pairs:
                dst.data.mul_(0.9).add_(src.data, alpha=0.1)
        else:
            with torch.no_grad():
                torch._foreach_lerp_([d for d, _ in pairs], [x for _, x in pairs], 0.1)

    def do_Write(self, step: Write) -> None:
        s = self.shadow
        src = self.obs_a if step.source == "a" else self.obs_p
        tainted = step.source == "a"
        if step.what == "replay":
            rows = slice(0, HALF) if tainted else slice(HALF, N)
            self.replay[rows] = src[:HALF] * 2
            for i in range(rows.start, rows.stop):
                s.replay[i] = tainted
        elif step.what == "acc":
            self.acc.add_(src.mean(0))
            s.acc = s.acc or tainted
        elif step.what == "wm_buffer":
            buffers = [b for b in self.wm.buffers() if b.shape == (D,) and b.is_floating_point()]
            if buffers:
                if tainted:
                    s.expose("aux data would be written into a protected buffer")
                with torch.no_grad():
                    buffers[0].copy_(src.mean(0))
        elif self.pre is not None:
            self.pre.train()
            try:
                self.pre(src)
            finally:
                self.pre.eval()
            s.preprocessor = s.preprocessor or tainted

    def do_ParamVector(self, step: ParamVector) -> None:
        s = self.shadow
        if any(s.grads.get(g) for g in WM_GROUPS):
            s.wm_params = True
            s.expose("world-model parameters would be assigned aux-derived values")
        params = list(self.wm.parameters())
        vec = torch.nn.utils.parameters_to_vector(params)
        grads = torch.nn.utils.parameters_to_vector(
            [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        )
        torch.nn.utils.vector_to_parameters(vec - 0.05 * grads, params)
        self.data_assigned = True

    def do_DataAssign(self, step: DataAssign) -> None:
        weight = self.wm.head.weight
        if step.source == "policy" and self.shadow.policy_head:
            self.shadow.wm_params = True
            self.shadow.expose("a world-model parameter would be assigned the aux-trained policy's values")
        if step.source == "self":
            weight.data = weight.detach() * 0.5
        else:
            weight.data = self.policy.head.weight.detach().clone()
        self.data_assigned = True

    def do_Checkpoint(self, step: Checkpoint) -> None:
        buffer = io.BytesIO()
        if step.what == "replay":
            torch.save(self.replay, buffer)
            buffer.seek(0)
            self.replay = torch.load(buffer)
            return
        if step.what == "wm":  # saved and loaded back into the (protected) world model itself
            torch.save(self.wm.state_dict(), buffer)
            buffer.seek(0)
            self.wm.load_state_dict(torch.load(buffer))
            return
        module = self.policy if step.what == "policy" else self.pre
        if module is None:
            return
        torch.save(module.state_dict(), buffer)
        buffer.seek(0)
        fresh = self.fresh(step.what)  # resumed in a new instance, as a new process would
        fresh.load_state_dict(torch.load(buffer))
        if step.what == "policy":
            self.policy = fresh  # type: ignore[assignment]
            self.popt.param_groups[0]["params"] = list(
                (fresh if self.config.policy_params == "all" else fresh.head).parameters()  # type: ignore[union-attr]
            )
            self.popt.state.clear()
            self.shadow.policy_state = False
            self.shadow.state_shared.clear()
        else:
            fresh.eval()
            self.pre = fresh

    def fresh(self, what: str) -> nn.Module:
        if what == "policy":
            shared = self.config.policy_encoder == "shared"
            return Model(self.wm.encoder if shared else make_encoder(self.config.blocks))
        return (
            RunningNormaliser()
            if self.config.preprocessor == "normaliser"
            else nn.BatchNorm1d(D, affine=False)
        )

    def do_ShareState(self, step: ShareState) -> None:
        if self.config.wm_optimizer != self.config.policy_optimizer:
            return  # the states of Adam and SGD are not interchangeable
        s = self.shadow
        pairs = list(zip(self.wm.head.parameters(), self.policy.head.parameters(), strict=True))
        if self.config.policy_encoder == "own":
            pairs += list(zip(self.wm.encoder.parameters(), self.policy.encoder.parameters(), strict=True))
        shared = False
        for dst, src in pairs:
            entries = self.popt.state.get(src)
            if not entries:
                continue
            shared = True
            if step.how == "share":
                self.gated.state[dst] = entries
            elif step.how == "clone":
                self.gated.state[dst] = {
                    k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in entries.items()
                }
            else:
                for key, value in self.gated.state[dst].items():
                    if (
                        isinstance(value, torch.Tensor)
                        and key in entries
                        and value.shape == entries[key].shape
                    ):
                        value.data = entries[key].data
        if shared:
            self.data_assigned = True  # the gated optimizer's state objects were replaced, not written
            if step.how in ("share", "data"):  # one memory for both optimizers' state from now on
                s.state_shared.add("policy.head")
                if self.config.policy_encoder == "own":
                    s.state_shared.add("policy.encoder")
        if shared and s.policy_state:
            s.expose("the gated optimizer would read the aux-trained policy optimizer's state")

    # -- the world model's state --------------------------------------------------------------------

    def wm_state(self) -> dict[str, torch.Tensor]:
        found: dict[str, torch.Tensor] = {}
        with torch._C._DisableTorchDispatch():
            for name, value in self.wm.state_dict(keep_vars=True).items():
                found[f"wm:{name}"] = value.detach().clone()
            names = {id(p): n for n, p in self.wm.named_parameters()}
            for p, entries in self.gated.state.items():
                for key, value in entries.items():
                    if isinstance(value, torch.Tensor):
                        found[f"gated.state[{names.get(id(p), '?')}][{key}]"] = value.detach().clone()
        return found


WRITING_STEPS = (
    StepWM,
    StepPolicy,
    TrainPolicy,
    Polyak,
    Write,
    ParamVector,
    DataAssign,
    Checkpoint,
    ShareState,
)


@dataclass
class Outcome:
    refused: str | None  # the refusal's first line and the step it stopped at, or None
    state: dict[str, torch.Tensor]
    shadow: Shadow
    data_assigned: bool


def run_program(program: Program, aux_values: AuxValues) -> Outcome:
    """Run ``program`` on the fixed primary data and ``aux_values`` (global RNG forked and seeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        run = Run(program.config, aux_values)
        refused: str | None = None
        try:
            for index, step in enumerate(program.steps):
                try:
                    run.execute(step)
                except av.IsolationViolation as exc:
                    refused = f"step {index} ({step}): {str(exc).splitlines()[0]}"
                    raise Refused from exc
            try:
                run.gated.check()
            except av.IsolationViolation as exc:
                refused = f"final gated.check(): {str(exc).splitlines()[0]}"
                raise Refused from exc
        except Refused:
            pass
        return Outcome(refused, run.wm_state(), run.shadow, run.data_assigned)


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit, except that any NaN equals any NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not a.is_floating_point():
        return bool(torch.equal(a, b))
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    if not torch.equal(nan_a, nan_b):
        return False
    int_type = {torch.float32: torch.int32, torch.float64: torch.int64}[a.dtype]
    zero = torch.zeros((), dtype=a.dtype)
    return bool(
        torch.equal(torch.where(nan_a, zero, a).view(int_type), torch.where(nan_b, zero, b).view(int_type))
    )


def differences(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> list[str]:
    keys = sorted(set(first) | set(second))
    return [k for k in keys if k not in first or k not in second or not bits_equal(first[k], second[k])]


# --------------------------------------------------------------------------------------- the property


FEATURES: Counter[str] = Counter()


def features_of(program: Program, outcome: Outcome) -> Iterator[str]:
    c = program.config
    yield from (f"block:{b}" for b in c.blocks)
    yield f"policy encoder:{c.policy_encoder}"
    yield f"policy optimizer:{c.policy_optimizer} over {c.policy_params}"
    yield f"wm optimizer:{c.wm_optimizer}"
    yield f"preprocessor:{c.preprocessor}"
    yield f"primary followed:{c.follow_primary}"
    yield f"scenario:{program.scenario}"
    for step in program.steps[:-2]:
        yield f"step:{type(step).__name__}"
        for f in fields(step):  # type: ignore[arg-type]
            yield f"step:{type(step).__name__}.{f.name}={getattr(step, f.name)}"
    yield "outcome:refused" if outcome.refused else "outcome:completed"
    yield "liveness checked" if not outcome.shadow.exposed else "world model exposed to aux data"


def check_program(
    program: Program,
    aux: tuple[AuxValues, AuxValues],
    run: Callable[[Program, AuxValues], Outcome] = run_program,
) -> Outcome:
    """Soundness and liveness of one program (see the module docstring), each run by ``run``; returns
    the first run."""
    first = run(program, aux[0])
    second = run(program, aux[1])
    note(f"program:\n{program}")
    note(f"aux values: {aux[0]} / {aux[1]}")
    note(f"refusals: {first.refused} / {second.refused}")
    if not first.shadow.exposed:
        assert first.refused is None, (
            f"liveness: a program whose world model reads primary data only was refused: {first.refused}"
        )
    assert (first.refused is None) == (second.refused is None), (
        f"the auxiliary values decided whether world-model training stops: {first.refused!r} vs "
        f"{second.refused!r}"
    )
    if first.refused is None or not first.data_assigned:
        diff = differences(first.state, second.state)
        if diff:
            again = run(program, aux[0])
            assert not differences(first.state, again.state), "the program is not deterministic on its own"
        when = "completed" if first.refused is None else f"were refused at the same point ({first.refused})"
        assert not diff, f"both runs {when}, but the world model differs in {diff}"
    return first


_PROFILE_EXAMPLES = settings.default.max_examples  # default profile: 25, audit: 1000
_EXAMPLES = int(os.environ.get("AMAL_PROGRAM_EXAMPLES", "0") or 0) or (
    10_000 if _PROFILE_EXAMPLES >= 1000 else 40 * _PROFILE_EXAMPLES
)

torch.set_num_threads(1)  # the two runs of a program must add in the same order


def _warm_up() -> None:
    """Leave the process-wide facts of the core (something tagged, aux written, plain state labelled)
    as they are after any program, so that the first program's two runs start alike."""
    program = Program(
        Config(("normaliser",), "own", "all", "adam", "adam", "normaliser", True, 0),
        (Write("acc", "a"), Write("preprocessor", "a"), TrainPolicy("a", "a")),
    )
    run_program(program, AuxValues("noise", 0))


# Checked on every run, whatever else is drawn: a policy trained on auxiliary actions, restored from
# its checkpoint into a fresh instance (labels copied below Python), averaged into the world model
# through ``.data``.
_RESTORED_POLICY_AVERAGED_IN = Program(
    Config((), "shared", "head", "adam", "adam", "none", True, 0),
    (TrainPolicy("p", "a"), Checkpoint("policy"), Polyak("policy->wm", "data"), Backward(), StepWM()),
)


def test_generated_programs_are_noninterfering_and_live(evidence: Any) -> None:
    """Soundness and liveness over generated programs; records which DSL features were exercised."""
    _warm_up()
    FEATURES.clear()

    @settings(max_examples=_EXAMPLES)
    @given(program=programs(), aux=aux_pairs())
    @example(program=_RESTORED_POLICY_AVERAGED_IN, aux=(AuxValues("noise", 0), AuxValues("noise", 1)))
    def check(program: Program, aux: tuple[AuxValues, AuxValues]) -> None:
        outcome = check_program(program, aux)
        for feature in features_of(program, outcome):
            FEATURES[feature] += 1
        event("refused" if outcome.refused else "completed")
        event("liveness checked" if not outcome.shadow.exposed else "exposed")

    check()
    evidence.record("program_coverage", {"examples": _EXAMPLES, "features": dict(sorted(FEATURES.items()))})
    expected = {f"step:{cls.__name__}" for cls in STEP_CLASSES} | {f"block:{b}" for b in BLOCKS}
    expected |= {f"scenario:{name}" for name in scenarios(False)}
    expected |= {"primary followed:True", "primary followed:False"}
    expected |= {
        "outcome:refused",
        "outcome:completed",
        "liveness checked",
        "world model exposed to aux data",
    }
    missing = sorted(expected - set(FEATURES))
    assert not missing, f"the generated programs never exercised {missing}"


_fresh_process.preload(__name__)
# default profile 25 programs, audit 250: two fresh processes each
_FRESH_EXAMPLES = max(10, _EXAMPLES // 40)


def _portable_run(program: Program, aux_values: AuxValues) -> tuple[Any, ...]:
    outcome = run_program(program, aux_values)
    state = {k: _fresh_process.portable(v) for k, v in outcome.state.items()}
    return outcome.refused, state, outcome.shadow, outcome.data_assigned


def _run_at_process_start(program: Program, aux_values: AuxValues) -> Outcome:
    """:func:`run_program` in a fresh process, the program's run the first thing it labels."""
    result = _fresh_process.run_at_process_start(_portable_run, program, aux_values)
    assert not isinstance(result, str), f"the run {result}\nprogram:\n{program}"
    refused, state, shadow, data_assigned = result
    tensors = {key: _fresh_process.from_portable(value) for key, value in state.items()}
    return Outcome(refused, tensors, shadow, data_assigned)


def test_generated_programs_are_noninterfering_at_the_start_of_a_process() -> None:
    """Soundness and liveness with each run the first thing its process labels: the library's
    process-wide switches (a first label, a first auxiliary label, a first labelled state) are off,
    as when a user's script starts, where :func:`test_generated_programs_are_noninterfering_and_live`
    runs every program after they turned on."""

    @settings(max_examples=_FRESH_EXAMPLES)
    @given(program=programs(), aux=aux_pairs())
    @example(program=_RESTORED_POLICY_AVERAGED_IN, aux=(AuxValues("noise", 0), AuxValues("noise", 1)))
    def check(program: Program, aux: tuple[AuxValues, AuxValues]) -> None:
        outcome = check_program(program, aux, run=_run_at_process_start)
        event("refused" if outcome.refused else "completed")

    check()


STEP_CLASSES: tuple[type[Step], ...] = (
    WMLoss,
    PolicyLoss,
    TrainPolicy,
    Imagined,
    Penalty,
    Backward,
    Surgery,
    Clip,
    StepWM,
    StepPolicy,
    ZeroGrad,
    Polyak,
    Write,
    ParamVector,
    DataAssign,
    Checkpoint,
    ShareState,
)
