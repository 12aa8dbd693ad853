"""Run-time type checking of the public API: beartype, raising plain ``TypeError``."""

from __future__ import annotations

from typing import Final

from beartype import BeartypeConf, beartype

__all__ = ["checked"]

checked: Final = beartype(conf=BeartypeConf(violation_type=TypeError))
