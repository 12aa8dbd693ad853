"""Theorem 1 on single routes the program property does not generate, differentially.

Each scenario is a short piece of training code by which auxiliary data could reach a gated world
model.  Hypothesis draws two auxiliary inputs (noise, 0, ±1e38, NaN, ±Inf); the scenario runs once
with each, with the same primary data and seeds.  The contract, as in
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
  restored into a fresh normaliser: plain buffers keep their labels through pickling;
- ``aux()`` read as an in-place operation: the code goes on with the object it tagged (arithmetic
  before the world model sees it), or with the buffer whose rows it tagged through a view;
- a step pre-hook of the wrapped optimizer that perturbs the weights by an auxiliary-derived amount
  (exploration noise scaled by a simulator statistic): the write is refused inside the wrapped
  optimizer's step, and the refusal reaches the user as it is;
- a closure step (LBFGS) whose loss adds an auxiliary-derived penalty: each evaluation's gradients
  are checked before the wrapped optimizer reads them, and a refused evaluation restores the
  parameters and the optimizer state;
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
  backward stay tracked, so the in-place mask labels the gradient;
- in a fresh interpreter, a gradient written by hand (an evolution-strategies estimate) that is the
  first auxiliary-labelled memory of the process: the gate's checks are armed by the first
  auxiliary label however it was written;
- in a fresh interpreter, a plain tensor attribute (a pruning mask) written through ``.data`` with an
  auxiliary-derived mask, the first labelled state of the process, which the module combines with its
  own weight only: module calls read their tensor attributes from the first labelled state on.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable

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


def tensor_learning_rate(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """A tensor hyperparameter derived from auxiliary data: refused before Adam changes anything."""
    g = torch.Generator().manual_seed(8)
    wm = torch.nn.Linear(3, 2)
    sim = av.aux(aux.clone(), source="sim")
    lr = (sim.nan_to_num(0.0).clamp(0.0, 0.0) + 0.01) if leak else torch.tensor(0.01)
    opt = av.GatedOptimizer(torch.optim.Adam(wm.parameters(), lr=torch.tensor(0.01)), names=wm)
    opt.param_groups[0]["lr"] = lr.reshape(())
    x = av.primary(torch.randn(4, 3, generator=g), source="real")
    y = av.primary(torch.randn(4, 2, generator=g), source="real")
    (wm(x) - y).pow(2).mean().backward()
    before = [p.detach().clone() for p in wm.parameters()]
    try:
        opt.step()
    except av.IsolationViolation:
        after = [p.detach().clone() for p in wm.parameters()]
        assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True)), (
            "a refused step moved a weight"
        )
        assert not opt.state, "a refused step changed the optimizer's state"
        raise
    state = [p.detach().clone() for p in wm.parameters()]
    return state + [v.detach().clone() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]


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


def gradient_masked_in_a_custom_backward(aux: torch.Tensor, leak: bool) -> list[torch.Tensor]:
    """One backward over the world model's loss and the policy's: the world model's learnt noise
    scale (a plain tensor used functionally) gets a gradient masked in place, inside a custom
    backward, by flags from auxiliary (leaking) or real (clean) data."""
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
    (nll + policy(sim.nan_to_num(0.0).clamp(-1.0, 1.0)).pow(2).mean()).backward()
    opt.step()
    return [p.detach().clone() for p in (wm.weight, wm.bias, log_std)]


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
    "plain alias of auxiliary memory tagged primary": (primary_of_a_plain_alias, (4, 3)),
    "rows picked by a primary ranking": (rows_picked_by_a_primary_ranking, (4, 3)),
    "replay snapshot rescaled": (replay_snapshot_rescaled, (4, 3)),
    "statistic read as a float in strict mode": (statistic_read_as_a_float, (3,)),
    "gradients clipped together (foreach)": (gradients_clipped_together, (4, 3)),
    "statistic accumulated into a plain tensor": (statistic_accumulated_into_a_plain_tensor, (4, 3)),
    "rows written into a plain buffer": (rows_written_into_a_plain_buffer, (4, 3)),
    "loss weighted by an auxiliary peak": (loss_weighted_by_an_auxiliary_peak, (4, 2)),
    "attention backend queried": (attention_backend_queried, (1, 4, 3)),
    "gradient masked in a custom backward": (gradient_masked_in_a_custom_backward, (4, 3)),
}


@pytest.mark.parametrize("leak", [False, True], ids=["clean", "leaking"])
@pytest.mark.parametrize("name", sorted(_SCENARIOS))
@settings(max_examples=6)
@given(
    kinds=st.tuples(st.sampled_from(_KINDS), st.sampled_from(_KINDS)),
    seeds=st.tuples(st.integers(0, 2**16), st.integers(0, 2**16)),
)
def test_scenario_is_noninterfering(
    name: str, leak: bool, kinds: tuple[str, str], seeds: tuple[int, int]
) -> None:
    """Every route, leaking and clean, on every run (Hypothesis draws the auxiliary values)."""
    scenario, shape = _SCENARIOS[name]
    first = _run(scenario, _aux_values(kinds[0], seeds[0], shape), leak)
    second = _run(scenario, _aux_values(kinds[1], seeds[1], shape), leak)
    assert first[0] == second[0], f"{name}: one run {first[0]}, the other {second[0]}"
    if first[0] == "completed":
        assert _same(first[1], second[1]), f"{name}: the world model depends on auxiliary values"
    assert first[0] == ("refused" if leak else "completed"), (
        f"{name} ({'leaking' if leak else 'clean'}): {first[0]}"
    )


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
