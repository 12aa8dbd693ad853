"""Every optimizer step in the process, gated or not (PyTorch's global optimizer step hooks).

No optimizer other than a :class:`~amal_verified.isolation.gate.GatedOptimizer` may step a protected
parameter when anything that step reads for it carries an auxiliary source: its gradient, its own
memory, its state in that optimizer, its parameter group's tensor hyperparameters (a learning rate
computed from auxiliary data) or the ``GradScaler`` tensors a fused optimizer reads -- what the gate
itself checks (:func:`protected_reads`); parameters stepped by any optimizer take their
gradients' labels, and those that gain an auxiliary label become tracked in place, so that what is
later computed from them (a Polyak average, a flattened copy) is labelled.  Optimizers step on plain
gradients: gated or not, the arithmetic is PyTorch's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from amal_verified.isolation._engine import label_store as store
from amal_verified.isolation._engine import protection as _protection
from amal_verified.isolation._engine.dispatch import TaggedTensor, plain, track_in_place
from amal_verified.isolation._engine.refusals import Refused, tensors_in, violation
from amal_verified.isolation.labels import EMPTY

__all__ = [
    "AMP_ATTRIBUTES",
    "Swapped",
    "all_params",
    "any_optimizer_post_step",
    "any_optimizer_pre_step",
    "gated_steps_running",
    "protected_reads",
    "rewrap_grads",
    "unwrap_grads",
]

# Steps of GatedOptimizers running now: the wrapped optimizer's own step hooks must not check again.
gated_steps_running = 0

AMP_ATTRIBUTES = ("grad_scale", "found_inf")
"""Tensors ``torch.amp.GradScaler`` hands an optimizer that unscales in its kernel (fused Adam)."""


def all_params(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for group in optimizer.param_groups:
        yield from group["params"]


Swapped = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def unwrap_grads(params: Iterable[torch.Tensor]) -> Swapped:
    """Give the wrapped optimizer plain gradients (same memory, so their labels stay recorded)."""
    swapped: Swapped = []
    for p in params:
        g = p.grad
        if isinstance(g, TaggedTensor):
            alias = plain(g)
            p.grad = alias
            swapped.append((p, g, alias))
    return swapped


def rewrap_grads(swapped: Swapped) -> None:
    for p, g, alias in swapped:
        if p.grad is alias:
            p.grad = g


def any_optimizer_pre_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Global hook: no optimizer may step a protected parameter with aux-derived gradients."""
    if torch.compiler.is_compiling() or not store.counters.aux or gated_steps_running:
        return  # without auxiliary labels there is nothing to refuse and no label to follow
    if getattr(optimizer, "gates_its_parameters", False):
        return
    refused = protected_reads(optimizer, _protected_name)
    if refused:
        owners = sorted({info.owner for p in all_params(optimizer) if (info := _protection.protection_of(p))})
        raise violation(
            f"{type(optimizer).__name__}.step() on parameters protected by {', '.join(owners)}",
            refused,
            "a protected parameter must be updated only by its GatedOptimizer. Remove it from this "
            "optimizer (e.g. give the policy its own encoder, or pass only the policy head's "
            "parameters), or detach the shared features before the auxiliary loss.",
        )
    params = list(all_params(optimizer))
    labels = [EMPTY if p.grad is None else store.label_of_plain(p.grad) for p in params]
    swapped = unwrap_grads(params)
    if swapped or any(label.has_aux for label in labels):
        optimizer.__dict__["_amal_step"] = (params, labels, swapped)


def _protected_name(p: torch.Tensor) -> str | None:
    info = _protection.protection_of(p)
    return None if info is None else info.name


_ATOMS = frozenset({float, int, bool, str, type(None)})


