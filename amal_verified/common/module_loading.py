"""Import a Python file by path under a given module name, leaving ``sys.modules`` clean on failure.

Shared by the compliance runner (``proofs/*.py``) and the audit (``path/to/train.py:function``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["ModuleLoadError", "import_file"]


class ModuleLoadError(ValueError):
    """The file is not importable; the message names the file and, if it raised, its exception."""


def import_file(path: Path, name: str) -> ModuleType:
    """Execute ``path`` as module ``name`` (registered in ``sys.modules`` only if it imports cleanly)."""
    if not path.is_file():
        raise ModuleLoadError(f"no such file: {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModuleLoadError(f"{path}: not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ModuleLoadError(f"{path}: failed to import: {type(exc).__name__}: {exc}") from exc
    return module
