"""Modules keep their old import paths (with a DeprecationWarning) and old pickles still load."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
import warnings

import pytest
import torch

import amal_verified as av
from amal_verified._old_paths import MOVED, MOVED_PACKAGES


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_path_is_the_module_at_its_new_place(old: str, new: str) -> None:
    module = importlib.import_module(new)
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        aliased = importlib.import_module(old)
    assert aliased is module


@pytest.mark.slow
def test_old_paths_work_in_a_fresh_interpreter() -> None:
    script = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n"
        "    from amal_verified.gate import GatedOptimizer\n"
        "except DeprecationWarning as w:\n"
        "    print('warned:', w)\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "from amal_verified.gate import GatedOptimizer\n"
        "from amal_verified.trainer import Trainer\n"
        "import amal_verified as av\n"
        "print(GatedOptimizer is av.GatedOptimizer, Trainer is av.Trainer)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "warned: amal_verified.gate moved to amal_verified.isolation.gate; import it from there "
        "(the old path will be removed)",
        "True True",
    ]


def test_the_old_world_model_module_names_are_forwarded() -> None:
    from amal_verified.world_model.ensemble import EnsembleWorldModel

    with pytest.warns(DeprecationWarning, match="world_model.ensemble"):
        from amal_verified.world_model import EnsembleWorldModel as old

    assert old is EnsembleWorldModel
    with pytest.raises(ImportError, match="NoSuchName"):
        from amal_verified.world_model import NoSuchName  # noqa: F401


def test_moved_tooling_packages_resolve_to_the_tools_distribution() -> None:
    assert MOVED_PACKAGES == {
        "amal_verified.bench": "amal_tools.bench",
        "amal_verified.compliance": "amal_tools.compliance",
    }
    sys.modules.pop("amal_verified.bench.stats", None)
    with pytest.warns(DeprecationWarning, match="amal_verified.bench.stats moved to amal_tools.bench.stats"):
        old = importlib.import_module("amal_verified.bench.stats")
    assert old is importlib.import_module("amal_tools.bench.stats")


def test_a_pickle_naming_the_old_unpickling_function_loads_with_its_labels() -> None:
    t = av.aux(torch.arange(4.0), source="aux-7")
    data = pickle.dumps(t, protocol=0)
    new = b"amal_verified.isolation._engine.global_hooks\nrebuild_tagged"
    assert new in data
    old = data.replace(new, b"amal_verified._transfer\nrebuild_tagged")
    sys.modules.pop("amal_verified._transfer", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = pickle.loads(old)
    assert av.label_of(loaded) == av.label_of(t)
    with av.declassify(reason="the test compares values"):
        assert torch.equal(loaded, t)


def test_torch_load_with_weights_only_accepts_the_old_function_names() -> None:
    from torch.serialization import get_safe_globals

    names = {name for entry in get_safe_globals() if isinstance(entry, tuple) for name in entry[1:]}
    assert {"amal_verified._transfer.rebuild_tagged", "amal_verified._transfer._rebuild_from"} <= names
