"""Tests for ``amal_verified.record.checkpoint``: atomic saves, weights_only loads, tagged tensors."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from amal_verified.isolation.labels import Label, Source, SourceKind
from amal_verified.isolation.tagging import AuxData, PrimaryData, TaggedTensor, aux, label_of, primary
from amal_verified.record.checkpoint import (
    CheckpointError,
    from_checkpointable,
    load_checkpoint,
    save_checkpoint,
    to_checkpointable,
)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def payload() -> dict[str, Any]:
    g = torch.Generator().manual_seed(123)
    torch.randn(3, generator=g)
    model = torch.nn.Linear(3, 2)
    # The shape of an Adam state_dict (built by hand: the first optimizer step imports torch._dynamo,
    # which costs seconds).
    optimizer = {
        "state": {
            i: {"step": torch.tensor(1.0), "exp_avg": torch.randn(p.shape), "exp_avg_sq": p.detach() ** 2}
            for i, p in enumerate(model.parameters())
        },
        "param_groups": [
            {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "params": [0, 1]}
        ],
    }
    return {
        "step": 42,
        "lr": 3e-4,
        "name": "run-1",
        "flags": [True, None, b"raw"],
        "shape": torch.Size([2, 3]),
        "dtype": torch.float64,
        "model": model.state_dict(),
        "optimizer": optimizer,
        "torch_rng": g.get_state(),
        "numpy_rng": np.random.default_rng(7).bit_generator.state,
        "nested": {"a": (1, 2.5, "x"), 3: collections.OrderedDict(z=torch.arange(4))},
    }


def assert_same(a: Any, b: Any) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8))
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


# ---------------------------------------------------------------------------------------- round trips


def test_weights_only_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    data = payload()
    save_checkpoint(path, data)
    loaded = load_checkpoint(path)
    assert_same(data, loaded)
    assert leftovers(tmp_path) == []
    # the file really loads with plain torch.load(weights_only=True)
    torch.load(path, weights_only=True)


def test_rng_states_restore_the_streams(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(5)
    rng = np.random.default_rng(5)
    legacy = np.random.RandomState(5)  # MT19937: its state holds an ndarray
    path = tmp_path / "rng.pt"
    save_checkpoint(
        path,
        {"torch": g.get_state(), "numpy": rng.bit_generator.state, "mt": legacy.get_state(legacy=False)},
    )
    expected = (torch.rand(4, generator=g), rng.random(4), legacy.random_sample(4))
    loaded = load_checkpoint(path)
    g2 = torch.Generator()
    g2.set_state(loaded["torch"])
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = loaded["numpy"]
    legacy2 = np.random.RandomState()
    legacy2.set_state(loaded["mt"])
    assert isinstance(loaded["mt"]["state"]["key"], np.ndarray)
    assert loaded["mt"]["state"]["key"].dtype == np.uint32
    assert torch.equal(torch.rand(4, generator=g2), expected[0])
    assert np.array_equal(rng2.random(4), expected[1])
    assert np.array_equal(legacy2.random_sample(4), expected[2])


def test_numpy_pcg64_state_is_plain_and_loads_under_weights_only(tmp_path: Path) -> None:
    state = np.random.default_rng(11).bit_generator.state
    path = tmp_path / "np.pt"
    torch.save(state, path)  # not even via save_checkpoint: plain dict of ints/str
    assert torch.load(path, weights_only=True) == state


def test_tagged_tensors_round_trip(tmp_path: Path) -> None:
    p = primary(torch.randn(3, 2), source="real-env")
    a = aux(torch.randn(4), source="aux-3")
    mixed = aux(primary(torch.randn(2), source="real-env"), source="aux-1")
    path = tmp_path / "tagged.pt"
    save_checkpoint(path, {"p": p, "batch": [a, {"m": mixed}], "plain": torch.ones(1)})
    raw = torch.load(path, weights_only=True)  # what is on disk: plain tensors plus source names
    assert type(raw["p"]["data"]) is torch.Tensor
    assert raw["p"]["sources"] == ["primary:real-env"]
    loaded = load_checkpoint(path)
    assert isinstance(loaded["p"], PrimaryData)
    assert isinstance(loaded["batch"][0], AuxData)
    assert isinstance(loaded["batch"][1]["m"], TaggedTensor)
    assert label_of(loaded["p"]) == Label.of(SourceKind.PRIMARY, "real-env")
    assert label_of(loaded["batch"][0]) == Label.of(SourceKind.AUX, "aux-3")
    assert label_of(loaded["batch"][1]["m"]) == Label(
        [Source(SourceKind.PRIMARY, "real-env"), Source(SourceKind.AUX, "aux-1")]
    )
    assert torch.equal(loaded["p"].elem, p.elem)
    assert torch.equal(loaded["batch"][0].elem, a.elem)
    assert type(loaded["plain"]) is torch.Tensor
    assert load_checkpoint(path, restore=False)["p"]["sources"] == ["primary:real-env"]


def test_to_from_checkpointable_are_inverse() -> None:
    p = primary(torch.arange(3.0), source="real-env")
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    obj = {"p": p, "arr": arr, "t": (1, [2.0])}
    conv = to_checkpointable(obj)
    assert type(conv["p"]["data"]) is torch.Tensor
    back = from_checkpointable(conv)
    assert isinstance(back["p"], PrimaryData)
    assert back["arr"].dtype == np.int16 and np.array_equal(back["arr"], arr)
    assert back["t"] == (1, [2.0])


# ---------------------------------------------------------------------------------------- refusals


class Custom:
    pass


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (lambda: 0, "function"),
        (Custom(), "Custom"),
        (torch.Generator(), "get_state"),
        (torch.nn.Linear(1, 1), "state_dict"),
        (np.float32(1.0), r"\.item\(\)"),
        (slice(1, 2), "slice"),
        ({"__amal_verified_tagged__": 1}, "reserved"),
        ({Custom(): 1}, "dict key"),
        (np.array([object()]), "dtype object"),
    ],
)
def test_refused_before_writing(tmp_path: Path, value: Any, match: str) -> None:
    path = tmp_path / "ckpt.pt"
    with pytest.raises(CheckpointError, match=match):
        save_checkpoint(path, {"ok": torch.ones(2), "deep": {"bad": [value]}})
    assert list(tmp_path.iterdir()) == []  # nothing written, no temp file


def test_refusal_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"payload\['deep'\]\['bad'\]\[0\]"):
        save_checkpoint(tmp_path / "c.pt", {"deep": {"bad": [Custom()]}})


def test_cycle_refused(tmp_path: Path) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(CheckpointError, match="cycle"):
        save_checkpoint(tmp_path / "c.pt", {"loop": loop})
    shared = [1]
    save_checkpoint(tmp_path / "c.pt", {"a": shared, "b": shared})  # shared, not cyclic: fine


def test_payload_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "c.pt", [1, 2])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- atomicity


def test_crash_at_rename_keeps_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"version": 1, "w": torch.zeros(3)})
    before = path.read_bytes()

    def crash(src: Any, dst: Any) -> None:
        raise KeyboardInterrupt("killed during os.replace")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"version": 2, "w": torch.ones(3)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["version"] == 1
    assert leftovers(tmp_path) == []


def test_crash_mid_write_keeps_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"version": 1})
    real_save = torch.save

    def half_save(obj: Any, f: Any, *args: Any, **kw: Any) -> None:
        real_save(obj, f, *args, **kw)
        f.truncate(f.tell() // 2)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"version": 2, "w": torch.ones(1000)})
    monkeypatch.undo()
    assert load_checkpoint(path)["version"] == 1
    assert leftovers(tmp_path) == []


def test_corrupt_temp_file_is_never_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With verify=True (default), a temp file that does not load back is not moved into place."""
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"version": 1})
    real_save = torch.save

    def silently_truncating_save(obj: Any, f: Any, *args: Any, **kw: Any) -> None:
        real_save(obj, f, *args, **kw)
        f.truncate(f.tell() - 30)

    monkeypatch.setattr(torch, "save", silently_truncating_save)
    with pytest.raises(CheckpointError, match="corrupt"):
        save_checkpoint(path, {"version": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["version"] == 1
    assert leftovers(tmp_path) == []


def test_save_fsyncs_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(tmp_path / "c.pt", {"x": 1})
    if os.path.isdir("/proc/self/fd"):
        assert events == ["fsync-file", "replace", "fsync-dir"]


# ---------------------------------------------------------------------------------------- bad files


def test_missing_truncated_and_garbage_files(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*ckpt\.pt"):
        load_checkpoint(path)
    save_checkpoint(path, payload())
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 10, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"ckpt\.pt.*(corrupt|truncated)") as info:
            load_checkpoint(path)
        assert info.value.path == path
    path.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match=r"ckpt\.pt"):
        load_checkpoint(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_unsafe_file_is_refused_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"obj": Custom()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*weights_only"):
        load_checkpoint(path)
    pickle_path = tmp_path / "pickle.pt"
    pickle_path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match=r"pickle\.pt"):
        load_checkpoint(pickle_path)


def test_non_dict_checkpoint_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="not a dict"):
        load_checkpoint(path)


def test_numpy_arrays_keep_their_shape_zero_dimensional_ones_too(tmp_path: Path) -> None:
    arrays = [np.asarray(3), np.asarray(1.5, dtype=np.float32), np.asarray(True), np.zeros((2, 0))]
    arrays.append(np.ones(4))
    save_checkpoint(tmp_path / "c.pt", {"arrays": arrays})
    loaded = load_checkpoint(tmp_path / "c.pt")["arrays"]
    assert [a.shape for a in loaded] == [a.shape for a in arrays]
    assert [a.dtype for a in loaded] == [a.dtype for a in arrays]
    assert all(np.array_equal(a, b) for a, b in zip(loaded, arrays, strict=True))


def test_a_bit_flipped_on_disk_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"weights": torch.arange(4096, dtype=torch.float32)})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the tensor's bytes, which dominate the file
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"is damaged: .* does not match the checksum"):
        load_checkpoint(path)
