"""Run-time type checking of the public API: beartype, raising plain ``TypeError``."""

from __future__ import annotations

from typing import Final

from beartype import BeartypeConf, beartype

__all__ = ["checked"]

# is_pep484_tower: an int is accepted where a float is expected, as PEP 484 says.
checked: Final = beartype(conf=BeartypeConf(violation_type=TypeError, is_pep484_tower=True))
