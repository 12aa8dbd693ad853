"""Run one Coq check in its own process.

Usage: ``python -m amal_tools.compliance.coq_entry proofs/coq/FILE.v:THEOREM --out JSON
[--accept-axiom NAME ...]``.

Compiles the development and queries the theorem (:mod:`amal_tools.compliance.coq`), prints the
theorem's statement and its ``Print Assumptions`` output, and writes the
:class:`~amal_tools.compliance.coq.CoqOutcome` as JSON.  Exit code 0 when the outcome was written
(whatever its status), 2 when the target is malformed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from amal_tools.compliance.coq import check_theorem


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m amal_tools.compliance.coq_entry")
    parser.add_argument("target", help="proofs/coq/<File>.v:<theorem>")
    parser.add_argument("--out", type=Path, required=True, help="where to write the outcome as JSON")
    parser.add_argument(
        "--accept-axiom",
        action="append",
        default=[],
        metavar="NAME",
        help="an axiom Print Assumptions may name (repeatable); any other makes the check fail",
    )
    args = parser.parse_args(argv)
    try:
        outcome = check_theorem(Path.cwd(), args.target, args.accept_axiom)
    except ValueError as exc:
        print(f"coq_entry: error: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(asdict(outcome), sort_keys=True, indent=1), encoding="utf-8")
    print(f"{args.target}: {outcome.status} ({outcome.detail})")
    if outcome.statement:
        print(outcome.statement)
        print(outcome.assumptions)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
