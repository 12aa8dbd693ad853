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

from amal_verified import _old_paths
from amal_verified._version import __version__ as __version__

_old_paths.install()

_EXPORTS = {
    "primary": "amal_verified.isolation.tagging",
    "aux": "amal_verified.isolation.tagging",
    "label_of": "amal_verified.isolation.tagging",
    "PrimaryData": "amal_verified.isolation.tagging",
    "AuxData": "amal_verified.isolation.tagging",
    "TaggedTensor": "amal_verified.isolation.tagging",
    "Label": "amal_verified.isolation.labels",
    "Source": "amal_verified.isolation.labels",
    "SourceKind": "amal_verified.isolation.labels",
    "GatedOptimizer": "amal_verified.isolation.gate",
    "IsolationViolation": "amal_verified.isolation.errors",
    "IsolationWarning": "amal_verified.isolation.errors",
    "TaggingError": "amal_verified.isolation.errors",
    "declassify": "amal_verified.isolation.escapes",
    "escapes": "amal_verified.isolation.escapes",
    "declassifications": "amal_verified.isolation.escapes",
    "clear_escapes": "amal_verified.isolation.escapes",
    "set_strict": "amal_verified.isolation.escapes",
    "is_strict": "amal_verified.isolation.escapes",
    "Escape": "amal_verified.isolation.escapes",
    "PrimaryBuffer": "amal_verified.isolation.buffers",
    "AuxBuffer": "amal_verified.isolation.buffers",
    "Batch": "amal_verified.isolation.buffers",
    "TrainConfig": "amal_verified.run.config",
    "Trainer": "amal_verified.run.trainer",
    "certify_run": "amal_verified.run.certify",
    "Certificate": "amal_verified.run.certify",
    "evaluate_run": "amal_verified.run.evaluate",
    "load_policy": "amal_verified.run.trained_policy",
    "TrainedPolicy": "amal_verified.run.trained_policy",
    "EnsembleWorldModel": "amal_verified.world_model.ensemble",
    "WorldModelLearner": "amal_verified.world_model.learner",
    "RunStreams": "amal_verified.common.rng_streams",
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
    "TrainedPolicy",
    "Trainer",
    "WorldModelLearner",
    "aux",
    "certify_run",
    "clear_escapes",
    "declassifications",
    "declassify",
    "escapes",
    "evaluate_run",
    "is_strict",
    "label_of",
    "load_policy",
    "primary",
    "set_strict",
]

if TYPE_CHECKING:
    from amal_verified.common.rng_streams import RunStreams
    from amal_verified.isolation.buffers import AuxBuffer, Batch, PrimaryBuffer
    from amal_verified.isolation.errors import IsolationViolation, IsolationWarning, TaggingError
    from amal_verified.isolation.escapes import (
        Escape,
        clear_escapes,
        declassifications,
        declassify,
        escapes,
        is_strict,
        set_strict,
    )
    from amal_verified.isolation.gate import GatedOptimizer
    from amal_verified.isolation.labels import Label, Source, SourceKind
    from amal_verified.isolation.tagging import AuxData, PrimaryData, TaggedTensor, aux, label_of, primary
    from amal_verified.run.certify import Certificate, certify_run
    from amal_verified.run.config import TrainConfig
    from amal_verified.run.evaluate import evaluate_run
    from amal_verified.run.trained_policy import TrainedPolicy, load_policy
    from amal_verified.run.trainer import Trainer
    from amal_verified.world_model.ensemble import EnsembleWorldModel
    from amal_verified.world_model.learner import WorldModelLearner


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'amal_verified' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
