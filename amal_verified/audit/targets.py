"""Audit targets: a user's ``train(primary, aux)`` named ``module:function``, with its example inputs.

A target is named ``module:function`` (an importable module; the current directory is searched
first) or ``path/to/file.py:function`` (its directory is searched first, so it may import its sibling
modules, as when it runs as a script).  The target's module defines ``amal_example_inputs()``
returning one ``(primary, aux)`` pair: the inputs the audit runs ``function`` on and varies.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from amal_verified.common.module_loading import ModuleLoadError, import_file

__all__ = ["EXAMPLE_INPUTS", "Target", "TargetError", "load_target"]

EXAMPLE_INPUTS = "amal_example_inputs"
"""Name of the function, in the target's module, that returns the example ``(primary, aux)``."""

USAGE = "a target is module:function (e.g. my_package.training:train) or path/to/file.py:function"


class TargetError(ValueError):
    """The target cannot be audited: a malformed spec, an unimportable module, a missing function or
    example inputs, or a training function that fails on its own example inputs (a usage error)."""


@dataclass(frozen=True)
class Target:
    """A training function with the example inputs the audit varies."""

    name: str
    train: Callable[[Any, Any], Any]
    primary: Any
    aux: Any


def _is_path(module_part: str) -> bool:
    return module_part.endswith(".py") or os.sep in module_part or "/" in module_part


def _import(module_part: str) -> ModuleType:
    """Import the target's module with, as ``python`` would, its own directory (a file target) or the
    current directory (a module target) first on ``sys.path`` while it imports; restored afterwards."""
    path = Path(module_part).resolve() if _is_path(module_part) else None
    search = str(path.parent) if path is not None else os.getcwd()
    added = search not in sys.path
    if added:
        sys.path.insert(0, search)
    try:
        if path is not None:
            return import_file(path, f"_amal_target_{path.stem}")
        return importlib.import_module(module_part)
    except ModuleLoadError as exc:
        raise TargetError(str(exc)) from exc
    except Exception as exc:  # the user's module failed to import: name its error, not a traceback
        raise TargetError(f"cannot import {module_part!r}: {type(exc).__name__}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(search)


def load_target(spec: str) -> Target:
    """Resolve ``module:function`` (or ``path/to/file.py:function``) and call its example inputs.

    Raises :class:`TargetError` naming the problem when the spec is malformed, the module cannot be
    imported (its own exception is named), the function is missing or not callable, or
    ``amal_example_inputs`` is missing, raises, or does not return a pair.
    """
    module_part, sep, function = spec.rpartition(":")
    if not sep or not module_part or not function or not function.isidentifier():
        raise TargetError(f"{USAGE}; got {spec!r}")
    module = _import(module_part)
    train = getattr(module, function, None)
    if train is None:
        raise TargetError(f"{module_part!r} has no attribute {function!r}")
    if not callable(train):
        raise TargetError(f"{spec} is a {type(train).__name__}, not a function train(primary, aux)")
    inputs = getattr(module, EXAMPLE_INPUTS, None)
    if not callable(inputs):
        raise TargetError(
            f"{module_part!r} must define {EXAMPLE_INPUTS}() returning (primary, aux): the example inputs "
            f"the audit runs {function} on and varies"
        )
    try:
        pair = inputs()
    except Exception as exc:
        raise TargetError(f"{module_part}.{EXAMPLE_INPUTS}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise TargetError(
            f"{module_part}.{EXAMPLE_INPUTS}() must return a pair (primary, aux), got {type(pair).__name__}"
        )
    return Target(spec, train, pair[0], pair[1])
