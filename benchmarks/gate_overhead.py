"""Overhead of the isolation gate on one training step of the paper's world model.

A thin wrapper: the harness lives in :mod:`amal_tools.bench.gate_overhead` (its docstring
states what is measured and how; ``amal bench`` uses it too).  Same command line and output as
before: ``--quick``, ``--check``, ``--profile``, ``--pairs``, ``--steps``, ``--warmup``,
``--json``.  Exit status: 0, or 1 with ``--check`` if the ratio exceeds 1.10 or parameters
differ, 2 if a worker fails.
"""

from __future__ import annotations

import sys

from amal_tools.bench.gate_overhead import main

if __name__ == "__main__":
    sys.exit(main())
