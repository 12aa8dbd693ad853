"""The world model: what the gate protects and Theorem 1 speaks of.

``ensemble`` (the paper's recurrent ensemble, ``EnsembleWorldModel``), ``linear`` (the
linear-Gaussian model), ``learner`` (``WorldModelLearner``: its update, on primary data only, through a
``GatedOptimizer``), ``information_gain`` (the exploration bonus computed from the ensemble) and ``fit``
(a learner's one-step errors on held-out transitions against the naive predictors "no change" and "the
best constant").
Above the isolation core; below the agents and the run.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

# The names of ``ensemble``, read from the package (the import path they had before the layering), are
# forwarded with a DeprecationWarning.


def __getattr__(name: str) -> Any:
    ensemble = importlib.import_module("amal_verified.world_model.ensemble")
    if name.startswith("__") or name not in ensemble.__all__:
        raise AttributeError(f"module 'amal_verified.world_model' has no attribute {name!r}")
    warnings.warn(
        f"amal_verified.world_model.{name} moved to amal_verified.world_model.ensemble.{name}; "
        "import it from there (or use amal_verified.EnsembleWorldModel)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(ensemble, name)
