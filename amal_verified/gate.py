"""``GatedOptimizer``: the only way a protected parameter changes.

``GatedOptimizer(torch.optim.Adam(world_model.parameters(), lr=3e-4))`` wraps an
existing optimizer (Opacus-style: ``param_groups``, ``state``, ``defaults``,
``state_dict``, ``load_state_dict``, ``zero_grad`` and ``add_param_group`` are
the wrapped optimizer's) and makes its parameters *protected*.  Before any
protected value changes, it checks every protected parameter's gradient label
and raises :class:`IsolationViolation` if auxiliary data reached it, however it
got there: any backward pass, edits of ``.grad`` after backward (clipping over
several models, gradient surgery), or another optimizer that owns the same
parameter (checked by a global optimizer step hook).  Writes of aux-labelled
data into a protected parameter by any other operation are refused by the
dispatcher before they happen.

The wrapped optimizer steps on plain gradients: gated training is the same
arithmetic as plain training (bit for bit on the benchmarked world model; where a
gradient has three or more contributions through tracked module calls, their
summation order may differ, by about 1e-7).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

from amal_verified import _protection
from amal_verified._activation import ensure_active
from amal_verified._label_store import STORE
from amal_verified._runtime_checks import checked
from amal_verified.errors import IsolationViolation
from amal_verified.labels import EMPTY, Label, Source
from amal_verified.tagged import TaggedTensor, label_of

__all__ = ["GatedOptimizer"]

NamesArg = Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]] | torch.nn.Module | None

_gated_step_depth = 0


def _param_names(optimizer: torch.optim.Optimizer, names: NamesArg) -> dict[int, str]:
    found: dict[int, str] = {}
    pairs: Iterable[tuple[str, torch.Tensor]]
    if names is None:
        pairs = ()
    elif isinstance(names, torch.nn.Module):
        pairs = names.named_parameters()
    elif isinstance(names, Mapping):
        pairs = names.items()
    else:
        pairs = names
    for name, param in pairs:
        found.setdefault(id(param), name)
    for g, group in enumerate(optimizer.param_groups):
        group_names = group.get("param_names")
        for i, param in enumerate(group["params"]):
            if id(param) in found:
                continue
            if group_names is not None and i < len(group_names):
                found[id(param)] = str(group_names[i])
            else:
                found[id(param)] = f"param_groups[{g}]['params'][{i}] (shape {tuple(param.shape)})"
    return found


def _violation_message(
    what: str, refused: list[tuple[str, Label, str | None]], hint: str
) -> tuple[str, tuple[str, ...], tuple[Source, ...], str | None]:
    names = tuple(name for name, _, _ in refused)
    joined = Label.join_all(label for _, label, _ in refused)
    sources = tuple(sorted(joined.aux_sources))
    origins = list(dict.fromkeys(origin for _, _, origin in refused if origin is not None))
    operation = "; ".join(origins[:3]) if origins else None
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    lines = [
        f"refused {what}: data from {', '.join(map(str, sources))} reached the gradient of "
        f"{len(names)} protected parameter(s): {shown}.",
    ]
    if operation is not None:
        lines.append(f"  mixed in by: {operation}")
    lines.append("  Nothing was changed.")
    lines.append(f"  What to do: {hint}")
    return "\n".join(lines), names, sources, operation


_HINT = (
    "compute the world-model loss from PrimaryData only (targets included); keep auxiliary "
    "losses off protected parameters (detach shared features, or give the policy its own "
    "encoder); clip protected gradients separately from the policy's. Then call zero_grad() "
    "and recompute the loss."
)


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.elem if isinstance(t, TaggedTensor) else t


def _unwrap_grads(params: Iterable[torch.Tensor]) -> list[tuple[torch.Tensor, TaggedTensor]]:
    swapped: list[tuple[torch.Tensor, TaggedTensor]] = []
    for p in params:
        g = p.grad
        if isinstance(g, TaggedTensor):
            p.grad = g.elem  # same storage: its label stays recorded
            swapped.append((p, g))
    return swapped


def _rewrap_grads(swapped: list[tuple[torch.Tensor, TaggedTensor]]) -> None:
    for p, g in swapped:
        if p.grad is g.elem:
            p.grad = g


def _all_params(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for group in optimizer.param_groups:
        yield from group["params"]


class GatedOptimizer(torch.optim.Optimizer):
    """Wraps ``optimizer`` and refuses any auxiliary-derived update of its parameters.

    ``names`` (a module, a mapping or ``named_parameters()``) gives parameters
    readable names in refusals; optimizers built from ``named_parameters()``
    need none.
    """

    @checked
    def __init__(self, optimizer: torch.optim.Optimizer, *, names: NamesArg = None) -> None:
        if isinstance(optimizer, GatedOptimizer):
            raise TypeError("this optimizer is already gated; wrap the original optimizer once")
        ensure_active()
        self.original_optimizer = optimizer
        self._optimizer_step_pre_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_state_dict_pre_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_state_dict_post_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._patch_step_function()
        self._names_arg = names
        self._owner = f"GatedOptimizer({type(optimizer).__name__})"
        self._names: dict[int, str] = {}
        self._protect_all()

    def _protect_all(self) -> None:
        self._names = _param_names(self.original_optimizer, self._names_arg)
        for p in _all_params(self.original_optimizer):
            _protection.protect(p, self._names[id(p)], self._owner)

    # -- proxies (Opacus style) ------------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.original_optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.original_optimizer.param_groups = value

    @property
    def state(self) -> Any:
        return self.original_optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.original_optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:
        return self.original_optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.original_optimizer.defaults = value

    def state_dict(self) -> dict[str, Any]:
        return self.original_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.original_optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.original_optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.original_optimizer.add_param_group(param_group)
        self._protect_all()

    def __repr__(self) -> str:
        return f"GatedOptimizer({self.original_optimizer!r})"

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            "a GatedOptimizer is not pickled: save state_dict() and wrap a fresh optimizer on load"
        )

    # -- the gate ----------------------------------------------------------------
    @property
    def protected_names(self) -> list[str]:
        return [self._names[id(p)] for p in _all_params(self.original_optimizer)]

    def check(self) -> None:
        """Raise :class:`IsolationViolation` if any protected gradient or value carries aux data."""
        refused: list[tuple[str, Label, str | None]] = []
        for p in _all_params(self.original_optimizer):
            info = _protection.protection_of(p)
            if info is not None:
                _protection.refresh(info)
            label = EMPTY if p.grad is None else label_of(p.grad)
            value_label = STORE.of(p)
            if value_label.has_aux:
                label = label.join(value_label)
            if label.has_aux:
                origin = STORE.origin(_plain(p.grad)) if p.grad is not None else STORE.origin(p)
                refused.append((self._names.get(id(p), "<unnamed>"), label, origin))
        if refused:
            message, names, sources, operation = _violation_message(f"{self._owner}.step()", refused, _HINT)
            raise IsolationViolation(message, parameters=names, sources=sources, operation=operation)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Check every protected gradient, then step the wrapped optimizer on plain gradients."""
        global _gated_step_depth
        gated_closure: Callable[[], Any] | None = None
        if closure is not None:

            def gated_closure() -> Any:
                with torch.enable_grad():
                    loss = closure()
                self.check()  # before the wrapped optimizer uses these gradients
                return loss

        self.check()
        params = list(_all_params(self.original_optimizer))
        swapped = _unwrap_grads(params)
        _gated_step_depth += 1
        try:
            if gated_closure is None:
                return self.original_optimizer.step()
            return self.original_optimizer.step(gated_closure)
        finally:
            _gated_step_depth -= 1
            _rewrap_grads(swapped)


