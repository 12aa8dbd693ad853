"""Import paths of modules that moved when the package was arranged into layers.

``import amal_verified.gate`` still works: a finder on ``sys.meta_path`` answers for every old path
with the module at its new place (the same module object, so patches and ``isinstance`` checks see one
module) and a :class:`DeprecationWarning` naming the new path.  Pickles written before the move name
the old paths too (a checkpoint's labelled tensors are rebuilt by a function of the transfer module),
so the private modules are mapped as well.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Final

__all__ = ["MOVED", "MOVED_PACKAGES", "install"]

MOVED: Final[dict[str, str]] = {
    "amal_verified.labels": "amal_verified.isolation.labels",
    "amal_verified.errors": "amal_verified.isolation.errors",
    "amal_verified.tagged": "amal_verified.isolation.tagging",
    "amal_verified.gate": "amal_verified.isolation.gate",
    "amal_verified.escaping": "amal_verified.isolation.escapes",
    "amal_verified.buffers": "amal_verified.isolation.buffers",
    "amal_verified.reference": "amal_verified.isolation.reference",
    "amal_verified._label_store": "amal_verified.isolation._engine.label_store",
    "amal_verified._dispatch": "amal_verified.isolation._engine.dispatch",
    "amal_verified._boundary": "amal_verified.isolation._engine.boundary",
    "amal_verified._grad_labels": "amal_verified.isolation._engine.grad_labels",
    "amal_verified._protection": "amal_verified.isolation._engine.protection",
    "amal_verified._transfer": "amal_verified.isolation._engine.global_hooks",  # what pickles use of it
    "amal_verified._activation": "amal_verified.isolation._engine.global_hooks",
    "amal_verified._provenance": "amal_verified.isolation._engine.origins",
    "amal_verified._runtime_checks": "amal_verified.common.runtime_checks",
    "amal_verified._durable_io": "amal_verified.common.durable_io",
    "amal_verified._module_loading": "amal_verified.common.module_loading",
    "amal_verified.rng_streams": "amal_verified.common.rng_streams",
    "amal_verified.pytest_plugin": "amal_verified.audit.pytest_plugin",
    "amal_verified.linear_world_model": "amal_verified.world_model.linear",
    "amal_verified.wm_training": "amal_verified.world_model.learner",
    "amal_verified.information_gain": "amal_verified.world_model.information_gain",
    "amal_verified.ledger": "amal_verified.record.ledger",
    "amal_verified.checkpoint": "amal_verified.record.checkpoint",
    "amal_verified.primary_data": "amal_verified.record.primary_log",
    "amal_verified.policy": "amal_verified.agents.sac",
    "amal_verified.cem": "amal_verified.agents.cem",
    "amal_verified.aux_population": "amal_verified.agents.aux_population",
    "amal_verified.aux_env": "amal_verified.agents.aux_env",
    "amal_verified.model_rollouts": "amal_verified.agents.rollouts",
    "amal_verified.env_runner": "amal_verified.agents.env_runner",
    "amal_verified.run_config": "amal_verified.run.config",
    "amal_verified.trainer": "amal_verified.run.trainer",
    "amal_verified.certify": "amal_verified.run.certify",
    "amal_verified.evaluation": "amal_verified.run.evaluate",
    "amal_verified.run_logging": "amal_verified.run.logs",
    "amal_verified.demo": "amal_verified.cli.demo",
}
# Repository tooling left the installed package for the tools distribution beside it (tools/).
MOVED_PACKAGES: Final[dict[str, str]] = {
    "amal_verified.bench": "amal_tools.bench",
    "amal_verified.compliance": "amal_tools.compliance",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.new}; import it from there (the old path will be removed)",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """The module at the new path is already executed."""


class _OldPathFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            for old, moved in MOVED_PACKAGES.items():
                if fullname == old or fullname.startswith(old + "."):
                    new = moved + fullname[len(old) :]
                    break
            else:
                return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(new))


def install() -> None:
    """Answer for the old paths (idempotent)."""
    if not any(isinstance(finder, _OldPathFinder) for finder in sys.meta_path):
        # First: a submodule of a moved package would otherwise be found by its parent's ``__path__``
        # and imported a second time under the old name.
        sys.meta_path.insert(0, _OldPathFinder())
