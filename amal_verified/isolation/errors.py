"""The exceptions and warnings amal_verified raises.

Every refusal is an :class:`IsolationViolation`; every malformed input is a
:class:`TaggingError` (a ``ValueError``) or a ``TypeError`` naming the problem.
"""

from __future__ import annotations

from collections.abc import Sequence

from amal_verified.isolation.labels import Source

__all__ = ["IsolationViolation", "IsolationWarning", "TaggingError", "TrackingError"]


class IsolationViolation(Exception):
    """An auxiliary-derived value was about to reach a protected value.

    Raised before anything protected changes.  Attributes say what was refused:

    - ``parameters``: names of the protected parameters concerned;
    - ``sources``: the auxiliary sources whose data would have reached them;
    - ``operation``: where known, the operation (and call site) that mixed
      auxiliary data into the value, else ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        parameters: Sequence[str] = (),
        sources: Sequence[Source] = (),
        operation: str | None = None,
    ) -> None:
        super().__init__(message)
        self.parameters: tuple[str, ...] = tuple(parameters)
        self.sources: tuple[Source, ...] = tuple(sources)
        self.operation: str | None = operation


class IsolationWarning(UserWarning):
    """An auxiliary-labelled value left the tracked world (``.item()``, ``.tolist()``, ...)."""


class TaggingError(ValueError):
    """Data was tagged, stored or combined in a way that would misstate its provenance."""


class TrackingError(RuntimeError):
    """An operation the tracking cannot follow soundly; raised before anything changed."""