def _reads(
    optimizer: torch.optim.Optimizer, name_of: Callable[[torch.Tensor], str | None], all_named: bool
) -> list[torch.Tensor]:
    """Every tensor :func:`protected_reads` reads, without what it needs to name them: the common
    step, where none carries an auxiliary source, is decided by one :func:`label_store.any_aux`.

    Invariant: never fewer tensors than :func:`protected_reads` reads (more only send a step on to
    its pass, which decides)."""
    reads: list[torch.Tensor] = []
    state = optimizer.state
    any_named = False
    for group in optimizer.param_groups:
        named = group["params"] if all_named else [p for p in group["params"] if name_of(p) is not None]
        if not named:
            continue
        any_named = True
        for key, value in group.items():
            kind = type(value)
            if kind in _ATOMS or key == "params":
                continue
            if kind is tuple:  # betas
                for item in value:
                    if type(item) not in _ATOMS:
                        reads.extend(tensors_in(item))
            else:
                reads.extend(tensors_in(value))
        for p in named:
            reads.append(p)
            grad = p.grad
            if grad is not None:
                reads.append(grad)
            entries = state.get(p)
            if entries:
                for value in entries.values():
                    if type(value) is torch.Tensor:
                        reads.append(value)
                    else:
                        reads.extend(tensors_in(value))
    if any_named:
        for attribute in AMP_ATTRIBUTES:
            value = optimizer.__dict__.get(attribute)
            if isinstance(value, torch.Tensor):
                reads.append(value)
    return reads


def protected_reads(
    optimizer: torch.optim.Optimizer,
    name_of: Callable[[torch.Tensor], str | None],
    *,
    all_named: bool = False,
) -> list[Refused]:
    """What a step of ``optimizer`` reads for the parameters ``name_of`` names (``name_of(p)`` is
    ``None`` for the others) that carries an auxiliary source, by what it is: the parameter's
    gradient, its memory, its state entries, the tensor hyperparameters of a group holding such a
    parameter, and the ``GradScaler`` tensors handed to the optimizer.  ``all_named``: ``name_of``
    names every parameter of ``optimizer`` (a gate's own), so it is called only to name refusals."""
    if not store.any_aux(_reads(optimizer, name_of, all_named)):
        return []
    refused: list[Refused] = []
    state = optimizer.state
    any_named = False
    for group in optimizer.param_groups:
        named = [(p, n) for p in group["params"] if (n := name_of(p)) is not None]
        if not named:
            continue
        any_named = True
        for key, value in group.items():
            if key == "params":
                continue
            for t in tensors_in(value):
                if (label := store.label_of_plain(t)).has_aux:
                    refused.append((f"hyperparameter {key!r}", label, store.origin_of(t)))
        for p, name in named:
            grad = p.grad
            if grad is not None and (label := store.label_of_plain(grad)).has_aux:
                refused.append((name, label, store.origin_of(grad)))
            if (label := store.label_of_plain(p)).has_aux:
                refused.append((name, label, store.origin_of(p)))
            entries = state.get(p)
            if entries:
                for key, value in entries.items():
                    for t in tensors_in(value):
                        if (label := store.label_of_plain(t)).has_aux:
                            refused.append((f"{name} state[{key!r}]", label, store.origin_of(t)))
    if any_named:
        for attribute in AMP_ATTRIBUTES:
            value = optimizer.__dict__.get(attribute)
            if isinstance(value, torch.Tensor) and (label := store.label_of_plain(value)).has_aux:
                refused.insert(0, (f"GradScaler's {attribute}", label, store.origin_of(value)))
    return refused


def any_optimizer_post_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Global hook: parameters take their gradients' labels; aux-labelled ones become tracked."""
    if torch.compiler.is_compiling():
        return
    pending = optimizer.__dict__.pop("_amal_step", None)
    if pending is None:
        return
    params, labels, swapped = pending
    rewrap_grads(swapped)
    state = optimizer.state
    for p, label in zip(params, labels, strict=True):
        if not label.has_aux:
            continue  # primary provenance is followed for protected parameters (the gate's) only
        entries = state.get(p)
        if entries:
            for key, value in entries.items():
                for t in tensors_in(value):
                    if t.is_floating_point() and key != "step":  # step counters are data-independent
                        store.write_label(t, label)
                        track_in_place(t)  # copies made from it (exp_avg.copy_ into another) are seen
        new = store.write_label(p, label)
        if new.has_aux and not isinstance(p, TaggedTensor):
            track_in_place(p)
