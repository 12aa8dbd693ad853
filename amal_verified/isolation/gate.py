"""``GatedOptimizer``: the only way a protected parameter changes.

``GatedOptimizer(torch.optim.Adam(world_model.parameters(), lr=3e-4))`` wraps an
existing optimizer and *protects* its parameters, their optimizer state and
the buffers of the module named by ``names=``.  It is a drop-in for the
optimizer it wraps (Opacus-style): ``param_groups``, ``state``, ``defaults``,
``state_dict``, ``load_state_dict``, ``zero_grad`` and ``add_param_group`` are
the wrapped optimizer's; hooks registered on the wrapper fire as on any
optimizer, global step hooks once per step; ``grad_scale`` and ``found_inf``
are read and written on the wrapped optimizer; a ``copy.deepcopy`` or pickle
round trip gives an independent gated optimizer over the copied parameters.
``benchmarks/optimizer_matrix.py`` measures this against torch's optimizer
database.

Contract:

- Before the wrapped optimizer runs, :meth:`GatedOptimizer.check` reads the
  label of everything the update reads -- each parameter's gradient, the
  parameter itself, its optimizer state, tensor hyperparameters (also inside
  tuples such as ``betas``), and the ``grad_scale`` / ``found_inf`` tensors
  ``torch.amp.GradScaler`` hands an optimizer that unscales in its kernel --
  and raises :class:`IsolationViolation` if any carries an auxiliary source.
- A refusal is atomic: parameters, optimizer state and gradients are as they
  were, and ``zero_grad()`` followed by a clean step works.  ``step(closure)``
  checks the gradients of every evaluation before the wrapped optimizer reads
  them; because it may evaluate the closure again after changing parameters
  (LBFGS), parameters and state are saved before such a step and restored
  when an evaluation is refused.
- Non-leaf tensors (what ``differentiable=True`` optimizers step) are
  protected like parameters.  ``add_param_group`` of a group that cannot be
  protected leaves the wrapped optimizer without it.
- ``load_state_dict`` checks the incoming state the same way before loading.
- Writes of auxiliary-labelled data into protected memory by any other
  operation are refused by the dispatcher before they happen; another
  optimizer that owns a protected parameter is checked by a global step hook.
- The wrapped optimizer steps on plain gradients: gated training is the same
  arithmetic as plain training.  After a step, each parameter's label is
  joined with its gradient's (which has no auxiliary source): a protected
  parameter stays primary exactly as long as the gate holds.
- Parameters updated by any *other* optimizer get their gradients' labels too;
  one that gains an auxiliary label becomes a tracked tensor in place, so that
  what is later computed from it (a Polyak average, a flattened copy) is
  labelled.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import torch

from amal_verified.common.runtime_checks import checked
from amal_verified.isolation._engine import grad_labels as _grad_labels
from amal_verified.isolation._engine import label_store as store
from amal_verified.isolation._engine import optimizer_steps
from amal_verified.isolation._engine import protection as _protection
from amal_verified.isolation._engine.dispatch import NO_DISPATCH, TaggedTensor, plain
from amal_verified.isolation._engine.global_hooks import ensure_active
from amal_verified.isolation._engine.optimizer_steps import Swapped, all_params, rewrap_grads, unwrap_grads
from amal_verified.isolation._engine.refusals import named_tensors_in, tensors_in, violation
from amal_verified.isolation.errors import IsolationViolation
from amal_verified.isolation.labels import EMPTY, Label

__all__ = ["GatedOptimizer"]

NamesArg = Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]] | torch.nn.Module | None


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


_HINT = (
    "compute the world-model loss from PrimaryData only (targets included); keep auxiliary "
    "losses off protected parameters (detach shared features, or give the policy its own "
    "encoder); clip protected gradients separately from the policy's. Then call zero_grad() "
    "and recompute the loss."
)
_STATE_HINT = (
    "optimizer state and parameters of a gated model must come from its own primary-data steps; "
    "load a checkpoint saved from gated training, or re-create the optimizer."
)


_DICT: Final = frozenset({dict})


def _grad_labels_unwrapped(params: Iterable[torch.Tensor], swapped: Swapped) -> list[Label]:
    """The labels of the parameters' gradients (EMPTY where there is none), giving the wrapped
    optimizer plain gradients as :func:`~amal_verified.isolation._engine.optimizer_steps.unwrap_grads`
    does (appended to ``swapped``)."""
    labels: list[Label] = []
    for p in params:
        g = p.grad
        if g is None:
            labels.append(EMPTY)
            continue
        labels.append(store.label_of_plain(g))
        if type(g) is not torch.Tensor and isinstance(g, TaggedTensor):
            alias = plain(g)
            p.grad = alias
            swapped.append((p, g, alias))
    return labels


def _forwarded(name: str) -> Any:
    """An attribute of the wrapper that is the wrapped optimizer's (read, written and deleted there)."""

    def get(self: GatedOptimizer) -> Any:
        return getattr(self.original_optimizer, name)

    def set_(self: GatedOptimizer, value: Any) -> None:
        setattr(self.original_optimizer, name, value)

    def delete(self: GatedOptimizer) -> None:
        delattr(self.original_optimizer, name)

    return property(get, set_, delete)


