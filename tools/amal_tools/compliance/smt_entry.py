"""Run one SMT check in its own process.

Usage: ``python -m amal_tools.compliance.smt_entry FILE:FUNCTION --out JSON``.

The function (zero arguments, defined in a ``proofs/`` file) returns an
:class:`~amal_tools.compliance.obligation.SmtOutcome`; this entry point writes it as
JSON.  Exit code 0 when the outcome was written (whatever its status), 2 when the
target is unusable.  The report runs SMT checks this way so the exact command it
records is the command an auditor reruns.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from amal_tools.compliance.discovery import DiscoveryError, load_proof_module
from amal_tools.compliance.obligation import SmtOutcome


def run_target(target: str) -> SmtOutcome:
    """Load ``path.py:function`` and call it; ``DiscoveryError`` if it is not an SMT check function."""
    file, sep, function = target.rpartition(":")
    if not sep or not file or not function:
        raise DiscoveryError(f"SMT target must be 'path.py:function', got {target!r}")
    module = load_proof_module(Path(file))
    fn = getattr(module, function, None)
    if not callable(fn):
        raise DiscoveryError(f"{file} has no function {function!r}")
    outcome = fn()
    if not isinstance(outcome, SmtOutcome):
        raise DiscoveryError(f"{target} returned {type(outcome).__name__}, expected SmtOutcome")
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m amal_tools.compliance.smt_entry")
    parser.add_argument("target", help="proofs/<file>.py:<function>")
    parser.add_argument("--out", type=Path, required=True, help="where to write the outcome as JSON")
    args = parser.parse_args(argv)
    try:
        outcome = run_target(args.target)
    except DiscoveryError as exc:
        print(f"smt_entry: error: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(asdict(outcome), sort_keys=True, indent=1), encoding="utf-8")
    print(f"{args.target}: {outcome.status}")
    if outcome.model:
        print(outcome.model)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
