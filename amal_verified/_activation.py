"""Installs the global hooks, once, the first time data is tagged or an optimizer gated.

Nothing is installed by ``import amal_verified``: code that never tags data
pays nothing.  Once active, every module call and optimizer step in the
process passes through a cheap check.
"""

from __future__ import annotations

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

    from amal_verified import _boundary, gate

    torch.nn.modules.module.register_module_forward_pre_hook(_boundary.pre_hook)
    torch.nn.modules.module.register_module_forward_hook(_boundary.post_hook, always_call=True)
    register_optimizer_step_pre_hook(gate._any_optimizer_pre_step)
    register_optimizer_step_post_hook(gate._any_optimizer_post_step)
    _active = True


def is_active() -> bool:
    return _active
