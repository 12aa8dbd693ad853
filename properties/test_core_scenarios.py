"""Theorem 1 on single routes the program property does not generate, differentially.

Each scenario is a short piece of training code by which auxiliary data could reach a gated world
model (or data of one source be stored in another source's replay buffer).  Hypothesis draws two
auxiliary inputs (noise, 0, ±1e38, NaN, ±Inf); the scenario runs once with each, with the same
primary data and seeds.  The contract, as in
``test_theorem1_programs.py``: both runs are refused or neither is, and a run that completes leaves
the world model bit for bit the same.  Where the route leaks, both runs must be refused (the leak is
seen); its clean variant, on primary data only, must complete in both.

Routes:

- a tensor attribute of the world model (not a parameter, not a buffer) written through ``.data``
  with an auxiliary statistic, after other state was labelled: module calls read their tensor
  attributes;
- auxiliary gradients accumulated into a row range of a replay tensor built by concatenation, then
  the world model trained on those rows: a write into rows joins into them;
- a learnt plain tensor (a temperature: protected, but not an ``nn.Parameter``, so its ``.data`` is
  not guarded at the assignment) swapped through ``.data`` for auxiliary memory, then stepped on a
  primary-only gradient: only the gate's reading of the parameter's own memory sees it;
- memory tagged a second time: ``primary()`` of memory that holds auxiliary data is refused (the
  user trains on the untagged tensor, whose memory keeps its label), and rows of a buffer tagged
  auxiliary through a view leave its other rows primary;
- running statistics of an input normaliser computed on auxiliary data, saved with ``torch.save`` and
  restored into a fresh normaliser: plain buffers keep their labels through pickling; observations of
  a second real environment saved and loaded back into the first one's primary buffer: tagged
  tensors keep their primary labels through pickling, which the buffer reads;
- ``aux()`` read as an in-place operation: the code goes on with the object it tagged (arithmetic
  before the world model sees it), or with the buffer whose rows it tagged through a view;
- a step pre-hook of the wrapped optimizer that perturbs the weights by an auxiliary-derived amount
  (exploration noise scaled by a simulator statistic): the write is refused inside the wrapped
  optimizer's step, and the refusal reaches the user as it is;
- a closure step (LBFGS) whose loss adds an auxiliary-derived penalty: each evaluation's gradients
  are checked before the wrapped optimizer reads them, and a refused evaluation restores the
  parameters and the optimizer state;
- a tensor learning rate computed from auxiliary data: refused before the wrapped optimizer changes
  any weight or state, and before a plain optimizer that shares the world model's parameters steps;
  Adam's momentum coefficients as a tuple of tensors, one computed from auxiliary data;
  a ``GradScaler``'s scale set from auxiliary data between backward and a fused optimizer's step,
  which divides primary gradients by it;
- a plain alias taken before its memory was tagged auxiliary, tagged primary: refused;
- an evolution strategy's candidate loaded with ``vector_to_parameters``, then perturbed through the
  candidate vector, and a learnt plain tensor given new memory through ``.data``, then perturbed
  through a view of it (after a step, or after its old memory was reused): protection follows the
  tensor to its new memory, so an auxiliary perturbation is refused before it is written;
- MAML's and CAVIA's inner loops: a ``differentiable=True`` optimizer stepping non-leaf fast weights
  (the world model through ``functional_call``) or a context fed to the world model as its input,
  whose autograd node changes at every step;
  and MAML's inner loop on real inputs with auxiliary targets, the world model's call tracked at its
  boundary;
- a recurrent encoder cell stepped on simulated observations from a real hidden state (C++ goes on
  from a plain intermediate inside the call: the call labels what it computed when it returns), and an
  encoder returning a slice of its own hidden layer: outputs that view memory of the call;
- a module returning the leading rows of a batch concatenated from real and simulated rows;
- a prototype table called on simulated observations, returning a view of its first rows: the world model
  trained on its other rows;
- CAVIA with the context held by the world model as a tensor attribute, adapted on unlabelled warm-up
  data and then on simulated observations: the gradient leaving the call towards the context (neither
  an input nor a parameter of the call) carries the call's label;
- a FiLM context held by the world model, adapted (after a primary step) to raise the model's output on
  simulated observations: the gradient reaching the call is plain, the one leaving it towards the
  context depends on the simulated features, and the context's current autograd node must be hooked;
- input gradients of the world model at simulated states (``torch.autograd.grad`` with respect to
  the states only) before a primary update, and an input-gradient penalty on a slice of rows that
  require grad;
- a latent target: the encoder's output moved along a gradient captured there with
  ``torch.autograd.grad`` (a loss against auxiliary targets when leaking), the encoder then
  regressed on it: the gradient handed to the call's backward is made tracked at its first use
  from Python; the same with the loss computed by another module on the output and on a slice of
  it, where the gradient leaves that module's call: its input hooks label it before capture;
- a concatenation of real and simulated rows passed through an operator that returns its input
  (``dequantize()``): the rows keep their own labels;
- auxiliary rows of a replay tensor overwritten with primary transitions (``copy_``): they hold
  primary data only; rows of memory that mixed primary and auxiliary data as a whole partly
  overwritten with primary rows: the others still hold auxiliary data;
- rows of a pool picked by indices ranked on real data: the picked rows carry the pool's label joined
  with the indices', so auxiliary rows stay auxiliary under primary-labelled indices;
- a copy (``clone``) of a concatenation whose rows carry different labels, rescaled by arithmetic on
  the copy alone: a copy that keeps auxiliary rows is tracked;
- in strict mode, an auxiliary statistic read as a Python float (``.item()``) to weight the loss: the
  escape is refused before the float exists;
- the gradients of the world model and of a policy trained on auxiliary data clipped to one norm with
  ``foreach=True``: every tensor of a list written in place takes the written label (the clean
  variant clips each model on its own, through the same list writes);
- an auxiliary statistic accumulated in place into a plain tensor, then arithmetic on that tensor
  alone: the object written into is tracked from the write on;
- auxiliary rows written through a slice into a preallocated plain buffer, then arithmetic on the
  buffer object: the base of a view written into is tracked from the write on;
- a loss weighted by the maximum of auxiliary values: the refusal names ``max``, the first operation
  on the auxiliary data, as where it entered (``IsolationViolation.operation``);
- ``torch._fused_sdp_choice`` (the attention kernel SDPA would pick, as diagnostics code logs it)
  called on tagged queries and keys before the attention itself: an operator of the fused family
  that returns a Python integer gives it back;
- the world model's loss and the policy's backpropagated together, the world model's learnt noise
  scale (a plain tensor used functionally) getting its gradient masked in place, inside a custom
  ``autograd.Function``'s backward, by flags from auxiliary data: outputs of operations inside
  backward stay tracked, so the in-place mask labels the gradient; and the world model's loss
  backpropagated on its own, where the gradient edited in place was plain and goes back to the
  autograd engine's C++ code: it is made tracked at the write; a gradient copy in a custom backward
  scaled in place by auxiliary factors after a view of it was taken, the view handed back: a fresh
  output inside backward is tracked even without a label, so its views see later writes;
- a plain view of a replay tensor taken before its rows were filled and tagged (rows of two labels), fed
  to a world model whose state holds no label yet: the call runs operation by operation with that input
  tracked, so the labels of the memory it views are read;
- an ungated encoder called, without gradient, on a plain view of a batch taken before the batch was
  tagged (auxiliary, or primary in memory only), its features fed to the world model: a call on plain
  memory runs plain only when the labels it reads are primary-only, so auxiliary features are tracked;
- a target bootstrapped from the world model's own prediction on auxiliary states, computed under
  ``torch.no_grad()`` and then combined by plain arithmetic: a module output that needs no gradient is
  tracked when its label holds an auxiliary source;
- actor-critic heads (the value computed first) on the gated encoder's features, not detached, the policy
  loss weighted by auxiliary advantages: heads whose state carries no label run plain, and the labelled
  gradients are followed operation by operation; heads pretrained on real data (their state labelled)
  are tracked at their boundary, and the gradient leaving the call carries the labels of the gradients
  that reached every one of its outputs;
- Hutchinson's estimate of the divergence of a flow's velocity field (a vector-Jacobian product taken with
  ``create_graph=True``) on auxiliary states: the call's backward runs on a labelled gradient, so the
  second-order gradients that reach the world model are labelled;
- an agent module holding the gated world model (batch norm, training mode) beside state that holds
  auxiliary data -- a critic stepped on auxiliary data by its own optimizer, or a return scale fitted on
  auxiliary returns through ``.data`` -- called on primary observations: a call whose state is tracked, or
  is made tracked by the call, runs operation by operation, so the world model's own call moves its
  running statistics from primary data (the clean variant completes) and a loss through the critic or
  the scale is refused;
- a ring of recent observations kept in a buffer of the world model and written row by row: a module call
  reads the labels of its state's rows;
- a world model that normalises its observations before a submodule on which the user registered a
  forward pre-hook (so the global hooks run for that nested call): the nested call leaves the tracked
  call it runs in untouched;
- a critic trained on auxiliary data in the same backward pass as the world model, reading its latent
  (leaking) or its rounded latent code, through which no gradient passes (clean, must complete): the
  gradient leaving a call is labelled where it leaves the call, and the zero gradient of the rounding
  carries no label further;
- transitions imagined by a world model trained on real data, stored in an auxiliary agent's buffer: a
  protected parameter takes the primary label of the gradients it is stepped with, so what the world
  model computes is mixed data, which the buffer refuses (``TaggingError``);
- a squashed latent of the gated encoder, not detached, read by a goal head trained on one simulator
  and by a loss term weighted by another simulator: the gradient leaving a call keeps the labels it
  brings from outside the call, so the refusal names both simulators;
- the world model called on simulated states in a loss weighted by real data (the gradient reaching its
  output is primary): the refusal names the world-model call where the auxiliary data entered;
- in a fresh interpreter, a gradient written by hand (an evolution-strategies estimate) that is the
  first auxiliary-labelled memory of the process: the gate's checks are armed by the first
  auxiliary label however it was written;
- in a fresh interpreter, a plain tensor attribute (a pruning mask) written through ``.data`` with an
  auxiliary-derived mask, the first labelled state of the process, which the module combines with its
  own weight only: module calls read their tensor attributes from the first labelled state on.

Three tests pin what the core records where no decision depends on it: a protected parameter's
label after a gated step (its label before, joined with its gradient's), the memory
``primary()``/``aux()`` label (the tensor given, joined with what it holds) and, over generated
tensors, what ``primary(x, follow=...)`` returns (a tracked tensor over ``x``'s memory, or ``x``
itself) and whether operations on it carry its label.
"""

