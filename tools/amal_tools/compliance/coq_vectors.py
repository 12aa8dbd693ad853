"""The test vectors Coq computes for the label lattice and the gate (``proofs/coq/Vectors.v``).

Building ``Vectors.v`` writes ``vectors.out``: the output of ``Compute vectors``, a Coq list of
strings, one per case (the format is in ``Vectors.v``).  :func:`vector_lines` reads those strings
back; ``python -m amal_tools.compliance.coq_vectors proofs/coq/vectors.out`` prints them one a line
(``make coq-vectors`` stores that as ``proofs/coq/vectors.txt``, which the tests check
``reference.py`` against).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["vector_lines"]

_STRING = re.compile(r'"((?:[^"]|"")*)"')


def vector_lines(compute_output: str) -> list[str]:
    """The strings of a printed Coq ``list string``, in order (Coq writes a quote inside one as ``""``)."""
    return [m.group(1).replace('""', '"') for m in _STRING.finditer(compute_output)]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m amal_tools.compliance.coq_vectors VECTORS.out", file=sys.stderr)
        return 2
    for line in vector_lines(Path(args[0]).read_text(encoding="utf-8")):
        print(line)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
