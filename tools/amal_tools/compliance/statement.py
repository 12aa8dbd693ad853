"""An in-toto Statement (v1) with a test-result predicate, carrying the digest of ``report.json``.

The statement is unsigned: sign it with the tooling your organisation uses for in-toto
attestations (e.g. wrap it in a DSSE envelope with ``cosign attest-blob``); its subject digest
binds the signature to the exact bytes of ``report.json``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["PREDICATE_TYPE", "STATEMENT_TYPE", "build_statement"]

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://in-toto.io/attestation/test-result/v0.1"
_PASSING: Final = {
    "proved",
    "proved (Coq)",
    "tested",
    "paper claim refuted",
    "paper claim refuted (statistical)",
}


def build_statement(report_bytes: bytes, report: Mapping[str, Any]) -> dict[str, Any]:
    """The statement for the report whose canonical bytes are ``report_bytes``.

    ``result`` is FAILED if any obligation is violated, WARNED if some were not checked (quick
    report), PASSED otherwise.  ``passedTests`` lists obligations proved, tested, or whose paper
    claim was refuted as expected, each with its verdict, so "tested" is never read as "proved".
    """
    obligations = report["obligations"]
    passed = [f"{o['id']}: {o['verdict']}" for o in obligations if o["verdict"] in _PASSING]
    failed = [f"{o['id']}: {o['verdict']}" for o in obligations if o["verdict"] == "violated"]
    warned = [f"{o['id']}: {o['verdict']}" for o in obligations if o["verdict"] == "not checked"]
    result = "FAILED" if failed else "WARNED" if warned else "PASSED"
    configuration: list[dict[str, Any]] = [{"name": "amal report", "uri": f"cmd:{report['command']}"}]
    commit = report["git"]["commit"]
    if commit:
        configuration.append({"name": "source", "digest": {"gitCommit": commit}})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": "report.json", "digest": {"sha256": hashlib.sha256(report_bytes).hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "result": result,
            "configuration": configuration,
            "passedTests": passed,
            "warnedTests": warned,
            "failedTests": failed,
        },
    }