class GatedOptimizer(torch.optim.Optimizer):
    """Wraps ``optimizer`` and refuses any auxiliary-derived update of its parameters.

    ``names`` (a module, a mapping or ``named_parameters()``) gives parameters
    readable names in refusals; a module's registered buffers are protected
    too.  Optimizers built from ``named_parameters()`` need no names.
    """

    # Read by the process-wide step hooks (``optimizer_steps``): this optimizer checks its own steps.
    gates_its_parameters: Final = True

    @checked
    def __init__(self, optimizer: torch.optim.Optimizer, *, names: NamesArg = None) -> None:
        if isinstance(optimizer, GatedOptimizer):
            raise TypeError("this optimizer is already gated; wrap the original optimizer once")
        lazy = sum(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in all_params(optimizer))
        if lazy:
            raise TypeError(
                f"{lazy} parameter(s) of this optimizer belong to a lazy module (nn.LazyLinear, ...) and are "
                "not initialised yet, so their memory cannot be protected; run one forward pass first (on "
                "any data) to initialise them, then gate the optimizer"
            )
        ensure_active()
        buffers = list(names.named_buffers()) if isinstance(names, torch.nn.Module) else []
        self._setup(optimizer, names, buffers)

    def _setup(
        self, optimizer: torch.optim.Optimizer, names: NamesArg, buffers: list[tuple[str, torch.Tensor]]
    ) -> None:
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
        self._state_signature: tuple[int, int] = (-1, -1)
        self._buffers = buffers
        self._protect_all()

    def _protect_all(self) -> None:
        """Protect every parameter, its state and the buffers; raises before protecting anything."""
        names = _param_names(self.original_optimizer, self._names_arg)
        refused = [
            (names[id(p)], label, store.origin_of(p))
            for p in all_params(self.original_optimizer)
            if (label := store.label_of_plain(p)).has_aux
        ]
        if refused:
            raise violation(
                f"protecting the parameters of {self._owner}",
                refused,
                "these parameters already hold values computed from auxiliary data (initialised or "
                "loaded from an aux-trained model); initialise the world model from primary data or "
                "from scratch.",
                changed="Nothing was protected.",
            )
        self._names = names
        records: list[_protection.Protected] = []
        for p in all_params(self.original_optimizer):
            records.append(_protection.protect(p, names[id(p)], self._owner, "parameter"))
            if p.requires_grad:  # a frozen parameter has no gradient to label (until unfrozen: then
                _grad_labels.ensure_hook(p)  # the module boundary hooks it where auxiliary data reach it)
        self._parameter_records = records
        self._protect_state()
        for name, b in self._buffers:
            _protection.protect(b, name, self._owner, "buffer")

    def _protect_state(self) -> None:
        state = self.original_optimizer.state
        # Optimizers create state lazily and then update it in place: protect only what is new.
        values = state.values()
        if set(map(type, values)) <= _DICT:  # what every torch optimizer keeps; counted in C, every step
            counted = sum(map(len, values))
        else:
            counted = sum(len(v) for v in values if type(v) is dict or isinstance(v, Mapping))
        signature = (len(state), counted)
        if signature == self._state_signature:
            return
        self._state_signature = signature
        for p, entries in state.items():
            if not isinstance(entries, Mapping):
                continue
            for key, value in entries.items():
                for t in tensors_in(value):
                    if _protection.protection_of(t) is None:
                        name = self._name_of(p)
                        _protection.protect(t, f"{name}[{key!r}]", self._owner, "optimizer state")

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

    @property
    def _step_supports_amp_scaling(self) -> bool:
        return bool(getattr(self.original_optimizer, "_step_supports_amp_scaling", False))

    # ``GradScaler.step`` hands an optimizer that unscales in its kernel (``fused=True``) the scale
    # and the inf flag as attributes, which the wrapped optimizer's step reads from itself.
    grad_scale = _forwarded("grad_scale")
    found_inf = _forwarded("found_inf")

    def state_dict(self) -> dict[str, Any]:
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        state_dict: dict[str, Any] = self.original_optimizer.state_dict()
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        refused = [
            (name, label, store.origin_of(t))
            for name, t in named_tensors_in(state_dict, "state_dict")
            if (label := store.label_of_plain(t)).has_aux
        ]
        if refused:
            raise violation(f"{self._owner}.load_state_dict()", refused, _STATE_HINT)
        self.original_optimizer.load_state_dict(state_dict)
        self._state_signature = (-1, -1)
        self._protect_state()
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.original_optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add the group to the wrapped optimizer and protect it; if it cannot be protected, the
        group is removed again before the error is raised."""
        groups = self.original_optimizer.param_groups
        before = len(groups)
        self.original_optimizer.add_param_group(param_group)
        try:
            self._protect_all()
        except BaseException:
            del groups[before:]
            raise

    def __repr__(self) -> str:
        return f"GatedOptimizer({self.original_optimizer!r})"

    def __getstate__(self) -> dict[str, Any]:
        """What a copy needs: the wrapped optimizer, parameter names and protected buffers (hooks,
        as for any optimizer, are not copied).  The copy protects the copied tensors."""
        params = list(all_params(self.original_optimizer))
        return {
            "original_optimizer": self.original_optimizer,
            "names": [(self._names[id(p)], p) for p in params],
            "buffers": self._buffers,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        ensure_active()
        self._setup(state["original_optimizer"], state["names"], state["buffers"])

    def _name_of(self, p: torch.Tensor) -> str:
        """The parameter's name in refusals; parameters added to the wrapped optimizer itself after
        gating are named when first met (by position, as unnamed ones are)."""
        name = self._names.get(id(p))
        if name is None:
            self._names = _param_names(self.original_optimizer, self._names_arg)
            name = self._names.get(id(p), "<unnamed>")
        return name

    # -- the gate ----------------------------------------------------------------
    @property
    def protected_names(self) -> list[str]:
        return [self._names[id(p)] for p in all_params(self.original_optimizer)]

    def _follow_replaced_memory(self) -> None:
        """Protect the memory each parameter uses now (``p.data = other`` on a plain tensor is not
        seen when it happens), before any auxiliary label exists too: a later write into it is
        refused as it is made."""
        for info in self._parameter_records:
            _protection.refresh(info)

    def check(self) -> None:
        """Raise :class:`IsolationViolation` if anything the next step reads carries aux data."""
        self._follow_replaced_memory()
        if not store.counters.aux:
            return  # no auxiliary label was ever written in this process
        refused = optimizer_steps.protected_reads(self.original_optimizer, self._name_of, all_named=True)
        if refused:
            raise violation(f"{self._owner}.step()", refused, _HINT)

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        """Check everything the update reads, then step the wrapped optimizer on plain gradients.

        With ``closure``, the gradients of every evaluation are checked before the wrapped
        optimizer reads them; since it may evaluate the closure again after changing the
        parameters (LBFGS), parameters and optimizer state are saved first and restored if an
        evaluation is refused.
        """
        self.check()
        inner = self.original_optimizer
        params = list(all_params(inner))
        swapped: Swapped = []
        saved: _Saved | None = None
        args: tuple[Any, ...] = ()
        labels: list[Label] = []
        if closure is None:
            labels = _grad_labels_unwrapped(params, swapped)
        else:
            saved = _save(params, inner.state)

            def gated_closure() -> Any:
                with torch.enable_grad():
                    loss = closure()
                self.check()  # before the wrapped optimizer uses these gradients
                swapped.extend(unwrap_grads(params))
                return loss

            args = (gated_closure,)
        optimizer_steps.gated_steps_running += 1
        try:
            result = _step_inner(inner, *args, **kwargs)
        except IsolationViolation:
            if saved is not None:
                _restore(saved, inner.state)
            raise
        finally:
            optimizer_steps.gated_steps_running -= 1
            rewrap_grads(swapped)
        if closure is not None:
            labels = [EMPTY if p.grad is None else store.label_of_plain(p.grad) for p in params]
        for p, label in zip(params, labels, strict=True):
            if label is not EMPTY and not store.holds_exactly(p, label):
                store.write_label(p, label)
            if not p.is_leaf:  # updated in place: its autograd node changed
                _grad_labels.rehook_non_leaf(p)
        self._protect_state()
        return result


class _Saved:
    """Parameter values and optimizer state as they were before a ``step(closure)``."""

    __slots__ = ("params", "state")

    def __init__(self, params: list[tuple[torch.Tensor, torch.Tensor]], state: list[tuple[Any, Any, Any]]):
        self.params = params
        self.state = state  # (key, the entry object, its frozen contents)


def _freeze(value: Any) -> Any:
    """``value`` with the contents of every tensor and container in it copied (objects kept)."""
    if isinstance(value, torch.Tensor):
        with NO_DISPATCH(), torch.no_grad():
            return (value, value.detach().clone())
    if isinstance(value, dict):
        return (value, [(k, _freeze(v)) for k, v in value.items()])
    if isinstance(value, list):
        return (value, [_freeze(v) for v in value])
    if isinstance(value, tuple):
        return (value, [_freeze(v) for v in value])
    return (value, None)


def _thaw(frozen: Any) -> Any:
    """The object ``_freeze`` saw, with the contents it had then."""
    value, contents = frozen
    if isinstance(value, torch.Tensor):
        with NO_DISPATCH(), torch.no_grad():
            value.copy_(contents)
    elif isinstance(value, dict):
        value.clear()
        value.update((k, _thaw(v)) for k, v in contents)
    elif isinstance(value, list):
        value[:] = [_thaw(v) for v in contents]
    elif isinstance(value, tuple):
        for v in contents:
            _thaw(v)
    return value


def _save(params: list[torch.Tensor], state: Any) -> _Saved:
    with NO_DISPATCH(), torch.no_grad():
        values = [(p, p.detach().clone()) for p in params]
    return _Saved(values, [(key, entry, _freeze(entry)) for key, entry in state.items()])


def _restore(saved: _Saved, state: Any) -> None:
    with NO_DISPATCH(), torch.no_grad():
        for p, value in saved.params:
            p.copy_(value)
    keys = {id(key) for key, _, _ in saved.state}
    for key in [k for k in state if id(k) not in keys]:
        del state[key]
    for key, entry, frozen in saved.state:
        state[key] = entry
        _thaw(frozen)


def _step_inner(inner: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
    """Step the wrapped optimizer with its own step hooks but not the global ones, which PyTorch
    already ran once for the wrapper (each global hook sees one step per gated step)."""
    step = getattr(type(inner).step, "__wrapped__", None)
    if step is None:
        return inner.step(*args, **kwargs)
    call_args: tuple[Any, ...] = (inner, *args)
    for pre_hook in inner._optimizer_step_pre_hooks.values():
        result = pre_hook(inner, call_args, kwargs)
        if result is not None:
            call_args, kwargs = result
    out = step(*call_args, **kwargs)
    inner._optimizer_step_code()
    for post_hook in inner._optimizer_step_post_hooks.values():
        post_hook(inner, call_args, kwargs)
    return out
