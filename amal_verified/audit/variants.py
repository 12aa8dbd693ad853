"""Hypothesis strategy for auxiliary inputs shaped like the user's: the variants the audit tries.

From an example ``aux`` (tensors, NumPy arrays, Python scalars, and lists, tuples and dicts of them):

- floating-point arrays keep their values, or are filled with, sprinkled with or shifted by ``0``,
  ``±1e38``, the dtype's largest value, NaN or ``±Inf`` (or Gaussian noise of any scale); integer
  arrays are kept, zeroed or have their rows shuffled (they are often indices or discrete actions:
  their range is kept); bool arrays get random bits;
- leading dimensions (rows) change size, consistently within one record: every array of a dict or
  tuple with ``n`` rows gets the same new count (at least 1; rows are repeated cyclically, then
  varied);
- lists change length (0 up to two more than given: an auxiliary population of another size; new
  elements are varied copies of existing ones), and so do dicts *of records* (every value a dict, list
  or tuple, e.g. one entry per auxiliary agent; new entries are copies under fresh keys such as
  ``"aux-0#2"``).  Tuples and dicts of arrays (records: ``{"obs": ..., "reward": ...}``) keep their
  structure; Python floats are kept or replaced by one of the values above; other scalars and objects
  pass unchanged.

Hypothesis shrinks towards the example itself: "keep" and "same size" are the simplest choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

__all__ = ["Variant", "aux_variants"]

_SPECIAL = (0.0, 1e38, -1e38, float("nan"), float("inf"), float("-inf"))
_EXTRA_ELEMENTS = 2


class Variant:
    """An auxiliary input generated from the example's, and what was changed (``repr`` shows only that).

    A plain class, not a dataclass: Hypothesis prints dataclasses field by field, tensors included.
    """

    __slots__ = ("changes", "value")

    def __init__(self, value: Any, changes: tuple[str, ...]) -> None:
        self.value = value
        self.changes = changes

    def __repr__(self) -> str:
        return "Variant(" + ("; ".join(self.changes) or "unchanged") + ")"


def _leading(value: Any) -> int | None:
    if isinstance(value, torch.Tensor | np.ndarray) and value.ndim >= 1:
        return int(value.shape[0])
    return None


def _vary_tensor(
    draw: st.DrawFn, t: torch.Tensor, rows: int | None, where: str
) -> tuple[torch.Tensor, list[str]]:
    changes: list[str] = []
    out = t.detach().clone()
    if rows is not None and rows != t.shape[0]:
        out = out[torch.arange(rows) % t.shape[0]].clone()
        changes.append(f"{where}: {t.shape[0]} rows -> {rows}")
    if out.numel() == 0:
        return out, changes
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1), label="seed"))
    if out.is_floating_point():
        kind = draw(st.sampled_from(["keep", "fill", "sprinkle", "noise"]))
        top = float(torch.finfo(out.dtype).max)
        special = draw(st.sampled_from([*_SPECIAL, top, -top]))
        if kind == "fill":
            out.fill_(special)
            changes.append(f"{where}: filled with {special!r}")
        elif kind == "sprinkle":
            mask = torch.rand(out.shape, generator=g) < 0.3
            out[mask] = torch.tensor(special, dtype=out.dtype)
            changes.append(f"{where}: {int(mask.sum())} values set to {special!r}")
        elif kind == "noise":
            scale = draw(st.sampled_from([1e-3, 1.0, 1e6, 1e30]))
            out = out + (torch.randn(out.shape, generator=g, dtype=torch.float64) * scale).to(out.dtype)
            changes.append(f"{where}: Gaussian noise of scale {scale:g}")
    elif out.dtype == torch.bool:
        if draw(st.booleans()):
            out = torch.rand(out.shape, generator=g) < 0.5
            changes.append(f"{where}: random bits")
    elif not out.is_complex():
        kind = draw(st.sampled_from(["keep", "zero", "shuffle"]))
        if kind == "zero":
            out.zero_()
            changes.append(f"{where}: zeroed")
        elif kind == "shuffle" and out.ndim >= 1:
            out = out[torch.randperm(out.shape[0], generator=g)]
            changes.append(f"{where}: rows shuffled")
    return out, changes


def _is_collection(value: Mapping[Any, Any]) -> bool:
    """A dict *of records* (e.g. one entry per auxiliary agent), not a record of arrays: every value is
    itself a container.  Only such dicts change their number of items; a record keeps its fields."""
    return bool(value) and all(isinstance(v, Mapping | list | tuple) for v in value.values())


def _collection_keys(
    draw: st.DrawFn, value: Mapping[Any, Any], where: str, found: list[str]
) -> list[tuple[Any, Any]]:
    """``(new key, key of the item it copies)`` for a dict of records of another size (0 to 2 more
    items; the first ones kept, new ones copies of existing ones under fresh keys)."""
    existing = list(value)
    length = draw(st.integers(0, len(existing) + _EXTRA_ELEMENTS), label=f"items of {where}")
    if length != len(existing):
        found.append(f"{where}: {len(existing)} items -> {length}")
    keys: list[tuple[Any, Any]] = [(k, k) for k in existing[:length]]
    taken = set(existing)
    for i in range(len(existing), length):
        source = existing[i % len(existing)]
        copy_number = 2
        while (fresh := _fresh_key(source, copy_number)) in taken:
            copy_number += 1
        taken.add(fresh)
        keys.append((fresh, source))
    return keys


def _fresh_key(source: Any, n: int) -> Any:
    if isinstance(source, str):
        return f"{source}#{n}"
    if isinstance(source, int) and not isinstance(source, bool):
        return source + 1000 * n
    return (source, n)


def _vary(draw: st.DrawFn, value: Any, where: str, sizes: dict[int, int]) -> tuple[Any, list[str]]:
    """A variant of ``value``; ``sizes`` maps a leading size to its new size within one record."""
    n = _leading(value)
    rows = None
    if n is not None and n > 0:
        if n not in sizes:
            sizes[n] = draw(st.one_of(st.just(n), st.integers(1, 2 * n + 2)), label=f"rows of {where}")
        rows = sizes[n]
    if isinstance(value, torch.Tensor):
        return _vary_tensor(draw, value, rows, where)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        varied, changes = _vary_tensor(draw, torch.from_numpy(np.array(value)), rows, where)
        return varied.numpy().astype(value.dtype, copy=False), changes
    if isinstance(value, float):
        if draw(st.booleans()):
            special = draw(st.sampled_from(_SPECIAL))
            return special, [f"{where}: {value!r} -> {special!r}"]
        return value, []
    if isinstance(value, Mapping):
        items: dict[Any, Any] = {}
        found: list[str] = []
        record: dict[int, int] = {}
        keys = (
            _collection_keys(draw, value, where, found) if _is_collection(value) else [(k, k) for k in value]
        )
        for key, source in keys:
            items[key], more = _vary(draw, value[source], f"{where}[{key!r}]", record)
            found += more
        try:
            return type(value)(items), found  # type: ignore[call-arg]
        except TypeError:  # a mapping type that cannot be built from a dict: pass a plain dict
            return items, found
    if isinstance(value, tuple):
        record = {}
        parts = [_vary(draw, item, f"{where}[{i}]", record) for i, item in enumerate(value)]
        elements = [p[0] for p in parts]
        rebuilt = type(value)(*elements) if hasattr(value, "_fields") else type(value)(elements)
        return rebuilt, [c for p in parts for c in p[1]]
    if isinstance(value, list):
        length = len(value)
        if length:
            length = draw(st.integers(0, len(value) + _EXTRA_ELEMENTS), label=f"length of {where}")
        changes = [f"{where}: {len(value)} elements -> {length}"] if length != len(value) else []
        elements = []
        for i in range(length):
            element, more = _vary(draw, value[i % len(value)], f"{where}[{i}]", {})
            elements.append(element)
            changes += more
        return elements, changes
    return value, []


def aux_variants(aux: Any) -> st.SearchStrategy[Variant]:
    """Hypothesis strategy: auxiliary inputs shaped like ``aux`` (see the module docstring)."""

    @st.composite
    def variants(draw: st.DrawFn) -> Variant:
        value, changes = _vary(draw, aux, "aux", {})
        return Variant(value, tuple(changes))

    return variants()
