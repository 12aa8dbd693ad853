"""The run tests import their shared helpers (``_tiny_runs``) by name; pytest's importlib mode does
not put a test's folder on sys.path."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tiny_runs import amal


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A signing key pair made by ``amal keygen``: (private key, public key)."""
    pytest.importorskip("cryptography")
    key = tmp_path_factory.mktemp("keys") / "signing-key"
    done = amal("keygen", "--out", str(key))
    assert done.returncode == 0, done.stderr
    return key, key.with_name(key.name + ".pub")
