"""Installs the process-wide hooks, once, the first time data is tagged or an optimizer gated.

Nothing is installed by ``import amal_verified``: code that never tags data
pays nothing.  Once active:

- every module call passes through ``_boundary``'s forward hooks (one
  attribute test while nothing is labelled);
- every optimizer step passes through ``gate``'s global step hooks;
- ``nn.Parameter.data = value`` passes through ``gate``'s guard (a protected parameter refuses
  auxiliary-labelled memory; any other parameter taking such memory becomes tracked);
- PyTorch's global forward-hook registries read as empty to module calls nested in a running
  tracked call (``_boundary``), so nested calls take PyTorch's hook-free path;
- ``Module.load_state_dict`` first checks that no auxiliary-labelled value is
  about to be copied into protected memory, so a refused load writes nothing
  (PyTorch would otherwise write the entries before the refused one and turn
  the refusal into a ``RuntimeError``);
- pickling carries labels (``_transfer``).
"""

from __future__ import annotations

import functools
from typing import Any

_active = False


def ensure_active() -> None:
    global _active
    if _active:
        return
    import torch
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    from amal_verified import _boundary, _transfer, gate

    _boundary.install_scoped_registries()
    torch.nn.modules.module.register_module_forward_pre_hook(_boundary.pre_hook)
    torch.nn.modules.module.register_module_forward_hook(_boundary.post_hook, always_call=True)
    gate.install_parameter_data_guard()
    register_optimizer_step_pre_hook(gate._any_optimizer_pre_step)
    register_optimizer_step_post_hook(gate._any_optimizer_post_step)
    _transfer.install()
    _guard_load_state_dict()
    _active = True


def is_active() -> bool:
    return _active


def _guard_load_state_dict() -> None:
    import torch

    original = torch.nn.Module.load_state_dict

    @functools.wraps(original)
    def load_state_dict(self: torch.nn.Module, state_dict: Any, *args: Any, **kwargs: Any) -> Any:
        if not torch.compiler.is_compiling():
            _refuse_protected_loads(self, state_dict)
        return original(self, state_dict, *args, **kwargs)

    torch.nn.Module.load_state_dict = load_state_dict  # type: ignore[method-assign]


def _refuse_protected_loads(module: Any, state_dict: Any) -> None:
    import torch

    from amal_verified import _label_store as store
    from amal_verified import _protection
    from amal_verified.errors import IsolationViolation
    from amal_verified.labels import Label

    if not store.counters.tagged or not hasattr(state_dict, "items"):
        return
    own = module.state_dict(keep_vars=True)
    refused: list[tuple[str, Label]] = []
    owner = ""
    for key, value in state_dict.items():
        target = own.get(key)
        if not isinstance(value, torch.Tensor) or not isinstance(target, torch.Tensor):
            continue
        label = store.label_of_plain(value)
        if not label.has_aux:
            continue
        info = _protection.protection_of(target) or _protection.protected_memory(target)
        if info is not None:
            refused.append((key, label))
            owner = info.owner
    if refused:
        sources = tuple(sorted(Label.join_all(label for _, label in refused).aux_sources))
        keys = ", ".join(key for key, _ in refused[:8])
        raise IsolationViolation(
            f"refused {type(module).__name__}.load_state_dict(): {len(refused)} entr(y/ies) hold data from "
            f"{', '.join(map(str, sources))} and would be copied into memory protected by {owner}: "
            f"{keys}. Nothing was loaded. Load the world model only from checkpoints of gated training "
            f"(or from untagged values).",
            parameters=tuple(key for key, _ in refused),
            sources=sources,
            operation=f"{type(module).__name__}.load_state_dict()",
        )
