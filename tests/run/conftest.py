"""The run tests import their shared helpers (``_tiny_runs``) by name; pytest's importlib mode does
not put a test's folder on sys.path."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
