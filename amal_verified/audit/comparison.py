"""Bit-for-bit comparison of two world-model states, NaN-aware, with a readable account of what differs.

"NaN-aware" means the stored bits are compared: a NaN equals the same NaN (a world model that is NaN
in both runs is not a difference), while ``0.0`` and ``-0.0`` differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Difference", "compare", "format_differences", "snapshot"]


@dataclass(frozen=True)
class Difference:
    """One world-model state entry that is not bit-identical between two runs.

    ``count`` of ``numel`` values differ; ``max_abs_difference`` is the largest difference among
    values finite in both runs (``None`` if there is none: the entry differs only in NaN/Inf
    positions, or in dtype, shape or presence -- then ``detail`` says which).
    """

    name: str
    count: int
    numel: int
    max_abs_difference: float | None = None
    detail: str = ""

    def __str__(self) -> str:
        if self.detail:
            return f"{self.name}: {self.detail}"
        text = f"{self.name}: {self.count} of {self.numel} values differ"
        if self.max_abs_difference is not None:
            text += f", largest finite difference {self.max_abs_difference:.3g}"
        return text


def snapshot(result: Any) -> dict[str, torch.Tensor]:
    """What a training run produced, as named detached CPU copies.

    An ``nn.Module`` gives ``param:<name>`` for every parameter and ``buffer:<name>`` for every
    buffer (persistent or not); a mapping gives its tensors under their keys.  ``TypeError``
    (naming what was returned) otherwise.
    """
    named: list[tuple[Any, torch.Tensor]]
    if isinstance(result, torch.nn.Module):
        named = [(f"param:{n}", p) for n, p in result.named_parameters()]
        named += [(f"buffer:{n}", b) for n, b in result.named_buffers()]
    elif isinstance(result, Mapping):
        named = list(result.items())
        for key, value in named:
            if not isinstance(value, torch.Tensor):
                raise TypeError(
                    f"train returned a mapping whose {key!r} is a {type(value).__name__}, not a tensor"
                )
    else:
        raise TypeError(
            "train must return the world model (an nn.Module) or a mapping of tensors, "
            f"got {type(result).__name__}"
        )
    from amal_verified.isolation._engine.dispatch import untracked_copy

    return {str(k): untracked_copy(v).cpu() for k, v in named}


def _bits(t: torch.Tensor) -> torch.Tensor:
    plain = t.to_dense() if t.layout != torch.strided else t
    flat = plain.contiguous().reshape(-1)
    return flat.view(torch.uint8) if flat.numel() else flat.to(torch.uint8)


def _entry_difference(name: str, a: torch.Tensor, b: torch.Tensor) -> Difference | None:
    if a.dtype != b.dtype or a.shape != b.shape:
        return Difference(
            name, a.numel(), a.numel(), detail=f"{a.dtype}{tuple(a.shape)} became {b.dtype}{tuple(b.shape)}"
        )
    if torch.equal(_bits(a), _bits(b)):
        return None
    if a.is_floating_point() or a.is_complex():
        x, y = a.to_dense().reshape(-1), b.to_dense().reshape(-1)
        differs = ~_bits(x).view(x.numel(), -1).eq(_bits(y).view(y.numel(), -1)).all(dim=1)
        both_finite = differs & x.isfinite() & y.isfinite()
        wide = torch.complex128 if a.is_complex() else torch.float64
        delta = (x[both_finite].to(wide) - y[both_finite].to(wide)).abs()
        largest = float(delta.max()) if delta.numel() else None
        return Difference(name, int(differs.sum()), a.numel(), largest)
    return Difference(name, int((a.to_dense() != b.to_dense()).sum()), a.numel())


def compare(
    expected: Mapping[str, torch.Tensor], actual: Mapping[str, torch.Tensor]
) -> tuple[Difference, ...]:
    """Every entry that differs between two snapshots (empty: bit-identical, same names, same order)."""
    found: list[Difference] = []
    for name in expected:
        if name not in actual:
            found.append(Difference(name, expected[name].numel(), expected[name].numel(), detail="missing"))
    for name in actual:
        if name not in expected:
            found.append(Difference(name, actual[name].numel(), actual[name].numel(), detail="new entry"))
    if not found and list(expected) != list(actual):
        found.append(Difference("(order)", 0, 0, detail="the same entries in a different order"))
    for name, a in expected.items():
        if name in actual:
            difference = _entry_difference(name, a, actual[name])
            if difference is not None:
                found.append(difference)
    return tuple(found)


def format_differences(differences: tuple[Difference, ...], limit: int = 12, indent: str = "  ") -> str:
    """One line per differing entry (at most ``limit``, then a count of the rest)."""
    lines = [f"{indent}{d}" for d in differences[:limit]]
    if len(differences) > limit:
        lines.append(f"{indent}... and {len(differences) - limit} more entries")
    return "\n".join(lines)
