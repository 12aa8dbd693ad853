"""The README's main job and the adoption example run end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300, check=False)


@pytest.mark.slow
def test_demo_scenarios_all_behave_as_expected() -> None:
    out = run("-m", "amal_verified.cli", "demo")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "7/7 scenarios behaved as expected" in out.stdout
    assert out.stdout.count("expected refused, refused") == 4


@pytest.mark.slow
def test_gated_example_trains_and_refuses_the_leak_variant() -> None:
    clean = run("examples/gated_world_model.py", "--steps", "500")
    assert clean.returncode == 0, clean.stderr
    assert "world-model loss" in clean.stdout
    leak = run("examples/gated_world_model.py", "--steps", "500", "--leak")
    assert leak.returncode != 0
    assert "IsolationViolation" in leak.stderr
    assert "aux:aux-0" in leak.stderr
