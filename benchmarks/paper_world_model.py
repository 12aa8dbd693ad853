"""The paper's recurrent world model in plain PyTorch, re-exported from ``amal_tools.bench``.

The file is ``tools/amal_tools/bench/_plain_world_model.py``.  Importing this module does **not**
import ``amal_verified``: the file is located with ``importlib.util.find_spec`` (which does not
run the package ``__init__``) and loaded by path, as the gate-overhead worker does.  See that
file for the architecture.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "_plain_world_model"


def _load() -> object:
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    package = importlib.util.find_spec("amal_verified")
    if package is None or not package.submodule_search_locations:
        raise ImportError("amal_verified is not installed")
    path = Path(next(iter(package.submodule_search_locations))) / "bench" / f"{_NAME}.py"
    spec = importlib.util.spec_from_file_location(_NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    spec.loader.exec_module(module)
    return module


_module = _load()
ACTION_DIM = _module.ACTION_DIM  # type: ignore[attr-defined]
BATCH = _module.BATCH  # type: ignore[attr-defined]
GRU_HIDDEN = _module.GRU_HIDDEN  # type: ignore[attr-defined]
HIDDEN = _module.HIDDEN  # type: ignore[attr-defined]
LATENT = _module.LATENT  # type: ignore[attr-defined]
LR = _module.LR  # type: ignore[attr-defined]
OBS_DIM = _module.OBS_DIM  # type: ignore[attr-defined]
SEQ_LEN = _module.SEQ_LEN  # type: ignore[attr-defined]
Batch = _module.Batch  # type: ignore[attr-defined]
PaperWorldModel = _module.PaperWorldModel  # type: ignore[attr-defined]
StepOptimizer = _module.StepOptimizer  # type: ignore[attr-defined]
make_batches = _module.make_batches  # type: ignore[attr-defined]
train_step = _module.train_step  # type: ignore[attr-defined]
world_model_loss = _module.world_model_loss  # type: ignore[attr-defined]

__all__ = [
    "ACTION_DIM",
    "BATCH",
    "GRU_HIDDEN",
    "LATENT",
    "LR",
    "OBS_DIM",
    "SEQ_LEN",
    "Batch",
    "PaperWorldModel",
    "StepOptimizer",
    "make_batches",
    "train_step",
    "world_model_loss",
]
