"""The leak gallery (``examples/leaks/``): each leak is caught first by its designated layer, the leak-free
controls pass all three layers, and the README's table is the freshly measured matrix."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
GALLERY = REPO / "examples" / "leaks"
sys.path.insert(0, str(GALLERY))

import _layers  # noqa: E402  (the gallery's harness, importable once its directory is on sys.path)

table = _layers.load(GALLERY / "table.py")
SCRIPTS = _layers.gallery_paths()
CONTROLS = [GALLERY / "00_control.py", GALLERY / "25_control_sliced_rows.py"]
LEAKS = [p for p in SCRIPTS if p not in CONTROLS]


@pytest.fixture(scope="module")
def rows() -> list[_layers.Row]:
    """The measured matrix: one mypy run over every script, one strict run and one audit per script."""
    return _layers.measure()


def _module(path: Path) -> ModuleType:
    return _layers.load(path)


def test_gallery_holds_two_controls_and_twenty_nine_leak_classes() -> None:
    assert [p.name[:2] for p in SCRIPTS] == [f"{n:02d}" for n in range(31)]
    assert len(LEAKS) == 29 and all(path.is_file() for path in CONTROLS)
    for path in SCRIPTS:
        module = _module(path)
        for name in ("LEAK", "amal_example_inputs", "run", "train", "train_untagged", "main"):
            assert hasattr(module, name), f"{path.name} lacks {name}"
        is_control = path in CONTROLS
        assert (module.LEAK.layer is None) == is_control
        assert module.LEAK.title.startswith("control:") == is_control, module.LEAK.title
        marked = path.read_text(encoding="utf-8").count("# leak:")
        assert marked == (0 if is_control else 1), f"{path.name}: {marked} lines marked '# leak:'"


def test_each_leak_is_caught_first_by_its_designated_layer(rows: list[_layers.Row]) -> None:
    for row in rows:
        if row.path in CONTROLS:
            continue
        assert row.designated is not None
        verdicts = {c.layer: c.caught for c in row.catches}
        assert row.cheapest == row.designated, f"{row.path.name}: measured {verdicts}"
        assert row.catches[-1].caught, f"{row.path.name}: the differential audit missed it"


def test_controls_pass_all_three_layers(rows: list[_layers.Row]) -> None:
    controls = [row for row in rows if row.path in CONTROLS]
    assert [row.path for row in controls] == CONTROLS
    for control in controls:
        assert control.designated is None
        assert [c.caught for c in control.catches] == [False, False, False], control.catches
        assert "PASSED" in control.catches[2].message and "over 25 variants" in control.catches[2].message


def test_dynamic_catches_name_the_auxiliary_sources(rows: list[_layers.Row]) -> None:
    for row in rows:
        dynamic = row.catches[1]
        if dynamic.caught:
            assert dynamic.message.startswith("IsolationViolation: ")
            assert "aux:aux-" in dynamic.message, dynamic.message


def test_static_errors_are_on_the_marked_leak_lines_only(rows: list[_layers.Row]) -> None:
    for row in rows:
        static = row.catches[0]
        if not static.caught:
            continue
        lines = row.path.read_text(encoding="utf-8").splitlines()
        for error in static.message.splitlines():
            match = re.match(rf"examples/leaks/{re.escape(row.path.name)}:(\d+): error: ", error)
            assert match, error
            assert "# leak:" in lines[int(match.group(1)) - 1], f"mypy error off the leak line: {error}"


def test_readme_table_is_the_measured_matrix(rows: list[_layers.Row]) -> None:
    written = table.readme_table(table.README.read_text(encoding="utf-8"))
    assert written == table.render(rows), "stale table: run python examples/leaks/table.py --write"


@pytest.mark.parametrize("path", LEAKS, ids=[p.stem for p in LEAKS])
def test_main_demonstrates_the_designated_layer(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = _module(path)
    assert module.main([]) == 0
    out = capsys.readouterr().out
    assert f"The {module.LEAK.layer} layer catches the leak. What you see:" in out


@pytest.mark.parametrize("path", CONTROLS, ids=[p.stem for p in CONTROLS])
def test_control_main_runs_every_layer_and_reports_nothing(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _module(path).main([]) == 0
    out = capsys.readouterr().out
    assert [f"The {layer} layer reports nothing." in out for layer in _layers.LAYERS] == [True] * 3, out


def test_main_exits_1_when_the_chosen_layer_misses_the_leak(capsys: pytest.CaptureFixture[str]) -> None:
    module = _module(GALLERY / "10_global_rng.py")
    assert module.main(["--layer", "dynamic"]) == 1
    assert "The dynamic layer does NOT catch this leak." in capsys.readouterr().out


def test_main_rejects_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    module = _module(GALLERY / "03_shared_encoder.py")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--layer", "runtime"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'runtime'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_script_runs_from_the_repository_root() -> None:
    done = subprocess.run(
        [sys.executable, "examples/leaks/03_shared_encoder.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "IsolationViolation: refused Adam.step() on parameters protected by GatedOptimizer" in done.stdout
