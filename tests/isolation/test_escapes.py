"""Escapes of aux-labelled values never launder silently (issue point 4)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

import amal_verified as av


@pytest.fixture(autouse=True)
def _fresh_log() -> Iterator[None]:
    av.clear_escapes()
    previous = av.set_strict(False)
    yield
    av.set_strict(previous)
    av.clear_escapes()


def aux_vector() -> torch.Tensor:
    return av.aux(torch.tensor([0.5, -1.0, 2.0]), source="aux-7")


ESCAPES: dict[str, Callable[[torch.Tensor], Any]] = {
    "item": lambda t: t.sum().item(),
    "float": lambda t: float(t.sum()),
    "int": lambda t: int(t.sum()),
    "bool": lambda t: bool(t.sum() > 0),
    "tolist": lambda t: t.tolist(),
    "numpy": lambda t: t.numpy(),
    "np.asarray": lambda t: np.asarray(t),
    "torch.from_dlpack": lambda t: torch.from_dlpack(t),
    "torch.tensor(t.tolist())": lambda t: torch.tensor(t.tolist()),
    "torch.equal": lambda t: torch.equal(t, t),
    "format": lambda t: f"{t.sum():.2f}",
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_each_escape_is_recorded_with_sources_and_call_site_and_warned(name: str) -> None:
    t = aux_vector()
    with pytest.warns(av.IsolationWarning, match="aux:aux-7"):
        ESCAPES[name](t)
    records = av.escapes()
    assert records, "escape was not recorded"
    assert all([str(s) for s in r.sources] == ["aux:aux-7"] for r in records)
    assert all("test_escapes.py" in r.site for r in records)
    assert all(r.declassified is None for r in records)


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_strict_mode_refuses_escapes_outside_declassify(name: str) -> None:
    t = aux_vector()
    av.set_strict(True)
    with pytest.raises(av.IsolationViolation, match="declassify"):
        ESCAPES[name](t)


def test_declassify_allows_and_records_with_reason() -> None:
    t = aux_vector()
    av.set_strict(True)
    with av.declassify(reason="log the auxiliary return for the dashboard"):
        value = t.sum().item()
    assert value == pytest.approx(1.5)
    (record,) = av.escapes()
    assert record.declassified == "log the auxiliary return for the dashboard"
    (entry,) = av.declassifications()
    assert "test_escapes.py" in entry.site


def test_declassify_needs_a_reason() -> None:
    with pytest.raises(ValueError, match="reason"), av.declassify(reason="  "):
        pass


def test_declassify_never_disables_the_gate() -> None:
    lin = torch.nn.Linear(3, 1)
    opt = av.GatedOptimizer(torch.optim.SGD(lin.parameters(), lr=0.1))
    lin(aux_vector()).sum().backward()
    with av.declassify(reason="trying to sneak past"), pytest.raises(av.IsolationViolation):
        opt.step()


def test_primary_escapes_are_not_flagged() -> None:
    p = av.primary(torch.tensor([1.0, 2.0]))
    assert p.sum().item() == 3.0
    assert p.tolist() == [1.0, 2.0]
    assert av.escapes() == []


def test_repeated_escape_counts_without_rewarning() -> None:
    t = aux_vector()
    with pytest.warns(av.IsolationWarning):
        for _ in range(3):
            t.sum().item()
    (record,) = av.escapes()
    assert record.count == 3


@pytest.mark.slow
def test_strict_mode_from_environment_variable() -> None:
    import subprocess
    import sys

    code = (
        "import torch, amal_verified as av\n"
        "t = av.aux(torch.ones(2), source='aux-1')\n"
        "try:\n    t.sum().item()\nexcept av.IsolationViolation:\n    print('refused')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**__import__("os").environ, "AMAL_STRICT": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "refused"
