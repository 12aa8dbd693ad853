"""What an audit found: :class:`AuditResult`, and the exceptions that carry it."""

from __future__ import annotations

from dataclasses import dataclass

from amal_verified.audit.comparison import Difference, format_differences
from amal_verified.audit.targets import TargetError
from amal_verified.audit.variants import Variant

__all__ = ["AuditResult", "Interference", "NondeterministicTarget"]


@dataclass(frozen=True)
class AuditResult:
    """The outcome of :func:`~amal_verified.audit.check_noninterference`.

    ``ok`` is true when every auxiliary variant tried left the world model bit-for-bit unchanged and
    let training finish.  Otherwise ``variant`` is the (shrunk) auxiliary input that showed
    interference (``None`` when the example inputs themselves were refused by the gate),
    ``differences`` says which world-model entries differ and by how much, and ``raised`` names the
    exception if training raised instead.  ``examples`` counts the variants run (each a full
    training run, shrinking included) during ``search_seconds`` (generating, running, comparing);
    ``seconds`` is the whole audit, the two reference runs on the example inputs included.
    ``entries`` is the number of world-model state entries compared.
    """

    target: str
    ok: bool
    examples: int
    seconds: float
    entries: int
    search_seconds: float = 0.0
    variant: Variant | None = None
    differences: tuple[Difference, ...] = ()
    raised: str | None = None

    @property
    def examples_per_second(self) -> float:
        """Variants tried per second of the search (``0.0`` when none ran)."""
        return self.examples / self.search_seconds if self.search_seconds > 0 else 0.0

    @property
    def verdict(self) -> str:
        """One line: what was found."""
        if self.ok:
            return (
                f"PASSED: the world model of {self.target} is bit-for-bit independent of the auxiliary data "
                f"over {self.examples} variants"
            )
        if self.raised is not None and self.variant is None:
            return f"FAILED: {self.target} refused its own example inputs: {self.raised}"
        if self.raised is not None:
            return f"FAILED: auxiliary data stopped world-model training in {self.target}: {self.raised}"
        return f"FAILED: the world model of {self.target} depends on the auxiliary data"

    def __str__(self) -> str:
        lines = [self.verdict]
        if self.variant is not None:
            lines.append(f"  aux variant (shrunk): {'; '.join(self.variant.changes) or 'unchanged'}")
        if self.differences:
            lines.append(f"  world-model entries that differ ({len(self.differences)} of {self.entries}):")
            lines.append(format_differences(self.differences, indent="    "))
        lines.append(
            f"  {self.examples} variants, each a full training run, at {self.examples_per_second:.1f} "
            f"variants/s ({self.seconds:.2f} s in all)"
        )
        return "\n".join(lines)


class Interference(AssertionError):
    """Raised by :func:`~amal_verified.audit.assert_noninterference`: auxiliary data changed the
    world model or stopped its training.  ``result`` is the :class:`AuditResult`."""

    def __init__(self, result: AuditResult) -> None:
        super().__init__(str(result))
        self.result = result


class NondeterministicTarget(TargetError):
    """The target does not reproduce its own world model from identical inputs and generator states,
    so a difference could not be attributed to the auxiliary data: the audit is inconclusive."""
