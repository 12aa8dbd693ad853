"""amal_verified: auxiliary agents for exploration, world models that provably learn from primary data only.

>>> import amal_verified as av
>>> p = av.primary(x, source="real-env")      # PrimaryData, a torch.Tensor
>>> a = av.aux(x, source="aux-3")             # AuxData
>>> opt = av.GatedOptimizer(torch.optim.Adam(world_model.parameters(), lr=3e-4))

Importing this package is cheap: torch and the tracking machinery load on first
use of a name below, and global hooks are installed only when data is first
tagged or an optimizer first gated.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "primary": "amal_verified.tagged",
    "aux": "amal_verified.tagged",
    "label_of": "amal_verified.tagged",
    "PrimaryData": "amal_verified.tagged",
    "AuxData": "amal_verified.tagged",
    "TaggedTensor": "amal_verified.tagged",
    "Label": "amal_verified.labels",
    "Source": "amal_verified.labels",
    "SourceKind": "amal_verified.labels",
    "GatedOptimizer": "amal_verified.gate",
    "IsolationViolation": "amal_verified.errors",
    "IsolationWarning": "amal_verified.errors",
    "TaggingError": "amal_verified.errors",
    "declassify": "amal_verified.escaping",
    "escapes": "amal_verified.escaping",
    "declassifications": "amal_verified.escaping",
    "clear_escapes": "amal_verified.escaping",
    "set_strict": "amal_verified.escaping",
    "is_strict": "amal_verified.escaping",
    "Escape": "amal_verified.escaping",
    "PrimaryBuffer": "amal_verified.buffers",
    "AuxBuffer": "amal_verified.buffers",
    "Batch": "amal_verified.buffers",
}

__all__ = [
    "AuxBuffer",
    "AuxData",
    "Batch",
    "Escape",
    "GatedOptimizer",
    "IsolationViolation",
    "IsolationWarning",
    "Label",
    "PrimaryBuffer",
    "PrimaryData",
    "Source",
    "SourceKind",
    "TaggedTensor",
    "TaggingError",
    "aux",
    "clear_escapes",
    "declassifications",
    "declassify",
    "escapes",
    "is_strict",
    "label_of",
    "primary",
    "set_strict",
]

if TYPE_CHECKING:
    from amal_verified.buffers import AuxBuffer, Batch, PrimaryBuffer
    from amal_verified.errors import IsolationViolation, IsolationWarning, TaggingError
    from amal_verified.escaping import (
        Escape,
        clear_escapes,
        declassifications,
        declassify,
        escapes,
        is_strict,
        set_strict,
    )
    from amal_verified.gate import GatedOptimizer
    from amal_verified.labels import Label, Source, SourceKind
    from amal_verified.tagged import AuxData, PrimaryData, TaggedTensor, aux, label_of, primary


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'amal_verified' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
