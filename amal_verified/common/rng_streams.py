"""Named random streams derived from one run seed: every stream has exactly one owner.

A training run draws randomness for many independent purposes: the primary environment, the primary
agent's actions, each auxiliary agent and its environment, the CEM search, each world-model member,
the world-model batch sampler, and so on.  Sharing a generator between two of them would make one
consumer's draws depend on how much the other consumed — e.g. the world model's batches would depend
on the number of auxiliary agents, breaking Theorem 1 in practice although no auxiliary *data* reached
the world model.

:class:`RunStreams` derives each stream from ``(seed, name)`` alone::

    SeedSequence(entropy=seed, spawn_key=(crc32(name),))

so a stream's values depend on nothing but the run seed and its own name: adding, removing or
re-ordering other streams never changes it, and ``amal certify`` can rebuild the world-model
streams in a fresh process without knowing anything about auxiliary agents.  Distinct names give
statistically independent streams (numpy's ``SeedSequence`` guarantees, for distinct spawn keys);
two names with the same CRC-32 are refused when requested from the same ``RunStreams``.

Nothing here reads or advances the global ``torch``, ``numpy`` or ``random`` generators.
"""

from __future__ import annotations

import zlib
from typing import Final, final

import numpy as np
import torch

from amal_verified.common.runtime_checks import checked

__all__ = ["RunStreams"]

_SEED_LIMIT: Final = 2**63


@final
@checked
class RunStreams:
    """Factory of independent, named random streams for one run seed (see the module docstring).

    Each call returns a *new* generator positioned at the start of the named stream; the caller
    that asks for a name owns that stream.  Asking for the same name twice is refused
    (``ValueError``), so two owners cannot silently share a stream.
    """

    def __init__(self, seed: int) -> None:
        if not 0 <= seed < _SEED_LIMIT:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed}")
        self._seed: Final = seed
        self._claimed: dict[int, str] = {}

    @property
    def seed(self) -> int:
        """The run seed every stream derives from."""
        return self._seed

    @property
    def claimed(self) -> tuple[str, ...]:
        """Names of the streams handed out so far, in order."""
        return tuple(self._claimed.values())

    def _sequence(self, name: str) -> np.random.SeedSequence:
        if not name:
            raise ValueError("a stream needs a non-empty name")
        key = zlib.crc32(name.encode("utf-8"))
        owner = self._claimed.get(key)
        if owner is not None:
            what = "was already claimed" if owner == name else f"collides (CRC-32) with {owner!r}"
            raise ValueError(f"random stream {name!r} {what}: every stream has exactly one owner")
        self._claimed[key] = name
        return np.random.SeedSequence(entropy=self._seed, spawn_key=(key,))

    def int_seed(self, name: str) -> int:
        """A 63-bit integer seed for the named stream (for APIs that take a seed, e.g. buffers)."""
        return int(self._sequence(name).generate_state(1, np.uint64)[0] >> np.uint64(1))

    def torch_generator(self, name: str) -> torch.Generator:
        """A CPU ``torch.Generator`` seeded for the named stream."""
        return torch.Generator().manual_seed(self.int_seed(name))

    def numpy_generator(self, name: str) -> np.random.Generator:
        """A ``numpy.random.Generator`` (PCG64) for the named stream."""
        return np.random.Generator(np.random.PCG64(self._sequence(name)))