# -- every other optimizer -----------------------------------------------------------


def _any_optimizer_pre_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Global hook: no optimizer may step a protected parameter with aux-derived gradients."""
    if isinstance(optimizer, GatedOptimizer) or _gated_step_depth:
        return
    refused: list[tuple[str, Label, str | None]] = []
    for p in _all_params(optimizer):
        info = _protection.protection_of(p)
        if info is None or p.grad is None:
            continue
        label = label_of(p.grad)
        if label.has_aux:
            refused.append((info.name, label, STORE.origin(_plain(p.grad))))
    if refused:
        owners = sorted(
            {info.owner for p in _all_params(optimizer) if (info := _protection.protection_of(p))}
        )
        message, names, sources, operation = _violation_message(
            f"{type(optimizer).__name__}.step() on parameters protected by {', '.join(owners)}",
            refused,
            "a protected parameter must be updated only by its GatedOptimizer. Remove it from this "
            "optimizer (e.g. give the policy its own encoder, or pass only the policy head's "
            "parameters), or detach the shared features before the auxiliary loss.",
        )
        raise IsolationViolation(message, parameters=names, sources=sources, operation=operation)
    swapped = _unwrap_grads(_all_params(optimizer))
    if swapped:
        optimizer.__dict__["_amal_swapped_grads"] = swapped


def _any_optimizer_post_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    swapped = optimizer.__dict__.pop("_amal_swapped_grads", None)
    if swapped:
        _rewrap_grads(swapped)
