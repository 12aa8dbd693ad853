"""The drop-in matrix (``benchmarks/optimizer_matrix.py``), quick subset, run in this process.

Checks that the matrix is produced and well formed (every cell PASS, FAIL or N/A with its reason;
exceptions with their type and message line; torch version and commit stated; no machine paths), and
that every cell is PASS or N/A except those listed in ``KNOWN_FAILURES``.  Each known failure is a
strict xfail: once the gate is fixed the cell passes, the test fails, and its entry must be deleted.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "optimizer_matrix.py"

_DENSE = ("Adam: default", "Adam: default & foreach", "Adam: default & fused", "SGD: default")
_LBFGS = ("LBFGS: default",)
_SPARSE = ("SparseAdam: default",)
_STATE_DICT_HOOKS = (
    "state_dict_pre_hook",
    "state_dict_post_hook",
    "load_state_dict_pre_hook",
    "load_state_dict_post_hook",
)
_ALL_BUT_CLIPPING = (
    "steps",
    "closure",
    "grad_scaler",
    "load_plain_into_gated",
    "load_gated_into_plain",
    "save_load",
    "deepcopy",
    "pickle",
    "step_pre_hook",
    "step_post_hook",
    *_STATE_DICT_HOOKS,
    "global_step_hooks",
    "zero_grad_false",
    "zero_grad_true",
    "add_param_group",
    "lr_edit",
    "state_access",
    "repr",
)

# Cells of the quick matrix that fail today: (rows, features, root cause).  Delete an entry (or
# narrow it) when the fix lands; a listed cell that passes makes its test fail (strict xfail).
KNOWN_FAILURES: list[tuple[tuple[str, ...], tuple[str, ...], str]] = [
    (
        _DENSE + _LBFGS,
        _STATE_DICT_HOOKS,
        "state-dict hooks registered on the wrapper never fire: GatedOptimizer.state_dict / "
        "load_state_dict delegate to the wrapped optimizer, whose hook dicts are empty",
    ),
    (
        _DENSE + _LBFGS,
        ("global_step_hooks",),
        "global optimizer step hooks fire twice per step: for the wrapper and for the wrapped optimizer",
    ),
    (
        _DENSE,
        ("deepcopy", "pickle"),
        "GatedOptimizer.__getstate__ refuses copying and pickling",
    ),
    (
        _DENSE,
        ("grad_scaler_clip", "grad_scaler"),
        "bare AssertionError in tagged._dispatch_write: _amp_foreach_non_finite_check_and_unscale_ writes a "
        "tensor list but is not named _foreach_*",
    ),
    (
        ("Adam: default & fused",),
        ("closure",),
        "bare AssertionError in tagged._dispatch_write: _fused_adam_ on tagged gradients (list writes)",
    ),
    (
        _LBFGS,
        ("save_load",),
        "LBFGS state holds TaggedTensors; torch.load(weights_only=True) refuses their rebuild function",
    ),
    (
        _SPARSE,
        _ALL_BUT_CLIPPING,
        "sparse gradients: the label store asks a sparse tensor for its storage (NotImplementedError)",
    ),
]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("optimizer_matrix", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


om = _load_script()
MAIN_KEYS = [f.key for f in om.FEATURES]
SCHEDULER_KEYS = [f.key for f in om.scheduler_features()]
CELLS = [(row, key) for row in om.QUICK_ROWS for key in MAIN_KEYS] + [
    (row, key) for row in om.QUICK_SCHEDULER_ROWS for key in SCHEDULER_KEYS
]


def _known(row: str, key: str) -> str | None:
    for rows, features, reason in KNOWN_FAILURES:
        if row in rows and key in features:
            return reason
    return None


def _cell_params() -> list[Any]:
    params = []
    for row, key in CELLS:
        reason = _known(row, key)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(row, key, marks=marks, id=f"{row}-{key}"))
    return params


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    matrix = om.build_matrix(quick=True)
    md_path, json_path = om.write(matrix, tmp_path_factory.mktemp("matrix"))
    return json.loads(json_path.read_text(encoding="utf-8")), md_path.read_text(encoding="utf-8")


def _cell(data: dict[str, Any], row: str, key: str) -> dict[str, Any]:
    table = "rows" if key in MAIN_KEYS else "scheduler_rows"
    (found,) = [r for r in data[table] if r["name"] == row]
    cell: dict[str, Any] = found["cells"][key]
    return cell


def test_matrix_is_produced_and_well_formed(produced: tuple[dict[str, Any], str]) -> None:
    data, markdown = produced
    assert data["torch"] == torch.__version__
    assert re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", data["commit"])
    assert [r["name"] for r in data["rows"]] == list(om.QUICK_ROWS)
    assert [r["name"] for r in data["scheduler_rows"]] == list(om.QUICK_SCHEDULER_ROWS)
    tallies = {"PASS": 0, "FAIL": 0, "N/A": 0}
    for table, keys in (("rows", MAIN_KEYS), ("scheduler_rows", SCHEDULER_KEYS)):
        for row in data[table]:
            assert list(row["cells"]) == keys
            for cell in row["cells"].values():
                assert cell["status"] in tallies
                tallies[cell["status"]] += 1
                if cell["status"] != "PASS":
                    assert cell["reason"]
                if "error_type" in cell:
                    assert isinstance(cell["error_message"], str)
    main, schedulers = data["counts"]["main"], data["counts"]["schedulers"]
    assert main["PASS"] + main["FAIL"] + main["N/A"] == len(om.QUICK_ROWS) * len(MAIN_KEYS)
    assert schedulers["PASS"] + schedulers["FAIL"] + schedulers["N/A"] == (
        len(om.QUICK_SCHEDULER_ROWS) * len(SCHEDULER_KEYS)
    )
    assert tallies == {k: main[k] + schedulers[k] for k in tallies}

    assert f"torch **{torch.__version__}**" in markdown
    assert f"commit **{data['commit']}**" in markdown
    for name in om.QUICK_ROWS:
        assert f"| {name} |" in markdown
    for text in (markdown, json.dumps(data)):
        for machine_path in (str(ROOT), str(Path.home()), "site-packages", sys.prefix):
            assert machine_path not in text


def test_known_failures_name_cells_of_the_quick_matrix() -> None:
    for rows, features, _ in KNOWN_FAILURES:
        for row in rows:
            for key in features:
                assert (row, key) in CELLS, f"stale KNOWN_FAILURES entry: {row!r} × {key!r}"


@pytest.mark.parametrize(("row", "key"), _cell_params())
def test_cell(produced: tuple[dict[str, Any], str], row: str, key: str) -> None:
    cell = _cell(produced[0], row, key)
    assert cell["status"] != "FAIL", f"{row} × {key}: {cell['reason']} (raised at {cell.get('raised_at')})"
