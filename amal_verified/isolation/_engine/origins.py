"""Descriptions of where auxiliary data was mixed into a value, for refusal messages.

Origins are stored with storage labels (``_label_store``); an operation that
mixes aux data into a value derived from other data records itself, anything
else inherits the origin of its aux-labelled input.
"""

from __future__ import annotations

from typing import Any

import torch

from amal_verified.isolation.escapes import user_call_site


def describe(operation: str) -> str:
    """``operation`` at the user's call site; in backward, the autograd node too."""
    site = user_call_site(3)
    node: Any = torch._C._current_autograd_node()
    if node is not None:
        return f"{node.name()} (backward of a forward operation) during the backward pass started at {site}"
    return f"{operation} at {site}"
