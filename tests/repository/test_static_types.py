"""PrimaryData and AuxData are distinct nominal types, for mypy and for beartype (issue point 5)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from beartype import beartype
from beartype.roar import BeartypeCallHintParamViolation

import amal_verified as av

REPO = Path(__file__).resolve().parents[2]

SNIPPET = textwrap.dedent(
    """
    import torch
    import amal_verified as av

    def world_model_update(batch: av.PrimaryData) -> None:
        ...

    def collect(x: torch.Tensor) -> None:
        p = av.primary(x, source="real-env")
        a = av.aux(x, source="aux-1")
        world_model_update(p)
        world_model_update(a)  # line 12: must be rejected
    """
)


def test_mypy_strict_rejects_aux_data_where_primary_is_required(tmp_path: Path) -> None:
    from mypy import api

    snippet = tmp_path / "leak.py"
    snippet.write_text(SNIPPET)
    stdout, stderr, status = api.run(
        [str(snippet), "--strict", "--cache-dir", str(REPO / ".mypy_cache"), "--no-error-summary"]
    )
    assert status == 1, stdout + stderr
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, stdout
    assert "leak.py:12:" in errors[0]
    assert '"AuxData"' in errors[0] and '"PrimaryData"' in errors[0]


def test_beartype_rejects_aux_data_at_run_time() -> None:
    @beartype
    def world_model_update(batch: av.PrimaryData) -> float:
        return 0.0

    x = torch.randn(3)
    world_model_update(av.primary(x.clone(), source="real-env"))
    with pytest.raises(BeartypeCallHintParamViolation):
        world_model_update(av.aux(x.clone(), source="aux-1"))
    with pytest.raises(BeartypeCallHintParamViolation):
        world_model_update(x)  # untagged data is not primary data either


def test_beartype_rejects_primary_data_tainted_after_tagging() -> None:
    @beartype
    def world_model_update(batch: av.PrimaryData) -> float:
        return 0.0

    p = av.primary(torch.zeros(4), source="real-env")
    world_model_update(p)
    p[0:2] = av.aux(torch.ones(2), source="aux-1")  # aux rows written into primary memory
    with pytest.raises(BeartypeCallHintParamViolation):
        world_model_update(p)


def test_public_constructors_are_beartype_checked() -> None:
    with pytest.raises(TypeError, match="x"):
        av.primary([1.0, 2.0], source="real-env")  # type: ignore[arg-type]
    with pytest.raises(av.TaggingError, match="non-empty"):
        av.aux(torch.zeros(1), source="")


def test_primary_refuses_memory_already_holding_aux_data() -> None:
    x = torch.zeros(3)
    before = x.clone()  # memory of its own, copied before x was tagged
    av.aux(x, source="aux-1")
    with pytest.raises(av.TaggingError, match="declassify"):
        av.primary(x, source="real-env")
    assert isinstance(x.clone(), av.AuxData)  # aux() tracked x itself: copies of it are auxiliary data
    assert isinstance(av.primary(before, source="real-env"), av.PrimaryData)


def test_import_is_cheap_and_installs_nothing() -> None:
    import subprocess
    import sys

    code = (
        "import sys, amal_verified\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "import torch\n"
        "from torch.nn.modules import module\n"
        "assert not module._global_forward_pre_hooks, 'hooks installed at import'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr
