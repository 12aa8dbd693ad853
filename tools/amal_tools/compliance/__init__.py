"""The compliance report: proof obligations (``proofs/``), their checks, and the report built from them.

Modules, one job each: :mod:`.obligation` (what an obligation is and how verdicts are named),
:mod:`.discovery` (loading ``proofs/*.py``), :mod:`.execution` (running one check in its own
process), :mod:`.smt_entry` (the process an SMT check runs in), :mod:`.coq` and
:mod:`.coq_entry` (checking a theorem of ``proofs/coq/`` with ``coqc``; its process),
:mod:`.provenance` (commit, tool versions, digests), :mod:`.schema` (``report.json``'s JSON
Schema), :mod:`.plots`, :mod:`.render` (Markdown/HTML), :mod:`.statement` (in-toto) and
:mod:`.runner` (putting it together).
Importing this package imports only the obligation model, so ``proofs/`` files load fast.
"""

from amal_tools.compliance.obligation import Check, Kind, Method, Obligation, SmtOutcome, Verdict

__all__ = ["Check", "Kind", "Method", "Obligation", "SmtOutcome", "Verdict"]
