"""The label lattice: which data sources a value depends on.

A :class:`Label` is a finite set of :class:`Source` s.  Labels form a join
semi-lattice under set union, with the empty label (no tagged data) as bottom.
A value computed from inputs labelled ``l1, ..., ln`` is labelled
``l1 | ... | ln``; the gate refuses any protected update whose label contains
an auxiliary source.

This module is pure Python (no torch import) so that it is cheap to import and
can be reasoned about by CrossHair; ``amal_verified.isolation.reference`` holds the
independent executable specification the torch implementation is tested
against.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Final, final

__all__ = ["EMPTY", "Label", "Source", "SourceKind"]


class SourceKind(enum.Enum):
    """Where a datum comes from: the real (primary) stream or an auxiliary agent."""

    PRIMARY = "primary"
    AUX = "aux"


_AUX: Final = SourceKind.AUX  # a global lookup; reading an Enum member off its class runs Python code


@final
@dataclass(frozen=True, slots=True)
class Source:
    """One named data source, e.g. ``Source(SourceKind.AUX, "aux-3")``.

    Two sources are the same source only when both kind and name agree: a
    primary source named ``"x"`` and an auxiliary source named ``"x"`` differ.
    """

    kind: SourceKind
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.kind, SourceKind):
            raise TypeError(f"Source.kind must be a SourceKind, got {self.kind!r}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Source.name must be a non-empty string, got {self.name!r}")

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.name}"

    def __lt__(self, other: Source) -> bool:
        return (self.kind.value, self.name) < (other.kind.value, other.name)


@final
class Label:
    """An immutable set of sources, interned so that equal labels are identical.

    Interning keeps the hot path cheap: joining a label with itself (by far the
    most common case while tracking) is an identity test, and joins of the same
    two labels are memoised.
    """

    __slots__ = ("__weakref__", "_aux", "_hash", "sources")

    sources: frozenset[Source]
    _hash: int
    _aux: frozenset[Source]

    _interned: ClassVar[dict[frozenset[Source], Label]] = {}
    _joins: ClassVar[dict[tuple[int, int], Label]] = {}

    def __new__(cls, sources: Iterable[Source] = ()) -> Label:
        key = frozenset(sources)
        found = cls._interned.get(key)
        if found is not None:
            return found
        for source in key:
            if not isinstance(source, Source):
                raise TypeError(f"a Label holds Source objects, got {source!r}")
        label = object.__new__(cls)
        object.__setattr__(label, "sources", key)
        object.__setattr__(label, "_hash", hash(key))
        object.__setattr__(label, "_aux", frozenset(s for s in key if s.kind is SourceKind.AUX))
        cls._interned[key] = label
        return label

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Label is immutable")

    def __reduce__(self) -> tuple[type[Label], tuple[tuple[Source, ...]]]:
        return (Label, (tuple(sorted(self.sources)),))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        # Interned: equal labels are the same object.
        return self is other

    def __or__(self, other: Label) -> Label:
        return self.join(other)

    def join(self, other: Label) -> Label:
        """The least upper bound: every source of either label."""
        if other is self or not other.sources:
            return self
        if not self.sources:
            return other
        key = (id(self), id(other))
        found = Label._joins.get(key)
        if found is None:
            found = Label(self.sources | other.sources)
            Label._joins[key] = found
        return found

    def flows_to(self, other: Label) -> bool:
        """The lattice order: ``self`` may flow into a value labelled ``other``."""
        return self.sources <= other.sources

    @property
    def is_empty(self) -> bool:
        return not self.sources

    @property
    def aux_sources(self) -> frozenset[Source]:
        return self._aux

    @property
    def primary_sources(self) -> frozenset[Source]:
        return frozenset(s for s in self.sources if s.kind is SourceKind.PRIMARY)

    @property
    def has_aux(self) -> bool:
        return bool(self._aux)

    @property
    def is_primary_only(self) -> bool:
        """Non-empty and derived from primary sources alone."""
        return bool(self.sources) and not self._aux

    def __iter__(self) -> Iterator[Source]:
        return iter(sorted(self.sources))

    def __len__(self) -> int:
        return len(self.sources)

    def __repr__(self) -> str:
        if not self.sources:
            return "Label()"
        return "Label(" + ", ".join(str(s) for s in sorted(self.sources)) + ")"

    @staticmethod
    def of(kind: SourceKind, name: str) -> Label:
        singletons = _aux_singletons if kind is _AUX else _primary_singletons
        found = singletons.get(name)
        if found is None:
            found = Label((Source(kind, name),))
            singletons[name] = found
        return found

    @staticmethod
    def join_all(labels: Iterable[Label]) -> Label:
        result = EMPTY
        for label in labels:
            result = result.join(label)
        return result


EMPTY: Final[Label] = Label()
# Single-source labels by name, one table per kind (keyed by str: hashing an Enum runs Python code).
_primary_singletons: dict[str, Label] = {}
_aux_singletons: dict[str, Label] = {}