from __future__ import annotations

import functools
import io
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import _fresh_process
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import amal_verified as av

Outcome = tuple[str, list[torch.Tensor]]

_KINDS = ("noise", "zero", "large", "-large", "nan", "inf", "-inf")


def _aux_values(kind: str, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    fill = {"zero": 0.0, "large": 1e38, "-large": -1e38, "nan": float("nan"), "inf": float("inf")}
    fill["-inf"] = float("-inf")
    return torch.randn(shape, generator=g) if kind == "noise" else torch.full(shape, fill[kind])


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(
        torch.equal(x.nan_to_num(0.0), y.nan_to_num(0.0)) and torch.equal(x.isnan(), y.isnan())
        for x, y in zip(a, b, strict=True)
    )


def _run(
    scenario: Callable[[torch.Tensor, bool], list[torch.Tensor]], aux: torch.Tensor, leak: bool
) -> Outcome:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        try:
            state = scenario(aux, leak)
        except (av.IsolationViolation, av.TaggingError):  # a refused step, or refused primary() tagging
            return "refused", []
    return "completed", state


class _Scaled(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.scale = torch.ones(3)  # a plain tensor attribute: neither parameter nor buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.lin(x * self.scale)
        return out


def attribute_written_through_data(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    wm = _Scaled()
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    sim = av.aux(aux.clone(), source="sim")
    stat = sim if leak else av.primary(torch.rand(3, generator=g), source="real")
    wm.scale.data.copy_(stat)  # through a .data alias: the attribute object itself stays plain
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(x) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def rows_accumulated_into(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    real = av.primary(torch.randn(4, 3, generator=g), source="real")
    sim = av.aux(aux.clone(), source="sim")
    replay = torch.cat([real, sim])  # rows 0-3 primary, 4-7 auxiliary
    bonus = sim[:2] if leak else real[2:]
    replay[:2].add_(bonus)  # rows 0-1 now depend on what was added
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(replay[:4]) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def plain_tensor_swapped_through_data(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    temperature = torch.zeros(3, requires_grad=True)
    opt = av.GatedOptimizer(torch.optim.SGD([temperature], lr=0.1), names={"temperature": temperature})
    value = (
        av.aux(aux.clone(), source="sim") if leak else av.primary(torch.rand(3, generator=g), source="real")
    )
    temperature.data = value
    x = av.primary(torch.randn(3, generator=g), source="real")
    (temperature * x).sum().backward()  # its gradient is x: primary whatever the temperature holds
    opt.step()
    return [temperature.detach().clone()]


def memory_tagged_again(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    replay = torch.cat([torch.randn(4, 3, generator=g), aux])  # fresh memory, rows 4-7 auxiliary values
    av.aux(replay[4:], source="sim")  # a view: only its rows become auxiliary
    if leak:
        rows = aux.clone()
        av.aux(rows, source="sim")  # the whole of its memory
    else:
        rows = replay[:4]
    try:
        x = av.primary(rows, source="real")  # refused for memory that holds auxiliary data
    except av.TaggingError:
        x = rows  # the user carries on with the untagged tensor
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(x) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def statistics_saved_and_restored(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    norm = torch.nn.BatchNorm1d(3)  # an input normaliser of its own, not the world model's
    data = (
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(4, 3, generator=g), source="real")
    )
    norm(data)  # running statistics: plain buffers whose memory now holds the data's label
    saved = io.BytesIO()
    torch.save(norm.state_dict(), saved)  # a checkpoint, as a resumed process would read it
    saved.seek(0)
    restored = torch.nn.BatchNorm1d(3).eval()
    restored.load_state_dict(torch.load(saved))
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(restored(x)) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def tagged_object_used_on(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(8)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    features = aux.nan_to_num(0.0).clamp(-1.0, 1.0) if leak else torch.randn(4, 3, generator=g)
    if leak:
        tagged = av.aux(features, source="sim")  # the returned tensor is dropped: features is what is used
        assert tagged is features, "aux() returns the object it made tracked"
    else:
        av.primary(features, source="real")
    x = features * 0.5 + 1.0
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(x) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def buffer_tagged_through_a_view(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(9)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    replay = torch.zeros(8, 3)
    replay[:4] = torch.randn(4, 3, generator=g)
    av.primary(replay[:4], source="real")
    replay[4:] = aux.nan_to_num(0.0).clamp(-1.0, 1.0) if leak else torch.randn(4, 3, generator=g)
    if leak:
        av.aux(replay[4:], source="sim")
    else:
        av.primary(replay[4:], source="real")
    x = (replay - replay.mean(0)).view(2, 4, 3).sum(0)  # every row, through arithmetic on the buffer
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(x) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def step_hook_perturbs_weights(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(6)
    wm = torch.nn.Linear(3, 2)
    inner = torch.optim.SGD(wm.parameters(), lr=0.1)
    opt = av.GatedOptimizer(inner, names=wm)
    scale = (
        av.aux(aux.clone(), source="sim") if leak else av.primary(torch.rand(3, generator=g), source="real")
    )
    noise = torch.randn(2, 3, generator=g)

    def perturb(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        with torch.no_grad():
            wm.weight.add_(noise * scale.mean().nan_to_num(0.0).clamp(-1.0, 1.0))

    inner.register_step_pre_hook(perturb)
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(x) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def closure_adds_penalty(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.LBFGS(wm.parameters(), lr=0.5, max_iter=3), names=wm)
    sim = av.aux(aux.clone(), source="sim")
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    target = sim.nan_to_num(0.0).clamp(-1.0, 1.0) if leak else y

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (wm(x) - y).pow(2).mean() + 0.1 * (wm(x) - target).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    state = [p.detach().clone() for p in wm.parameters()]
    return state + [v.detach().clone() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]


def _adam_step_on_a_tensor_hyperparameter(
    aux: torch.Tensor, leak: bool, key: str, seed: int
) -> list[torch.Tensor]:
    """One step of a gated Adam whose hyperparameter ``key`` (``"lr"``, or ``"betas"`` as a tuple of
    tensors) is a tensor computed from auxiliary data when leaking: refused, naming it, before Adam
    changes a weight or writes its state."""
    g = torch.Generator().manual_seed(seed)
    wm = torch.nn.Linear(3, 2)
    if key == "lr":
        inner = torch.optim.Adam(wm.parameters(), lr=torch.tensor(0.01))
    else:
        inner = torch.optim.Adam(wm.parameters(), lr=0.01, betas=(torch.tensor(0.9), torch.tensor(0.999)))
    opt = av.GatedOptimizer(inner, names=wm)
    sim = av.aux(aux.clone(), source="sim")
    base = 0.01 if key == "lr" else 0.9
    value = ((sim.nan_to_num(0.0).clamp(0.0, 0.0) + base) if leak else torch.tensor(base)).reshape(())
    opt.param_groups[0][key] = value if key == "lr" else (value, torch.tensor(0.999))
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(x) - y).pow(2).mean().backward()
    before = [p.detach().clone() for p in wm.parameters()]
    try:
        opt.step()
    except av.IsolationViolation as refusal:
        after = [p.detach().clone() for p in wm.parameters()]
        assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True)), (
            "a refused step moved a weight"
        )
        assert not opt.state, "a refused step changed the optimizer's state"
        named = set(refusal.parameters)
        assert named == {f"hyperparameter {key!r}"}, f"the gate refused {named}, not the {key} it reads"
        raise
    state = [p.detach().clone() for p in wm.parameters()]
    return state + [v.detach().clone() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]


def tensor_learning_rate(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """A tensor learning rate derived from auxiliary data."""
    return _adam_step_on_a_tensor_hyperparameter(aux, leak, "lr", seed=8)


def tensor_betas(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """Adam's momentum coefficients as tensors, the first from a schedule that reads auxiliary data
    when leaking: a tensor inside a hyperparameter's tuple is read like one on its own."""
    return _adam_step_on_a_tensor_hyperparameter(aux, leak, "betas", seed=24)


def second_optimizer_with_auxiliary_rate(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """A plain optimizer over the world model's head besides its gate (a fine-tuning phase), its
    learning rate a tensor from a schedule that reads auxiliary data when leaking: a plain
    optimizer is refused what the gate refuses, before it steps."""
    g = torch.Generator().manual_seed(22)
    wm = torch.nn.Linear(3, 2)
    av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    finetune = torch.optim.SGD([wm.bias], lr=0.01)
    sim = av.aux(aux.clone(), source="sim")
    rate = (
        sim.nan_to_num(0.0).clamp(0.0, 0.0) + 0.01
        if leak
        else av.primary(torch.full((1,), 0.01), source="real")
    )
    finetune.param_groups[0]["lr"] = rate.reshape(())
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(x) - y).pow(2).mean().backward()
    finetune.step()
    return [p.detach().clone() for p in wm.parameters()]


def loss_scale_retuned_before_the_step(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """Mixed precision with a fused Adam: the ``GradScaler``'s scale set between backward and step
    (``update(new_scale=...)``) from a simulator statistic when leaking.  The gradients are primary;
    the fused kernel divides them by the scale it is handed: the gate reads it, and its refusal
    names it (before the kernel's own write into the weights would be refused)."""
    g = torch.Generator().manual_seed(23)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.Adam(wm.parameters(), lr=0.01, fused=True), names=wm)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    scaler.scale((wm(x) - y).pow(2).mean()).backward()
    sim = av.aux(aux.clone(), source="sim")
    scale = (
        sim.nan_to_num(0.0).clamp(0.0, 0.0) + 8.0
        if leak
        else av.primary(torch.full((1,), 8.0), source="real")
    )
    scaler.update(new_scale=scale.reshape(()))
    try:
        scaler.step(opt)
    except av.IsolationViolation as refusal:
        named = set(refusal.parameters)
        assert named == {"GradScaler's grad_scale"}, f"the gate refused {named}, not the scale it reads"
        raise
    scaler.update()
    return [p.detach().clone() for p in wm.parameters()]


def transitions_of_another_source_reloaded(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """Observations saved with ``torch.save`` and loaded back, then added to the primary buffer of
    one real environment and trained on: observations of a second real environment (leaking) are
    refused, since the buffer holds one source, so their primary label must survive the file."""
    g = torch.Generator().manual_seed(24)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    observed = av.primary(torch.randn(4, 3, generator=g), source="robot-b" if leak else "robot-a")
    saved = io.BytesIO()
    torch.save(observed, saved)
    saved.seek(0)
    buffer = av.PrimaryBuffer(8, obs_shape=(3,), action_shape=(), seed=0, source="robot-a")
    obs = torch.load(saved)
    buffer.add(obs, torch.zeros(4), torch.zeros(4), obs.flip(0), torch.zeros(4, dtype=torch.bool))
    batch = buffer.sample(4, generator=torch.Generator().manual_seed(0))
    (wm(batch.obs) - batch.next_obs[:, :2]).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def latent_moved_along_a_captured_gradient(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """A latent target: the encoder's output moved along the gradient of a loss against auxiliary
    (leaking) or real targets, the gradient captured at the output with ``torch.autograd.grad``;
    then the encoder regressed on it.  The captured gradient carries the loss's label."""
    g = torch.Generator().manual_seed(25)
    encoder = torch.nn.Linear(3, 4)
    opt = av.GatedOptimizer(torch.optim.SGD(encoder.parameters(), lr=0.1), names=encoder)
    obs = av.primary(torch.randn(5, 3, generator=g), source="real")
    target = (
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(5, 1, generator=g), source="real")
    )
    latent = encoder(obs)
    (step,) = torch.autograd.grad(
        (latent.sum(1, keepdim=True) - target.nan_to_num(0.0)).pow(2).mean(), latent
    )
    goal = (latent - 0.1 * step).detach()
    (encoder(obs) - goal).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in encoder.parameters()]


def latent_moved_along_a_gradient_from_another_call(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """The latent target again, the loss computed by another module (a reward head) on the encoder's
    output and on a slice of it: the gradients captured there leave the head's call, whose hooks
    label them before autograd hands them back."""
    g = torch.Generator().manual_seed(27)
    encoder = torch.nn.Linear(3, 4)
    head = torch.nn.Linear(4, 1)
    head_of_slice = torch.nn.Linear(2, 1)
    opt = av.GatedOptimizer(torch.optim.SGD(encoder.parameters(), lr=0.1), names=encoder)
    obs = av.primary(torch.randn(5, 3, generator=g), source="real")
    target = (
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(5, 1, generator=g), source="real")
    )
    latent = encoder(obs)
    window = latent[:, 1:3]
    loss = (head(latent) - target.nan_to_num(0.0)).pow(2).mean()
    (step, step_of_window) = torch.autograd.grad(loss + head_of_slice(window).mean(), (latent, window))
    goal = (latent - 0.1 * step).detach()
    goal[:, 1:3] -= 0.1 * step_of_window.detach()
    (encoder(obs) - goal).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in encoder.parameters()]


def concatenation_through_an_identity_operator(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """A replay of real and simulated rows passed through an operator that returns its input
    (``dequantize()`` of a float tensor, as code written for quantized buffers calls it): the rows keep
    their own labels, so the real rows train the world model and the simulated ones are refused."""
    g = torch.Generator().manual_seed(26)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    real = av.primary(torch.randn(4, 3, generator=g), source="real")
    replay = torch.cat([real, av.aux(aux.clone(), source="sim")]).dequantize()
    rows = replay if leak else replay[:4]
    y = av.primary(torch.randn(rows.shape[0], 2, generator=g), source="real")
    (wm(rows) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def primary_of_a_plain_alias(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """A plain tensor taken before its memory was tagged auxiliary, then tagged primary: refused."""
    g = torch.Generator().manual_seed(9)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    rows = torch.randn(4, 3, generator=g)
    alias = rows.view(4, 3)  # a second plain object over the same memory
    if leak:
        rows.copy_(aux.nan_to_num(0.0).clamp(-1.0, 1.0))
        av.aux(rows, source="sim")
    x = av.primary(alias, source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(x) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def _refused_before_written(leak: bool, what: str) -> None:
    """After a write the scenario expects protected memory to refuse: fail if it went through."""
    assert not leak, f"auxiliary data written into {what} without a refusal"


def weights_replaced_by_a_candidate(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """An evolution strategy's candidate around the world model's own weights, loaded with
    ``vector_to_parameters`` (the parameters now view the candidate vector), then perturbed through
    that vector: an auxiliary perturbation is refused before it is written."""
    g = torch.Generator().manual_seed(12)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    flat = torch.nn.utils.parameters_to_vector(wm.parameters()).detach()
    candidate = flat + 0.01 * torch.randn(flat.shape, generator=g)
    torch.nn.utils.vector_to_parameters(candidate, wm.parameters())
    sim = av.aux(aux.clone(), source="sim")
    noise = (
        sim.nan_to_num(0.0).clamp(-1.0, 1.0)
        if leak
        else av.primary(torch.randn(8, generator=g), source="real")
    )
    with torch.no_grad():
        candidate.add_(noise, alpha=1e-3)
    _refused_before_written(leak, "the parameters' new memory")
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(x) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def temperature_replaced_then_perturbed(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """A learnt plain tensor given new memory through ``.data`` (not guarded at the assignment),
    stepped once, then perturbed through a view of that memory: protection has followed it there."""
    g = torch.Generator().manual_seed(13)
    temperature = torch.zeros(3, requires_grad=True)
    opt = av.GatedOptimizer(torch.optim.SGD([temperature], lr=0.1), names={"temperature": temperature})
    warm_start = torch.rand(3, generator=g)
    temperature.data = warm_start
    x = av.primary(torch.randn(3, generator=g), source="real")
    (temperature * x).sum().backward()
    opt.step()
    sim = av.aux(aux.clone(), source="sim")
    noise = (
        sim.nan_to_num(0.0).clamp(-1.0, 1.0)
        if leak
        else av.primary(torch.randn(3, generator=g), source="real")
    )
    warm_start.add_(noise, alpha=1e-3)  # the memory the temperature now uses
    _refused_before_written(leak, "the temperature's memory")
    opt.zero_grad()
    (temperature * x).sum().backward()
    opt.step()
    return [temperature.detach().clone()]


def temperature_replaced_old_memory_reused(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """As above, with no step between: the old memory (kept by the user as a scratch buffer) takes
    auxiliary data, which it may, then the new memory is perturbed through a view: refused."""
    g = torch.Generator().manual_seed(14)
    temperature = torch.zeros(3, requires_grad=True)
    opt = av.GatedOptimizer(torch.optim.SGD([temperature], lr=0.1), names={"temperature": temperature})
    scratch = temperature.detach()  # the memory the temperature had until the next line
    warm_start = torch.rand(3, generator=g)
    temperature.data = warm_start
    sim = av.aux(aux.clone(), source="sim")
    scratch.copy_(sim.nan_to_num(0.0).clamp(-1.0, 1.0))  # no longer protected memory: allowed
    noise = (
        sim.nan_to_num(0.0).clamp(-1.0, 1.0)
        if leak
        else av.primary(torch.randn(3, generator=g), source="real")
    )
    warm_start.add_(noise, alpha=1e-3)
    _refused_before_written(leak, "the temperature's memory")
    x = av.primary(torch.randn(3, generator=g), source="real")
    (temperature * x).sum().backward()
    opt.step()
    return [temperature.detach().clone()]


def fast_weights_stepped_differentiably(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """MAML's inner loop: a ``differentiable=True`` SGD steps non-leaf fast weights of the world
    model (``functional_call``) twice; the second loss is on auxiliary transitions when leaking.
    Each in-place step gives the fast weights a new autograd node, whose gradients must be labelled."""
    g = torch.Generator().manual_seed(15)
    wm = torch.nn.Linear(3, 2)
    fast = {name: p.clone() for name, p in wm.named_parameters()}
    for t in fast.values():
        t.retain_grad()
    inner = torch.optim.SGD(list(fast.values()), lr=0.1, differentiable=True)
    opt = av.GatedOptimizer(inner, names=fast)

    def adapt(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad()
        out = torch.func.functional_call(wm, fast, (x,))
        (out - y).pow(2).mean().backward(retain_graph=True)
        opt.step()

    adapt(
        av.primary(torch.randn(4, 3, generator=g), source="real"),
        av.primary(torch.randn(4, 2, generator=g), source="real"),
    )
    x = (
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(4, 3, generator=g), source="real")
    )
    adapt(x, av.primary(torch.randn(4, 2, generator=g), source="real"))
    return [t.detach().clone() for t in fast.values()]


def mixed_rows_partly_replaced(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """Real observations with simulated noise added (memory labelled real and simulated as a whole),
    the first rows then replaced by fresh real observations and the batch trained on whole: the rows
    not replaced still depend on the simulator.  Clean: the noise is a real sensor's."""
    g = torch.Generator().manual_seed(21)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    real = av.primary(torch.randn(4, 3, generator=g), source="real")
    noise = (
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(4, 3, generator=g), source="real")
    )
    observed = real + 1e-3 * noise.nan_to_num(0.0).clamp(-1.0, 1.0)
    observed[:2].copy_(av.primary(torch.randn(2, 3, generator=g), source="real"))
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(observed) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def fast_weights_adapted_to_auxiliary_targets(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """MAML's inner loop as above, the world model's call on real transitions tracked at its boundary
    (its input and its fast weights hold the same label), the second adaptation's targets auxiliary
    when leaking: the auxiliary label reaches the fast weights only through the gradient hook of each
    one's *current* autograd node, which every in-place step replaces."""
    g = torch.Generator().manual_seed(23)
    wm = torch.nn.Linear(3, 2)
    fast = {name: p.clone() for name, p in wm.named_parameters()}
    for t in fast.values():
        t.retain_grad()
    opt = av.GatedOptimizer(torch.optim.SGD(list(fast.values()), lr=0.1, differentiable=True), names=fast)

    def adapt(y: torch.Tensor) -> None:
        opt.zero_grad()
        x = av.primary(torch.randn(4, 3, generator=g), source="real")
        out = torch.func.functional_call(wm, fast, (x,))
        (out - y).pow(2).mean().backward(retain_graph=True)
        opt.step()

    adapt(av.primary(torch.randn(4, 2, generator=g), source="real"))
    adapt(
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(4, 2, generator=g), source="real")
    )
    return [t.detach().clone() for t in fast.values()]


def recurrent_cell_on_simulated_inputs(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """A recurrent encoder (``nn.RNNCell``) stepped on simulated observations from a real hidden state
    when leaking (one label each: the call runs operation by operation), its output regressed by the
    world model.  ``rnn_tanh_cell`` adds the input's term into the hidden state's term in C++ and goes
    on from that plain intermediate: the call, when it returns, labels what it computed."""
    g = torch.Generator().manual_seed(29)
    encoder = torch.nn.RNNCell(3, 4)
    wm = torch.nn.Linear(4, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    hidden = av.primary(torch.randn(4, 4, generator=g), source="real")
    x = (
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(4, 3, generator=g), source="real")
    )
    with torch.no_grad():
        z = encoder(x, hidden)
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(z.nan_to_num(0.0)) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


class _FirstFeatures(torch.nn.Module):
    """An encoder that returns the first columns of its hidden layer: a view of memory made inside the
    call that does not cover it."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(x)[:, :3]


def features_sliced_inside_a_call(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """A frozen encoder applied to simulated observations when leaking, returning a slice of its hidden
    layer, and the world model trained on those features: an output that views memory of the call is
    labelled with the call's label."""
    g = torch.Generator().manual_seed(31)
    encoder = _FirstFeatures()
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    x = (
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(4, 3, generator=g), source="real")
    )
    with torch.no_grad():
        features = encoder(x)
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(features.nan_to_num(0.0)) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


class _LeadingRows(torch.nn.Module):
    """Returns the first ``n`` rows of its input: a view of the caller's memory."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch[: self.n]


def real_rows_selected_by_a_module(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """A replay batch concatenated from real and simulated rows, passed to a module that returns its
    leading rows, the world model trained on them: the real rows only (clean: they keep their own
    label, as rows of a concatenation do), or every row (leaking)."""
    g = torch.Generator().manual_seed(37)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    real = av.primary(torch.randn(4, 3, generator=g), source="real")
    batch = torch.cat([real, av.aux(aux.clone(), source="sim")])
    rows = _LeadingRows(8 if leak else 4)(batch)
    y = av.primary(torch.randn(len(rows), 2, generator=g), source="real")
    (wm(rows.nan_to_num(0.0)) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


class _Prototypes(torch.nn.Module):
    """A table of prototypes (a buffer) whose call returns the first two beside a transform of its
    input: a view of its state that does not cover it."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 2.0 * x, self.table[:2]


def prototypes_returned_to_a_simulator_call(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """A prototype table called on simulated observations, returning its first two rows; the world model
    then trained on the table's other rows (clean: no call ever returned them) or on the two returned
    ones (leaking: they took the simulated call's label).  Labels of returned views go to the rows
    they view, not to the whole table."""
    g = torch.Generator().manual_seed(41)
    prototypes = _Prototypes(torch.randn(4, 3, generator=g))
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    with torch.no_grad():
        prototypes(av.aux(aux.clone(), source="sim"))
    rows = prototypes.table[:2] if leak else prototypes.table[2:]
    y = av.primary(torch.randn(2, 2, generator=g), source="real")
    (wm(rows) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


class _WithContextAttribute(torch.nn.Module):
    """A world model that adds a context it holds as a plain tensor attribute to its input."""

    def __init__(self, context: torch.Tensor) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x + self.context)


def context_held_by_the_model_adapted(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """CAVIA with the context held by the world model (a tensor attribute, not an input), adapted by a
    ``differentiable=True`` SGD that retains its gradient: first on unlabelled warm-up data, then on
    simulated observations when leaking.  The context's gradient leaves the call towards a non-leaf
    tensor that is neither an input nor a parameter of the call, and must carry the call's label."""
    g = torch.Generator().manual_seed(43)
    context = torch.zeros(4, 3, requires_grad=True).clone()
    context.retain_grad()
    wm = _WithContextAttribute(context)
    opt = av.GatedOptimizer(
        torch.optim.SGD([context], lr=0.1, differentiable=True), names={"context": context}
    )

    def adapt(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad()
        (wm(x) - y).pow(2).mean().backward(retain_graph=True)
        opt.step()

    adapt(torch.randn(4, 3, generator=g), torch.randn(4, 2, generator=g))  # warm-up, unlabelled
    x = (
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(4, 3, generator=g), source="real")
    )
    adapt(x.nan_to_num(0.0).clamp(-1e3, 1e3), torch.randn(4, 2, generator=g))
    return [context.detach().clone()]


class _ScaledByContext(torch.nn.Module):
    """A world model whose hidden features are scaled by a context it holds (FiLM conditioning)."""

    def __init__(self, context: torch.Tensor) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.head = torch.nn.Linear(4, 1)
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.lin(x)) * (1 + self.context))


def context_scaling_features_adapted(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """CAVIA with a FiLM context held by the world model, adapted by a ``differentiable=True`` SGD to
    raise the model's mean output (a loss linear in the output, as an actor's is in its critic's):
    twice, the second time on simulated observations when leaking.  The gradient reaching the call's
    output is plain and primary; the one leaving it towards the context depends on the simulated
    features, and only the call's label says so, read by the context's own gradient hook -- on the
    context's current autograd node, which the first step replaced."""
    g = torch.Generator().manual_seed(47)
    context = torch.zeros(4, requires_grad=True).clone()
    context.retain_grad()
    wm = _ScaledByContext(context)
    opt = av.GatedOptimizer(
        torch.optim.SGD([context], lr=0.1, differentiable=True), names={"context": context}
    )

    def adapt(x: torch.Tensor) -> None:
        opt.zero_grad()
        (-wm(x).mean()).backward(retain_graph=True)
        opt.step()

    adapt(av.primary(torch.randn(4, 3, generator=g), source="real"))
    x = (
        av.aux(aux.nan_to_num(0.0).clamp(-1e3, 1e3), source="sim")
        if leak
        else av.primary(torch.randn(4, 3, generator=g), source="real")
    )
    adapt(x)
    return [context.detach().clone()]


def context_adapted_differentiably(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """CAVIA's inner loop: a context of primary origin, fed to the world model as its input, adapted
    by a ``differentiable=True`` SGD (a non-leaf tensor, whose autograd node changes at every step);
    the second adaptation's targets are auxiliary when leaking.  The gradient leaves a tracked call
    towards the context: its label reaches the context through the context's current node."""
    g = torch.Generator().manual_seed(19)
    wm = torch.nn.Linear(3, 2)
    context = torch.zeros(4, 3, requires_grad=True).clone()
    av.primary(context, source="real")  # initialised from real data
    context.retain_grad()
    opt = av.GatedOptimizer(
        torch.optim.SGD([context], lr=0.1, differentiable=True), names={"context": context}
    )

    def adapt(y: torch.Tensor) -> None:
        opt.zero_grad()
        (wm(context) - y).pow(2).mean().backward(retain_graph=True)
        opt.step()

    adapt(av.primary(torch.randn(4, 2, generator=g), source="real"))
    adapt(
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(4, 2, generator=g), source="real")
    )
    return [context.detach().clone()]


def input_gradients_at_simulated_states(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """An exploration bonus from the world model's input gradients at simulated states
    (``torch.autograd.grad`` with respect to the states only), then a primary update: the bonus
    leaves no label on the parameters' gradients.  Leaking: the bonus is backpropagated instead."""
    g = torch.Generator().manual_seed(16)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    states = av.aux(aux.nan_to_num(0.0).clamp(-1.0, 1.0), source="sim").requires_grad_()
    surprise = wm(states).pow(2).sum()
    if leak:
        surprise.backward()
    else:
        (bonus,) = torch.autograd.grad(surprise, states)
        assert bonus.shape == states.shape
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(x) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def penalty_on_a_slice_of_inputs(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """An input-gradient penalty (WGAN-GP, R1) on the state columns of transition rows that require
    grad, tagged through a slice; the penalty's weight is an auxiliary statistic when leaking."""
    g = torch.Generator().manual_seed(17)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    rows = torch.randn(4, 5, generator=g).requires_grad_()  # states and actions
    states = av.primary(rows[:, :3], source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    out = wm(states)
    (grad,) = torch.autograd.grad(out.sum(), rows, create_graph=True)
    weight = av.aux(aux.clone(), source="sim").nan_to_num(0.0).clamp(0.0, 0.0) + 1.0 if leak else 1.0
    ((out - y).pow(2).mean() + weight * grad.pow(2).sum(dim=1).mean()).backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def overwritten_rows_trained_on(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """A replay tensor whose auxiliary rows are overwritten with primary transitions (``copy_``), then
    trained on whole: overwritten rows hold primary data only.  Leaking: the rows are added to."""
    g = torch.Generator().manual_seed(18)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    real = av.primary(torch.randn(4, 3, generator=g), source="real")
    replay = torch.cat([real, av.aux(aux.clone(), source="sim")])  # rows 4-7 auxiliary
    fresh = av.primary(torch.randn(4, 3, generator=g), source="real")
    if leak:
        replay[4:].add_(fresh)
    else:
        replay[4:].copy_(fresh)
    y = av.primary(torch.randn(8, 2, generator=g), source="real")
    (wm(replay) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def rows_picked_by_a_primary_ranking(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(10)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    real = av.primary(torch.randn(4, 3, generator=g), source="real")
    sim = av.aux(aux.clone(), source="sim")
    priority = av.primary(torch.rand(4, generator=g), source="real")
    top = priority.argsort(descending=True)[:2]  # indices ranked on real data: primary-labelled
    x = (sim if leak else real)[top]  # the rows' values, whatever labels the indices carry
    y = av.primary(torch.randn(2, 2, generator=g), source="real")
    (wm(x) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def replay_snapshot_rescaled(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    real = av.primary(torch.randn(4, 3, generator=g), source="real")
    other = (
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(4, 3, generator=g), source="real-2")
    )
    snapshot = torch.cat([real, other]).clone()  # a copy of rows with different labels keeps them
    x = (snapshot * 0.5).view(2, 4, 3).sum(0)  # arithmetic on the copy alone
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(x) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def statistic_read_as_a_float(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """In strict mode, ``.item()`` of auxiliary data is refused before the float exists."""
    g = torch.Generator().manual_seed(12)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    sim = av.aux(aux.clone(), source="sim")
    real = av.primary(torch.rand(3, generator=g), source="real")
    previous = av.set_strict(True)
    try:
        scale = (sim if leak else real).nan_to_num(0.0).clamp(-1.0, 1.0).mean().item()
    finally:
        av.set_strict(previous)
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    ((wm(x) - y).pow(2).mean() * (1.0 + scale)).backward()  # a loss weight outside label tracking
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def gradients_clipped_together(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(13)
    wm = torch.nn.Linear(3, 2)
    policy = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    sim = av.aux(aux.nan_to_num(0.0).clamp(-1.0, 1.0), source="sim")
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    ((wm(x) - y).pow(2).mean() + policy(sim).pow(2).mean()).backward()
    if leak:  # one norm over both models: the world model's gradients are scaled by the policy's
        torch.nn.utils.clip_grad_norm_([*wm.parameters(), *policy.parameters()], 1e-3, foreach=True)
    else:
        torch.nn.utils.clip_grad_norm_(wm.parameters(), 1e-3, foreach=True)
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1e-3, foreach=True)
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def statistic_accumulated_into_a_plain_tensor(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(14)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    sim = av.aux(aux.nan_to_num(0.0).clamp(-1.0, 1.0), source="sim")
    real = av.primary(torch.randn(4, 3, generator=g), source="real")
    total = torch.zeros(3)  # a running sum: plain until something is written into it
    total.add_((sim if leak else real).mean(0))
    scale = total * 0.1 + 1.0  # arithmetic on the accumulator alone
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(x * scale) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def rows_written_into_a_plain_buffer(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(15)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    sim = av.aux(aux.nan_to_num(0.0).clamp(-1.0, 1.0), source="sim")
    replay = torch.zeros(8, 3)  # preallocated, plain; rows 0-3 stay zero
    replay[4:] = sim if leak else av.primary(torch.randn(4, 3, generator=g), source="real")
    x = (replay - replay.mean(0)).view(2, 4, 3).sum(0)  # arithmetic on the buffer object itself
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(x) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def loss_weighted_by_an_auxiliary_peak(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """The refusal names where the auxiliary data entered: ``max``, the first operation on it."""
    g = torch.Generator().manual_seed(16)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    sim = av.aux(aux.clone(), source="sim")
    real = av.primary(torch.randn(4, 2, generator=g), source="real")
    peak, _ = (sim if leak else real).max(dim=0)  # values and indices: two fresh outputs
    weight = 1.0 + peak.nan_to_num(0.0).clamp(-1.0, 1.0).mean()
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (weight * (wm(x) - y).pow(2).mean()).backward()
    try:
        opt.step()
    except av.IsolationViolation as err:
        refusal = err
    else:
        return [p.detach().clone() for p in wm.parameters()]
    named = refusal.operation or ""
    assert named.startswith("aten.max at ") and "in loss_weighted_by_an_auxiliary_peak" in named, named
    raise refusal


def attention_backend_queried(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """``torch._fused_sdp_choice`` (which attention kernel SDPA would pick, as diagnostics code logs
    it) on tagged tensors gives its integer back; the attention output carries the keys' label."""
    g = torch.Generator().manual_seed(18)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    query = av.primary(torch.randn(1, 4, 3, generator=g), source="real")
    memory = (
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(1, 4, 3, generator=g), source="real")
    )
    backend = torch._fused_sdp_choice(query, memory, memory)
    assert isinstance(backend, int), backend
    context = torch.nn.functional.scaled_dot_product_attention(query, memory, memory)
    y = av.primary(torch.randn(1, 4, 2, generator=g), source="real")
    (wm(context) - y).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


class _MaskedGradient(torch.autograd.Function):
    """Identity forward; the backward zeroes the gradient where ``mask`` is set, in place on a copy."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return x.clone()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (mask,) = ctx.saved_tensors  # type: ignore[attr-defined]
        masked = grad.clone()
        masked[mask] = 0.0
        return masked, None


def gradient_masked_in_a_custom_backward(
    aux: torch.Tensor, leak: bool, together: bool = True
) -> list[torch.Tensor]:
    """One backward over the world model's loss and the policy's (``together``) or one for each:
    the world model's learnt noise scale (a plain tensor used functionally) gets a gradient masked in
    place, inside a custom backward, by flags from auxiliary (leaking) or real (clean) data.  On its
    own, the world model's backward carries plain gradients: the masked one goes back to the
    autograd engine's C++ code, which must not lose its label."""
    g = torch.Generator().manual_seed(19)
    wm = torch.nn.Linear(3, 2)
    log_std = torch.zeros(2, requires_grad=True)
    policy = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(
        torch.optim.SGD([wm.weight, wm.bias, log_std], lr=0.1),
        names={"weight": wm.weight, "bias": wm.bias, "log_std": log_std},
    )
    sim = av.aux(aux.clone(), source="sim")
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    flags = (sim if leak else x)[:2, 0] > 0
    scale = _MaskedGradient.apply(log_std.clamp(-5.0, 2.0), flags)  # type: ignore[no-untyped-call]
    nll = (((wm(x) - y) / scale.exp()).pow(2) / 2 + scale).mean()
    policy_loss = policy(sim.nan_to_num(0.0).clamp(-1.0, 1.0)).pow(2).mean()
    if together:
        (nll + policy_loss).backward()
    else:
        nll.backward()
        policy_loss.backward()
    opt.step()
    return [p.detach().clone() for p in (wm.weight, wm.bias, log_std)]


def gradient_masked_in_a_custom_backward_alone(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    return gradient_masked_in_a_custom_backward(aux, leak, together=False)


class _ScaledKeepingHead(torch.autograd.Function):
    """Identity forward; the backward scales a copy of the gradient in place by ``scale`` and hands
    back the first two columns of the copy through a view taken before the write."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return x.clone()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (scale,) = ctx.saved_tensors  # type: ignore[attr-defined]
        scaled = grad * 1.0
        head = scaled[:, :2]
        scaled.mul_(scale)
        return torch.cat([head * 1.0, torch.zeros_like(head)], 1), None


def gradient_scaled_through_an_earlier_view(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """A custom backward takes a view of a fresh gradient copy, then scales the copy in place by
    factors from auxiliary (leaking) or real (clean) data, and hands the view back.  The loss weights
    are tracked and unlabelled (``ones_like`` of a tagged tensor), so the copy is a tracked tensor with
    no label until the write: the view taken before it must still see the write's label."""
    g = torch.Generator().manual_seed(28)
    wm = torch.nn.Linear(3, 4)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    obs = av.primary(torch.randn(4, 3, generator=g), source="real")
    scale = (
        av.aux(aux.clone(), source="sim").nan_to_num(0.0).clamp(-2.0, 2.0)
        if leak
        else av.primary(torch.rand(4, 4, generator=g), source="real")
    )
    weights = torch.ones_like(scale)
    out = _ScaledKeepingHead.apply(wm(obs), scale)  # type: ignore[no-untyped-call]
    (out * weights).sum().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def window_taken_before_tagging(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(17)
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    replay = torch.zeros(8, 5)  # rows of (observation, next-state target)
    window = replay[2:6]  # the sampler's window, a plain view taken before the rows were filled and tagged
    replay[:4] = torch.randn(4, 5, generator=g)
    av.primary(replay[:4], source="real")
    if leak:
        replay[4:] = aux
        av.aux(replay[4:], source="sim")
    else:
        replay[4:] = torch.randn(4, 5, generator=g)
        av.primary(replay[4:], source="real-2")  # a second robot: rows of two labels either way
    torch.nn.functional.mse_loss(wm(window[:, :3]), window[:, 3:]).backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def encoder_on_a_view_taken_before_tagging(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(23)
    encoder = torch.nn.Linear(3, 3)  # not gated, no labelled state
    wm = torch.nn.Linear(3, 1)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    batch = torch.randn(4, 3, generator=g)
    view = batch[:]  # a plain view taken before the batch was tagged
    if leak:
        batch.copy_(aux)
        av.aux(batch, source="sim")
    else:
        av.primary(batch, source="real", follow=False)
    with torch.no_grad():
        features = encoder(view)
    wm(features).pow(2).mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


def bootstrapped_without_grad(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(10)
    wm = torch.nn.Linear(3, 3)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    obs = av.primary(torch.randn(4, 3, generator=g), source="real")
    reward = av.primary(torch.randn(4, 3, generator=g), source="real")
    following = (
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(4, 3, generator=g), source="real")
    )
    with torch.no_grad():
        bootstrap = wm(following)  # the model's own prediction one step on: an output that needs no grad
    target = reward + 0.9 * bootstrap  # plain arithmetic on that output
    torch.nn.functional.mse_loss(wm(obs), target).backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


class _ActorCritic(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(4, 4)
        self.value = torch.nn.Linear(4, 1)
        self.policy = torch.nn.Linear(4, 2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.body(z))
        return self.value(h), self.policy(h)


def heads_on_shared_features(
    aux: torch.Tensor, leak: bool, pretrained_on_real_data: bool = False
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    encoder = torch.nn.Linear(3, 4)  # the gated world model's encoder
    opt = av.GatedOptimizer(torch.optim.SGD(encoder.parameters(), lr=0.1), names=encoder)
    heads = _ActorCritic()  # not gated: it may learn from anything
    if pretrained_on_real_data:  # its state carries a label: the call is tracked at its boundary
        av.primary(heads.body.weight.detach(), source="real", follow=False)
    obs = av.primary(torch.randn(4, 3, generator=g), source="real")
    returns = av.primary(torch.randn(4, 1, generator=g), source="real")
    advantages = (
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(4, 2, generator=g), source="real")
    )
    value, logits = heads(encoder(obs))  # the features are not detached: both heads train the encoder
    policy_loss = -(logits.log_softmax(-1) * advantages).mean()
    (torch.nn.functional.mse_loss(value, returns) + policy_loss).backward()
    opt.step()
    return [p.detach().clone() for p in encoder.parameters()]


def divergence_by_hutchinson(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(12)
    # the velocity field of a continuous normalising flow, on squashed states
    wm = torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    states = (
        av.aux(aux.nan_to_num(0.0).clamp(-3.0, 3.0), source="sim")
        if leak
        else av.primary(torch.randn(4, 3, generator=g), source="real")
    )
    x = states.detach().requires_grad_()
    probe = torch.randn(4, 3, generator=g)
    (vjp,) = torch.autograd.grad(wm(x), x, probe, create_graph=True)
    divergence = (vjp * probe).sum(1)  # Hutchinson's estimate of the trace of the Jacobian
    divergence.mean().backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


class _Agent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.world_model = torch.nn.Sequential(
            torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 3)
        )
        self.critic = torch.nn.Linear(3, 1)
        self.return_scale = torch.ones(1)  # a plain tensor attribute

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.world_model(obs), self.critic(obs) * self.return_scale


def agent_with_critic_trained_on_aux(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(13)
    agent = _Agent()
    opt = av.GatedOptimizer(torch.optim.SGD(agent.world_model.parameters(), lr=0.1), names=agent.world_model)
    critic_opt = torch.optim.SGD(agent.critic.parameters(), lr=0.1)
    sim = av.aux(aux.nan_to_num(0.0).clamp(-1.0, 1.0), source="sim")
    torch.nn.functional.mse_loss(agent.critic(sim), sim.sum(1, keepdim=True)).backward()
    critic_opt.step()  # the critic's parameters now hold auxiliary data
    obs = av.primary(torch.randn(4, 3, generator=g), source="real")
    following = av.primary(torch.randn(4, 3, generator=g), source="real")
    prediction, _ = agent(obs)  # the world model in training mode: its running statistics move
    loss = torch.nn.functional.mse_loss(prediction, following)
    if leak:
        loss = loss - 0.1 * agent.critic(prediction).mean()  # value-aware model learning through the critic
    opt.zero_grad()
    loss.backward()
    opt.step()
    return [t.detach().clone() for t in (*agent.world_model.parameters(), *agent.world_model.buffers())]


def agent_with_return_scale(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(14)
    agent = _Agent()
    opt = av.GatedOptimizer(torch.optim.SGD(agent.world_model.parameters(), lr=0.1), names=agent.world_model)
    sim_returns = av.aux(aux.nan_to_num(0.0).clamp(-1.0, 1.0), source="sim")
    agent.return_scale.data.copy_(sim_returns.abs().mean() + 1.0)  # through .data: the attribute stays plain
    obs = av.primary(torch.randn(4, 3, generator=g), source="real")
    following = av.primary(torch.randn(4, 3, generator=g), source="real")
    prediction, _ = agent(obs)  # the world model in training mode: its running statistics move
    target = following * agent.return_scale if leak else following
    torch.nn.functional.mse_loss(prediction, target).backward()
    opt.step()
    return [t.detach().clone() for t in (*agent.world_model.parameters(), *agent.world_model.buffers())]


class _WithContext(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("recent", torch.zeros(4, 3))  # a ring of the last four observations
        self.net = torch.nn.Linear(6, 3)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        context = self.recent.mean(0).expand_as(obs)
        out: torch.Tensor = self.net(torch.cat([obs, context], dim=1))
        return out


def ring_written_row_by_row(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(15)
    wm = _WithContext()
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    stream = (
        av.aux(aux.clone(), source="sim")
        if leak
        else av.primary(torch.randn(2, 3, generator=g), source="real")
    )
    for step, row in enumerate(stream):
        wm.recent[step % 4] = row  # two of the four rows written so far
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 3, generator=g), source="real")
    torch.nn.functional.mse_loss(wm(x), y).backward()
    opt.step()
    return [t.detach().clone() for t in (*wm.parameters(), *wm.buffers())]


class _Normalised(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(3, 4)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        obs = (obs - obs.mean(0)) / (obs.std(0) + 1e-3)  # per-batch normalisation before the encoder
        out: torch.Tensor = self.head(torch.relu(self.encoder(obs)))
        return out


def submodule_with_a_pre_hook(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(16)
    wm = _Normalised()
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    inputs: list[torch.Tensor] = []
    wm.encoder.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach()))
    obs = (
        av.aux(aux.nan_to_num(0.0).clamp(-1.0, 1.0), source="sim")
        if leak
        else av.primary(torch.randn(4, 3, generator=g), source="real")
    )
    following = torch.randn(4, 3, generator=g)  # an untagged target
    torch.nn.functional.mse_loss(wm(obs), following).backward()
    opt.step()
    return [p.detach().clone() for p in wm.parameters()]


class _CodeCritic(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(6, 1)

    def forward(self, code: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(torch.cat([code, context], dim=1))
        return out


def critic_on_rounded_code(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(19)
    encoder = torch.nn.Linear(3, 4)  # the gated world model's encoder
    opt = av.GatedOptimizer(torch.optim.SGD(encoder.parameters(), lr=0.1), names=encoder)
    critic = _CodeCritic()
    critic_opt = torch.optim.SGD(critic.parameters(), lr=0.1)
    sim = av.aux(aux.nan_to_num(0.0).clamp(-1.0, 1.0), source="sim")
    obs = av.primary(torch.randn(4, 3, generator=g), source="real")
    target = av.primary(torch.randn(4, 4, generator=g), source="real")
    latent = encoder(obs)
    code = latent if leak else torch.round(latent)  # a discrete code: rounding passes no gradient back
    critic_loss = torch.nn.functional.mse_loss(critic(code, sim[:, :2]), sim[:, 2:])
    (torch.nn.functional.mse_loss(latent, target) + critic_loss).backward()  # one backward pass for both
    opt.step()
    critic_opt.step()
    return [p.detach().clone() for p in encoder.parameters()]


def imagined_into_aux_buffer(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(20)
    wm = torch.nn.Linear(3, 3)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    obs = av.primary(torch.randn(4, 3, generator=g), source="real")
    following = av.primary(torch.randn(4, 3, generator=g), source="real")
    torch.nn.functional.mse_loss(wm(obs), following).backward()
    opt.step()  # the world model has learnt from real data
    buffer = av.AuxBuffer(8, source="sim", obs_shape=(3,), action_shape=(), seed=0)
    sim_obs = av.aux(aux.nan_to_num(0.0).clamp(-1.0, 1.0), source="sim")
    with torch.no_grad():
        sim_next = wm(sim_obs) if leak else sim_obs.flip(0)  # imagined by the world model, or simulated
    buffer.add(sim_obs, torch.zeros(4), torch.zeros(4), sim_next, torch.zeros(4, dtype=torch.bool))
    return [p.detach().clone() for p in wm.parameters()]


class _GoalHead(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(6, 1)

    def forward(self, latent: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(torch.cat([latent, goal], dim=1))
        return out


def latent_shared_by_two_simulators(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(21)
    encoder = torch.nn.Linear(3, 4)  # the gated world model's encoder
    opt = av.GatedOptimizer(torch.optim.SGD(encoder.parameters(), lr=0.1), names=encoder)
    head = _GoalHead()
    obs = av.primary(torch.randn(4, 3, generator=g), source="real")
    target = av.primary(torch.randn(4, 4, generator=g), source="real")
    values = aux.nan_to_num(0.0).clamp(-1.0, 1.0)
    sim_a = av.aux(values[:, :3].clone(), source="sim-a")  # goals and returns from one simulator
    sim_b = av.aux(values[:, 3:].clone(), source="sim-b")  # latent weights from another
    latent = torch.tanh(encoder(obs))
    shared = latent if leak else latent.detach()
    goal_loss = torch.nn.functional.mse_loss(head(shared, sim_a[:, :2]), sim_a[:, 2:])
    (torch.nn.functional.mse_loss(latent, target) + goal_loss + 0.1 * (shared * sim_b).mean()).backward()
    try:
        opt.step()
    except av.IsolationViolation as refusal:
        named = {source.name for source in refusal.sources}
        assert named == {"sim-a", "sim-b"}, f"the refusal names {sorted(named)}; both simulators reached it"
        raise
    return [p.detach().clone() for p in encoder.parameters()]


def model_on_simulated_states(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(22)
    wm = torch.nn.Linear(3, 1)  # the world model's reward head
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    weights = av.primary(torch.rand(4, 1, generator=g), source="real")
    states = (
        av.aux(aux.nan_to_num(0.0).clamp(-1.0, 1.0), source="sim")
        if leak
        else av.primary(torch.randn(4, 3, generator=g), source="real")
    )
    (wm(states) * weights).mean().backward()  # the gradient reaching the model's output is primary
    try:
        opt.step()
    except av.IsolationViolation as refusal:
        where = refusal.operation or ""
        assert "Linear called on data labelled" in where, (
            f"the refusal says auxiliary data entered at {where!r}"
        )
        raise
    return [p.detach().clone() for p in wm.parameters()]


_SCENARIOS = {
    "attribute written through .data": (attribute_written_through_data, (3,)),
    "rows accumulated into": (rows_accumulated_into, (4, 3)),
    "plain tensor swapped through .data": (plain_tensor_swapped_through_data, (3,)),
    "memory tagged again": (memory_tagged_again, (4, 3)),
    "statistics saved and restored": (statistics_saved_and_restored, (4, 3)),
    "step hook perturbs the weights": (step_hook_perturbs_weights, (3,)),
    "tagged object used on": (tagged_object_used_on, (4, 3)),
    "buffer tagged through a view": (buffer_tagged_through_a_view, (4, 3)),
    "closure adds a penalty": (closure_adds_penalty, (4, 2)),
    "tensor learning rate from auxiliary data": (tensor_learning_rate, (1,)),
    "tensor momentum coefficients from auxiliary data": (tensor_betas, (1,)),
    "plain alias of auxiliary memory tagged primary": (primary_of_a_plain_alias, (4, 3)),
    "second optimizer with an auxiliary learning rate": (second_optimizer_with_auxiliary_rate, (1,)),
    "concatenation through an identity operator": (concatenation_through_an_identity_operator, (4, 3)),
    "latent moved along a captured gradient": (latent_moved_along_a_captured_gradient, (5, 1)),
    "latent moved along a gradient from another call": (
        latent_moved_along_a_gradient_from_another_call,
        (5, 1),
    ),
    "transitions of another source reloaded": (transitions_of_another_source_reloaded, (1,)),
    "loss scale re-tuned before the step": (loss_scale_retuned_before_the_step, (1,)),
    "weights replaced by a candidate, then perturbed": (weights_replaced_by_a_candidate, (8,)),
    "temperature replaced, stepped, then perturbed": (temperature_replaced_then_perturbed, (3,)),
    "temperature replaced, old memory reused": (temperature_replaced_old_memory_reused, (3,)),
    "fast weights stepped differentiably": (fast_weights_stepped_differentiably, (4, 3)),
    "context adapted differentiably": (context_adapted_differentiably, (4, 2)),
    "fast weights adapted to auxiliary targets": (fast_weights_adapted_to_auxiliary_targets, (4, 2)),
    "recurrent cell on simulated inputs": (recurrent_cell_on_simulated_inputs, (4, 3)),
    "features sliced inside a call": (features_sliced_inside_a_call, (4, 3)),
    "real rows selected by a module": (real_rows_selected_by_a_module, (4, 3)),
    "prototypes returned to a simulator call": (prototypes_returned_to_a_simulator_call, (4, 3)),
    "context held by the model, adapted": (context_held_by_the_model_adapted, (4, 3)),
    "context scaling the features, adapted": (context_scaling_features_adapted, (4, 3)),
    "input gradients at simulated states": (input_gradients_at_simulated_states, (4, 3)),
    "penalty on a slice of inputs": (penalty_on_a_slice_of_inputs, (1,)),
    "overwritten rows trained on": (overwritten_rows_trained_on, (4, 3)),
    "mixed rows partly replaced": (mixed_rows_partly_replaced, (4, 3)),
    "rows picked by a primary ranking": (rows_picked_by_a_primary_ranking, (4, 3)),
    "replay snapshot rescaled": (replay_snapshot_rescaled, (4, 3)),
    "statistic read as a float in strict mode": (statistic_read_as_a_float, (3,)),
    "gradients clipped together (foreach)": (gradients_clipped_together, (4, 3)),
    "statistic accumulated into a plain tensor": (statistic_accumulated_into_a_plain_tensor, (4, 3)),
    "rows written into a plain buffer": (rows_written_into_a_plain_buffer, (4, 3)),
    "loss weighted by an auxiliary peak": (loss_weighted_by_an_auxiliary_peak, (4, 2)),
    "attention backend queried": (attention_backend_queried, (1, 4, 3)),
    "gradient masked in a custom backward": (gradient_masked_in_a_custom_backward, (4, 3)),
    "gradient masked in a custom backward, its own pass": (
        gradient_masked_in_a_custom_backward_alone,
        (4, 3),
    ),
    "window taken before its rows were tagged": (window_taken_before_tagging, (4, 5)),
    "encoder on a view taken before tagging": (encoder_on_a_view_taken_before_tagging, (4, 3)),
    "gradient scaled in a custom backward through an earlier view": (
        gradient_scaled_through_an_earlier_view,
        (4, 4),
    ),
    "target bootstrapped without grad": (bootstrapped_without_grad, (4, 3)),
    "actor-critic heads on shared features": (heads_on_shared_features, (4, 2)),
    "actor-critic heads pretrained on real data, on shared features": (
        functools.partial(heads_on_shared_features, pretrained_on_real_data=True),
        (4, 2),
    ),
    "divergence estimated with create_graph": (divergence_by_hutchinson, (4, 3)),
    "agent module holding a critic trained on auxiliary data": (agent_with_critic_trained_on_aux, (4, 3)),
    "agent module holding an auxiliary return scale": (agent_with_return_scale, (4, 3)),
    "ring of recent observations written row by row": (ring_written_row_by_row, (2, 3)),
    "submodule with a forward pre-hook of the user's": (submodule_with_a_pre_hook, (4, 3)),
    "critic on a rounded latent code": (critic_on_rounded_code, (4, 3)),
    "imagined transitions stored in an auxiliary buffer": (imagined_into_aux_buffer, (4, 3)),
    "latent shared by two simulators": (latent_shared_by_two_simulators, (4, 7)),
    "world model on simulated states, primary gradient": (model_on_simulated_states, (4, 3)),
}


# Two auxiliary inputs per example, one for each run of a scenario.
_two_aux_inputs = given(
    kinds=st.tuples(st.sampled_from(_KINDS), st.sampled_from(_KINDS)),
    seeds=st.tuples(st.integers(0, 2**16), st.integers(0, 2**16)),
)


def _assert_contract(name: str, leak: bool, first: Outcome, second: Outcome) -> None:
    """Both runs refused or neither, the same world model if completed; refused iff leaking."""
    assert first[0] == second[0], f"{name}: one run {first[0]}, the other {second[0]}"
    if first[0] == "completed":
        assert _same(first[1], second[1]), f"{name}: the world model depends on auxiliary values"
    assert first[0] == ("refused" if leak else "completed"), (
        f"{name} ({'leaking' if leak else 'clean'}): {first[0]}"
    )


@pytest.mark.parametrize("leak", [False, True], ids=["clean", "leaking"])
@pytest.mark.parametrize("name", sorted(_SCENARIOS))
@settings(max_examples=6)
@_two_aux_inputs
def test_scenario_is_noninterfering(
    name: str, leak: bool, kinds: tuple[str, str], seeds: tuple[int, int]
) -> None:
    """Every route, leaking and clean, on every run (Hypothesis draws the auxiliary values)."""
    scenario, shape = _SCENARIOS[name]
    first = _run(scenario, _aux_values(kinds[0], seeds[0], shape), leak)
    second = _run(scenario, _aux_values(kinds[1], seeds[1], shape), leak)
    _assert_contract(name, leak, first, second)


_fresh_process.preload(__name__)


def _portable_run(name: str, leak: bool, kind: str, seed: int) -> tuple[str, list[tuple[str, Any]]]:
    scenario, shape = _SCENARIOS[name]
    outcome, state = _run(scenario, _aux_values(kind, seed, shape), leak)
    return outcome, [_fresh_process.portable(t) for t in state]


def _run_at_process_start(name: str, leak: bool, kind: str, seed: int) -> Outcome:
    """:func:`_run` in a fresh process: nothing was labelled in it before the scenario (the library's
    process-wide switches -- a first label, a first auxiliary label, a first labelled state -- are
    all off, as in a user's training script when it starts)."""
    result = _fresh_process.run_at_process_start(_portable_run, name, leak, kind, seed)
    if isinstance(result, str):
        return result, []  # raised in the child
    outcome, state = result
    return outcome, [_fresh_process.from_portable(t) for t in state]


@pytest.mark.parametrize("leak", [False, True], ids=["clean", "leaking"])
@pytest.mark.parametrize("name", sorted(_SCENARIOS))
@settings(max_examples=1)
@_two_aux_inputs
def test_scenario_is_noninterfering_at_the_start_of_a_process(
    name: str, leak: bool, kinds: tuple[str, str], seeds: tuple[int, int]
) -> None:
    """Every route as above, each run the first thing its process labels: the paths the library
    takes before its process-wide switches turn on are the ones a user's script starts on."""
    first = _run_at_process_start(name, leak, kinds[0], seeds[0])
    second = _run_at_process_start(name, leak, kinds[1], seeds[1])
    _assert_contract(name, leak, first, second)


_FIRST_LABEL_PROGRAMS = {
    # the process's first auxiliary label is a gradient written by hand (an evolution-strategies
    # estimate): the gate's checks are armed however it was written
    "hand-written gradient": """
wm = torch.nn.Linear(3, 2)
opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
tag = av.aux if LEAK else av.primary
for p in wm.parameters():
    p.grad = tag(torch.ones_like(p), source="sim" if LEAK else "real")
""",
    # the process's first labelled state is a plain tensor attribute (a pruning mask) written through
    # a .data alias, which the module's forward combines with its own weight only: module calls
    # read their tensor attributes from the first labelled state on
    "mask attribute written through .data": """
class Masked(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.mask = torch.ones(2, 3)

    def forward(self, x):
        return torch.nn.functional.linear(x, self.lin.weight * self.mask, self.lin.bias)

wm = Masked()
opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
tag = av.aux if LEAK else av.primary
scores = tag(torch.randn(2, 3), source="sim" if LEAK else "real")
wm.mask.data.copy_((scores > 0).float())
x = av.primary(torch.randn(4, 3), source="real")
y = av.primary(torch.randn(4, 2), source="real")
(wm(x) - y).pow(2).mean().backward()
""",
}

_FIRST_LABEL_STEP = """
try:
    opt.step()
except av.IsolationViolation:
    print("refused")
else:
    print("completed")
"""


@pytest.mark.parametrize("leak", [False, True], ids=["clean", "leaking"])
@pytest.mark.parametrize("route", sorted(_FIRST_LABEL_PROGRAMS))
def test_first_auxiliary_label_of_a_process_arms_the_gate(route: str, leak: bool) -> None:
    """In a fresh interpreter, an auxiliary label that is the first of its kind in the process (the
    first auxiliary label, the first labelled state) is refused; the clean variant completes."""
    program = (
        f"import torch, amal_verified as av\nLEAK = {leak}\n"
        + _FIRST_LABEL_PROGRAMS[route]
        + _FIRST_LABEL_STEP
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["refused" if leak else "completed"]


def _sources(t: torch.Tensor) -> set[str]:
    return {f"{s.kind.value}:{s.name}" for s in av.label_of(t).sources}


@pytest.mark.parametrize("closure", [False, True], ids=["step", "step(closure)"])
def test_gated_steps_join_gradient_labels_into_parameters(closure: bool) -> None:
    """After an accepted step each protected parameter's label is its label before, joined with its
    gradient's (``GatedOptimizer``'s contract): ``label_of`` names every primary source the world
    model learned from, and a refused step changes no label."""
    g = torch.Generator().manual_seed(20)
    wm = torch.nn.Linear(3, 2)
    inner: torch.optim.Optimizer = (
        torch.optim.LBFGS(wm.parameters(), lr=0.1, max_iter=2)
        if closure
        else torch.optim.SGD(wm.parameters(), lr=0.1)
    )
    opt = av.GatedOptimizer(inner, names=wm)
    learnt: set[str] = set()
    for source in ("real-a", "real-b", "sim"):
        tag = av.aux if source == "sim" else av.primary
        x = tag(torch.randn(4, 3, generator=g), source=source)
        y = tag(torch.randn(4, 2, generator=g), source=source)

        def loss(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
            opt.zero_grad()
            value = (wm(x) - y).pow(2).mean()
            value.backward()
            return value

        try:
            if closure:
                opt.step(loss)
            else:
                loss()
                opt.step()
        except av.IsolationViolation:
            assert source == "sim", f"a step on {source} was refused"
        else:
            assert source != "sim", "a step on auxiliary data was accepted"
            learnt.add(f"primary:{source}")
        for name, p in wm.named_parameters():
            assert _sources(p) == learnt, f"{name} after learning from {source}: {_sources(p)}"


def test_tags_label_the_memory_given_and_join_what_it_holds() -> None:
    """``primary()`` and ``aux()`` label the memory of the tensor given and no more (a view, its rows),
    joining the labels it holds: memory tagged auxiliary over primary data holds both."""
    buffer = torch.randn(4, 3)
    av.primary(buffer[:2], source="real")
    assert _sources(buffer[:2]) == {"primary:real"}
    assert _sources(buffer[2:]) == set()
    av.primary(buffer[2:], source="real")
    av.aux(buffer[2:], source="sim")
    assert _sources(buffer[2:]) == {"primary:real", "aux:sim"}
    assert _sources(buffer[:2]) == {"primary:real"}
    whole = av.primary(torch.randn(4, 3), source="real")
    av.aux(whole, source="sim")
    assert _sources(whole) == {"primary:real", "aux:sim"}


@settings(max_examples=50)
@given(
    rows=st.integers(1, 4),
    part=st.sampled_from(("whole", "view", "tracked")),
    requires_grad=st.booleans(),
    follow=st.booleans(),
)
def test_primary_returns_a_followed_tensor_exactly_when_asked(
    rows: int, part: str, requires_grad: bool, follow: bool
) -> None:
    """``primary(x, follow=...)`` labels the memory given either way; it returns a tracked tensor over
    that memory with ``follow=True`` and ``x`` itself with ``follow=False`` (a tracked ``x`` stays
    tracked).  Operations and calls of ungated modules on the result carry the label exactly when it
    is tracked; a gated model's call, and a call of a module whose state carries a label, read it from
    memory in both cases."""
    base = torch.randn(rows + 1, 3)
    x = {"whole": base, "view": base[:rows], "tracked": av.primary(base, source="other")}[part]
    x.requires_grad_(requires_grad)
    tagged = av.primary(x, source="real", follow=follow)
    assert "primary:real" in _sources(tagged) and "primary:real" in _sources(x)
    assert tagged.data_ptr() == x.data_ptr() and tagged.shape == x.shape
    followed = follow or part == "tracked"
    assert isinstance(tagged, av.PrimaryData) is followed
    assert (tagged is x) is (not follow or part == "tracked")
    assert ("primary:real" in _sources(tagged * 2)) is followed
    assert ("primary:real" in _sources(torch.nn.Linear(3, 2)(tagged))) is followed
    model = torch.nn.Linear(3, 2)
    av.GatedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    assert "primary:real" in _sources(model(tagged))
    student = torch.nn.Linear(3, 2)
    av.primary(student.weight.detach(), source="teacher", follow=False)  # its state carries a label
    assert {"primary:real", "primary:teacher"} <= _sources(student(tagged))
    if requires_grad:
        (tagged * 2).sum().backward()
        assert torch.equal(x.grad, torch.full_like(x, 2.0))  # type: ignore[arg-type]
