"""The program vectors Coq computes (``proofs/coq/Programs.v``), through extraction to OCaml.

Compiling ``Programs.v`` extracts ``program_lines`` (generated programs of the language of
``Isolation.v`` and what its semantics computes for them) to ``programs.ml``;
``programs_main.ml`` prints those lines.  :func:`program_lines` compiles the development up to
``Programs.v`` in a scratch directory, compiles the extracted code with ``ocamlfind ocamlopt``,
runs it and returns the lines.  ``python -m amal_tools.compliance.coq_programs proofs/coq`` prints
them one a line (``make coq-vectors`` stores that as ``proofs/coq/programs.txt``, which the tests
check ``reference.py`` against).  Nothing of the scratch directory's path reaches the output.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from amal_tools.compliance.coq import CoqError, compile_development

__all__ = ["DRIVER", "OCAML_INSTALL", "SOURCE", "build_and_run", "program_lines"]

SOURCE: Final = "Programs.v"
DRIVER: Final = "programs_main.ml"
OCAML_INSTALL: Final = "apt-get install -y ocaml-nox ocaml-findlib  (installed with Debian's coq)"


def build_and_run(coq_dir: Path, build: Path) -> list[str]:
    """Compile ``programs.ml`` (extracted into ``build`` by compiling ``Programs.v`` there) with the
    driver of ``coq_dir``, run it, and return its lines; :class:`CoqError` if a step fails."""
    if shutil.which("ocamlfind") is None:
        raise CoqError(f"ocamlfind is not installed: {OCAML_INSTALL}")
    shutil.copy2(coq_dir / DRIVER, build / DRIVER)
    compiled = subprocess.run(
        ["ocamlfind", "ocamlopt", "-o", "programs", "programs.mli", "programs.ml", DRIVER],
        cwd=build,
        capture_output=True,
        text=True,
        check=False,
    )
    if compiled.returncode != 0:
        raise CoqError(f"ocamlfind ocamlopt failed:\n{compiled.stdout}{compiled.stderr}")
    ran = subprocess.run([str(build / "programs")], cwd=build, capture_output=True, text=True, check=False)
    if ran.returncode != 0:
        raise CoqError(f"the extracted program failed:\n{ran.stderr}")
    return ran.stdout.splitlines()


def program_lines(coq_dir: Path, build: Path) -> list[str]:
    """Compile the development up to ``Programs.v`` into ``build``, then :func:`build_and_run`."""
    compile_development(coq_dir, build, upto=SOURCE)
    return build_and_run(coq_dir, build)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m amal_tools.compliance.coq_programs COQ_DIR", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="amal-coq-programs-") as scratch:
        try:
            lines = program_lines(Path(args[0]).resolve(), Path(scratch))
        except CoqError as exc:
            print(exc, file=sys.stderr)
            return 1
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
