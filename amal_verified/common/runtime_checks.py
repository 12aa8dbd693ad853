"""Run-time type checking of the public API: beartype, raising plain ``TypeError``.

beartype checks one *randomly chosen* item of a container argument (``tuple[int, ...]``,
``Sequence[torch.Generator]``), drawing the index with ``random.getrandbits`` — the global ``random``
generator, which this library does not own.  Left alone, every checked call would advance the
user's global ``random`` stream, by an amount depending on how often the library was called (e.g.
on the number of auxiliary agents).  :func:`checked` therefore gives each wrapper it creates the
library's own ``random.Random`` instance instead (beartype passes the function to its wrappers as
the keyword default ``__beartype_getrandbits``; its ``On`` strategy, which would check every item,
is not implemented for these hints in beartype 0.23).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar, cast

from beartype import BeartypeConf, FrozenDict, beartype

__all__ = ["checked", "checked_as"]

_T = TypeVar("_T")
_GETRANDBITS: Final = "__beartype_getrandbits"
# The library's own stream for beartype's choice of which container item to check.
_OWN_RANDOM: Final = random.Random(0x5EED)

# is_pep484_tower: an int is accepted where a float is expected, as PEP 484 says.
_beartype: Final = beartype(conf=BeartypeConf(violation_type=TypeError, is_pep484_tower=True))


def _own_random(function: Any) -> None:
    defaults = getattr(function, "__kwdefaults__", None)
    if isinstance(defaults, dict) and _GETRANDBITS in defaults:
        defaults[_GETRANDBITS] = _OWN_RANDOM.getrandbits


def checked(obj: _T) -> _T:
    """Decorate a function or class with beartype (``TypeError`` on violations, PEP 484 numeric tower),
    using the library's own random stream for container-item sampling (see the module docstring)."""
    return _decorate(_beartype, obj)


def checked_as(overrides: Mapping[type, type]) -> Callable[[_T], _T]:
    """:func:`checked`, with each type in ``overrides`` checked at run time as the type it maps to
    (beartype's ``hint_overrides``): for a hint whose ``isinstance`` test costs more than the check
    is worth, such as a subtype the function's result belongs to by construction."""
    decorator = beartype(
        conf=BeartypeConf(
            violation_type=TypeError, is_pep484_tower=True, hint_overrides=FrozenDict(overrides)
        )
    )
    return lambda obj: _decorate(decorator, obj)


def _decorate(decorator: Any, obj: _T) -> _T:
    decorated: Any = decorator(obj)
    if isinstance(decorated, type):
        for attr in vars(decorated).values():
            if isinstance(attr, staticmethod | classmethod):
                _own_random(attr.__func__)
            elif isinstance(attr, property):
                for accessor in (attr.fget, attr.fset, attr.fdel):
                    _own_random(accessor)
            else:
                _own_random(attr)
    else:
        _own_random(decorated)
    return cast(_T, decorated)
