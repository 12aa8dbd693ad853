"""Fixtures of the world-model tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (restored after): small updates run ~10× slower on two threads
    of a loaded 2-core machine, and one thread fixes the kernels' reduction order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
