"""The refusal every layer raises: which protected values auxiliary data reached, from where, what to do."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from amal_verified.isolation.errors import IsolationViolation
from amal_verified.isolation.labels import Label, Source

__all__ = ["Refused", "named_tensors_in", "tensors_in", "violation"]

Refused = tuple[str, Label, str | None]


def violation(
    what: str, refused: list[Refused], hint: str, changed: str = "Nothing was changed."
) -> IsolationViolation:
    names = tuple(dict.fromkeys(name for name, _, _ in refused))  # a value refused for two reasons once
    joined = Label.join_all(label for _, label, _ in refused)
    sources: tuple[Source, ...] = tuple(sorted(joined.aux_sources))
    origins = list(dict.fromkeys(origin for _, _, origin in refused if origin is not None))
    operation = "; ".join(origins[:3]) if origins else None
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    lines = [
        f"refused {what}: data from {', '.join(map(str, sources))} reached "
        f"{len(names)} protected value(s): {shown}.",
    ]
    if operation is not None:
        lines.append(f"  mixed in by: {operation}")
    lines.append(f"  {changed}")
    lines.append(f"  What to do: {hint}")
    return IsolationViolation("\n".join(lines), parameters=names, sources=sources, operation=operation)


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from tensors_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from tensors_in(v)


def named_tensors_in(value: Any, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from named_tensors_in(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from named_tensors_in(item, f"{path}[{i}]")
