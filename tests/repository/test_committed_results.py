"""Committed results, reports and records name no directory of the machine that produced them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where measurements and generated reports are committed.
RECORDED = ("benchmarks", "reports")
TEXT = {".md", ".json", ".jsonl", ".csv", ".txt", ".html"}
MACHINE_PATH = re.compile(r"(?<![\w.-])/(?:tmp|work|root|home|Users|var/folders)/[\w.-]")


def _recorded_files() -> list[Path]:
    files = []
    for top in RECORDED:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in TEXT:
                files.append(path)
    return files


def test_the_pattern_finds_machine_paths_and_nothing_else() -> None:
    assert MACHINE_PATH.search("--results /tmp/sitting.md")
    assert MACHINE_PATH.search('"run_dir": "/home/ci/runs/x"')
    assert not MACHINE_PATH.search("--out benchmarks/results/tmp/x")
    assert not MACHINE_PATH.search("'<outside the repository>/sitting.md'")
    assert not MACHINE_PATH.search("1.2 GB/s over /dev/shm")


def test_no_committed_result_names_a_machine_directory() -> None:
    offenders = {}
    for path in _recorded_files():
        found = MACHINE_PATH.findall(path.read_text(encoding="utf-8", errors="replace"))
        if found:
            offenders[str(path.relative_to(ROOT))] = found[:3]
    assert not offenders, (
        f"committed results name directories of the machine that produced them: {offenders}; record "
        f"paths relative to the repository, or as <outside the repository>/NAME"
    )
