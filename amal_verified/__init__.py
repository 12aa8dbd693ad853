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
    "TrainConfig": "amal_verified.run_config",
    "Trainer": "amal_verified.trainer",
    "certify_run": "amal_verified.certify",
    "Certificate": "amal_verified.certify",
    "EnsembleWorldModel": "amal_verified.world_model",
    "WorldModelLearner": "amal_verified.wm_training",
    "RunStreams": "amal_verified.rng_streams",
}

__all__ = [
    "AuxBuffer",
    "AuxData",
    "Batch",
    "Certificate",
    "EnsembleWorldModel",
    "Escape",
    "GatedOptimizer",
    "IsolationViolation",
    "IsolationWarning",
    "Label",
    "PrimaryBuffer",
    "PrimaryData",
    "RunStreams",
    "Source",
    "SourceKind",
    "TaggedTensor",
    "TaggingError",
    "TrainConfig",
    "Trainer",
    "WorldModelLearner",
    "aux",
    "certify_run",
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
    from amal_verified.certify import Certificate, certify_run
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
    from amal_verified.rng_streams import RunStreams
    from amal_verified.run_config import TrainConfig
    from amal_verified.tagged import AuxData, PrimaryData, TaggedTensor, aux, label_of, primary
    from amal_verified.trainer import Trainer
    from amal_verified.wm_training import WorldModelLearner
    from amal_verified.world_model import EnsembleWorldModel


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'amal_verified' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
