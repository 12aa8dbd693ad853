"""The isolation core on code users write: never a crash, PyTorch's own arithmetic, labels that survive
processes and files, protected optimizer state and buffers, atomic refusals, parameter provenance."""

from __future__ import annotations

import ast
import copy
import io
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader, Dataset

import amal_verified as av
from amal_verified.isolation.labels import Label, Source, SourceKind

REPO = Path(__file__).resolve().parents[2]
P = Label.of(SourceKind.PRIMARY, "real-env")
A = Label.of(SourceKind.AUX, "aux-1")


def prim(*shape: int) -> torch.Tensor:
    return av.primary(torch.randn(*shape), source="real-env")


def auxd(*shape: int) -> torch.Tensor:
    return av.aux(torch.randn(*shape), source="aux-1")


def plain_values(t: torch.Tensor) -> torch.Tensor:
    """The values of ``t`` as a plain tensor (comparing tracked aux values would record an escape)."""
    return t.elem if isinstance(t, av.TaggedTensor) else t


def gated(module: torch.nn.Module, opt: type[torch.optim.Optimizer] = torch.optim.Adam) -> av.GatedOptimizer:
    return av.GatedOptimizer(opt(module.parameters(), lr=1e-2), names=module)


def aux_trained(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` after one plain Adam step on auxiliary data (its parameters now depend on it)."""
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    module(auxd(4, module.in_features)).sum().backward()  # type: ignore[operator]
    opt.step()
    opt.zero_grad()
    return module


# -- 1. never crash, never change arithmetic ------------------------------------------------------


@pytest.mark.parametrize("source", ["primary", "aux"])
def test_assigning_tagged_data_to_param_data_does_not_crash(source: str) -> None:
    model = torch.nn.Linear(3, 2)
    value = prim(2, 3) if source == "primary" else auxd(2, 3)
    model.weight.data = value
    assert isinstance(model.weight, torch.nn.Parameter)
    assert dict(model.named_parameters())["weight"] is model.weight
    assert av.label_of(model.weight) == av.label_of(value)
    assert av.label_of(model(torch.randn(4, 3))) == av.label_of(value)  # the call reads its parameters
    if source == "aux":  # plain operations on the parameter alone keep the label (parameters_to_vector)
        assert av.label_of(torch.nn.utils.parameters_to_vector(model.parameters())) == av.label_of(value)


def test_vector_to_parameters_of_aux_data_into_a_protected_model_is_refused() -> None:
    wm = torch.nn.Linear(3, 2)
    opt = gated(wm)
    before = [plain_values(p).clone() for p in wm.parameters()]
    vec = av.aux(torch.randn(8), source="aux-1")  # an evolution strategy's candidate
    with pytest.raises(av.IsolationViolation, match=r"assigning weight\.data.*aux:aux-1"):
        torch.nn.utils.vector_to_parameters(vec, wm.parameters())
    assert all(torch.equal(b, plain_values(p)) for b, p in zip(before, wm.parameters(), strict=True))
    F.mse_loss(wm(prim(4, 3)), prim(4, 2)).backward()
    opt.step()  # nothing auxiliary reached the world model


def test_memory_a_protected_parameter_takes_through_data_is_protected_at_once() -> None:
    """After ``vector_to_parameters`` of a primary candidate, the parameters view the candidate
    vector: an auxiliary write through that vector is refused before it is written, not only at the
    next step (which would leave the world model's weights holding auxiliary data)."""
    wm = torch.nn.Linear(3, 2)
    opt = gated(wm)
    candidate = torch.nn.utils.parameters_to_vector(wm.parameters()).detach() + 0.01
    torch.nn.utils.vector_to_parameters(candidate, wm.parameters())
    before = [plain_values(p).clone() for p in wm.parameters()]
    with pytest.raises(
        av.IsolationViolation, match=r"protected parameter (weight|bias).*Nothing was written"
    ):
        candidate.add_(av.aux(torch.randn(8), source="aux-1"))
    assert all(torch.equal(b, plain_values(p)) for b, p in zip(before, wm.parameters(), strict=True))
    F.mse_loss(wm(prim(4, 3)), prim(4, 2)).backward()
    opt.step()


def test_a_protected_plain_tensor_given_new_memory_refuses_auxiliary_writes_into_itself() -> None:
    """A learnt plain tensor's ``.data`` assignment is not guarded; a write into the tensor itself
    finds its protection by identity and follows it to the new memory."""
    temperature = torch.zeros(3, requires_grad=True)
    gated_temperature = av.GatedOptimizer(torch.optim.SGD([temperature], lr=0.1), names={"t": temperature})
    temperature.data = torch.ones(3)
    with torch.no_grad(), pytest.raises(av.IsolationViolation, match=r"protected parameter t\b"):
        temperature.add_(av.aux(torch.randn(3), source="aux-1"))
    assert torch.equal(temperature.detach(), torch.ones(3))
    (temperature * prim(3)).sum().backward()
    gated_temperature.step()


def test_parameters_laundered_through_a_vector_do_not_reach_the_world_model() -> None:
    """An aux-trained model's parameters flattened by plain operations (``parameters_to_vector``) and
    written into the world model are refused: the flattening keeps their label."""
    wm = torch.nn.Linear(3, 2)
    opt = gated(wm)
    helper = torch.nn.Linear(3, 2)
    helper.weight.data = auxd(2, 3)  # a model whose parameters were trained on auxiliary data
    flat = torch.nn.utils.parameters_to_vector(helper.parameters())
    with pytest.raises(av.IsolationViolation, match="aux:aux-1"):
        torch.nn.utils.vector_to_parameters(flat, wm.parameters())
    F.mse_loss(wm(prim(4, 3)), prim(4, 2)).backward()
    opt.step()


def _wgan_gp_and_hvp(tag: str | None) -> tuple[list[torch.Tensor], list[torch.Tensor], list[Label]]:
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    eps = torch.rand(8, 1, generator=g)
    if tag == "primary":
        real = av.primary(real, source="real-env")
    elif tag == "aux":
        real = av.aux(real, source="aux-1")
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad_x,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    penalty = ((grad_x.norm(2, dim=1) - 1) ** 2).mean()
    (critic(fake).mean() + 10 * penalty).backward()
    grads = [plain_values(p.grad).clone() for p in critic.parameters() if p.grad is not None]
    labels = [av.label_of(p.grad) for p in critic.parameters() if p.grad is not None]
    params = list(critic.parameters())
    x = torch.randn(3, 4, generator=g)
    if tag == "aux":
        x = av.aux(x, source="aux-1")
    first = torch.autograd.grad(critic(x).pow(2).sum(), params, create_graph=True)
    hvp = torch.autograd.grad(sum(f.sum() for f in first), params)
    return grads, [plain_values(h).clone() for h in hvp], labels + [av.label_of(h) for h in hvp]


@pytest.mark.parametrize("tag", ["primary", "aux"])
def test_higher_order_gradients_are_pytorchs_own_and_labelled(tag: str) -> None:
    """Gradient penalties (WGAN-GP) and Hessian-vector products through tracked module calls."""
    plain_grads, plain_hvp, _ = _wgan_gp_and_hvp(None)
    grads, hvp, labels = _wgan_gp_and_hvp(tag)
    assert all(torch.equal(a, b) for a, b in zip(plain_grads, grads, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(plain_hvp, hvp, strict=True))
    # The penalty reaches every parameter but the last bias (the input gradient does not depend on it).
    assert [label.has_aux for label in labels[: len(grads)]] == [tag == "aux"] * 3 + [False]
    if tag == "aux":
        assert all(label.has_aux for label in labels[len(grads) :])


def test_an_aux_gradient_penalty_is_refused() -> None:
    critic = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = gated(critic)
    mixed = auxd(6, 4).requires_grad_(True)
    (grad_x,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    assert grad_x.requires_grad and av.label_of(grad_x).has_aux
    (critic(prim(6, 4)).mean() + ((grad_x.norm(2, dim=1) - 1) ** 2).mean()).backward()
    with pytest.raises(av.IsolationViolation):
        opt.step()


def test_maml_inner_step_through_functional_call() -> None:
    from torch.func import functional_call

    def meta_grads(tag: bool) -> tuple[list[torch.Tensor], list[Label]]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        g = torch.Generator().manual_seed(2)
        support, query = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
        if tag:
            support, query = av.primary(support, source="real-env"), av.aux(query, source="aux-1")
        params = dict(model.named_parameters())
        inner = functional_call(model, params, (support,)).pow(2).mean()
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        fast = {k: v - 0.1 * gr for (k, v), gr in zip(params.items(), grads, strict=True)}
        functional_call(model, fast, (query,)).pow(2).mean().backward()
        return [plain_values(p.grad).clone() for p in model.parameters()], [
            av.label_of(p.grad) for p in model.parameters()
        ]

    plain_grads, _ = meta_grads(False)
    grads, labels = meta_grads(True)
    assert all(torch.equal(a, b) for a, b in zip(plain_grads, grads, strict=True))
    assert all(label.has_aux for label in labels)


def test_a_failed_call_leaves_tracking_consistent() -> None:
    """A KeyboardInterrupt (which skips PyTorch's always-called hooks) or a failing torch.func
    transform in one call does not change how later calls are tracked."""
    from torch.func import functional_call, grad

    class Interrupted(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = torch.nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.inner(x)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Interrupted()(auxd(2, 3))
    model = torch.nn.Linear(3, 3)
    gated(model)
    with pytest.raises(RuntimeError):
        grad(lambda p, x: functional_call(model, p, (x,)).sum())(dict(model.named_parameters()), prim(2, 4))
    out = model(prim(2, 3))
    assert av.label_of(out) is P
    out.sum().backward()
    assert model.weight.grad is not None and av.label_of(model.weight.grad) is P


def test_a_users_global_module_hooks_see_every_call_nested_in_a_tracked_call() -> None:
    """Nested calls skip the library's hooks (they owe them nothing), never another library's."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = prim(5, 3)
    seen_before: list[str] = []
    seen_after: list[str] = []
    pre = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda m, args: seen_before.append(type(m).__name__)
    )
    post = torch.nn.modules.module.register_module_forward_hook(
        lambda m, args, out: seen_after.append(type(m).__name__)
    )
    try:
        out = model(x)
    finally:
        pre.remove()
        post.remove()
    assert seen_before == ["Sequential", "Linear", "ReLU", "Linear"]
    assert sorted(seen_after) == sorted(seen_before)
    assert av.label_of(out) is P
    local: list[str] = []
    handle = model[2].register_forward_hook(lambda m, args, out: local.append("last"))
    try:
        assert av.label_of(model(x)) is P
    finally:
        handle.remove()
    assert local == ["last"]


def test_a_module_called_in_another_thread_during_a_tracked_call_is_tracked() -> None:
    """Which calls are nested is decided per thread: a call another thread makes while a tracked
    call runs here is tracked on its own."""
    import threading

    features = prim(8, 3)
    other = torch.nn.Linear(3, 2)
    results: list[torch.Tensor] = []

    class Outer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = torch.nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            worker = threading.Thread(target=lambda: results.append(other(features)))
            worker.start()
            worker.join()
            return self.inner(x)

    out = Outer()(auxd(2, 3))
    assert av.label_of(out).has_aux
    assert av.label_of(results[0]) is P


@pytest.mark.parametrize("shape", [(4, 3), (0, 3), (3, 5)])
def test_an_out_target_labelled_mid_operation_keeps_the_operations_result(shape: tuple[int, int]) -> None:
    """``torch.svd(..., out=)`` transposes ``V`` in place after writing it: the caller's plain out
    tensors, labelled auxiliary by the write, end with exactly plain PyTorch's values and strides,
    and are tracked from their first use."""
    x = torch.randn(*shape)
    expected = torch.svd(x, out=(torch.empty(0), torch.empty(0), torch.empty(0)))
    outs = (torch.empty(0), torch.empty(0), torch.empty(0))
    torch.svd(av.aux(x.clone(), source="aux-1"), out=outs)
    for want, got in zip(expected, outs, strict=True):
        assert got.shape == want.shape and got.stride() == want.stride()
        assert isinstance(got, av.AuxData)  # tracked from here on
        assert torch.equal(want, got.elem)
    assert av.label_of(outs[0] * 2) is A


def test_aux_written_through_a_view_of_a_hooked_intermediate_keeps_autograd_and_does_not_hang() -> None:
    """The view's base becomes tracked at its first use from Python, not while a later in-place
    operation on the view runs (the base lost its autograd history), nor while autograd, rebasing
    the base's history under its lock, resets the base's hooks through an attribute setter (the
    interpreter hung).  Run in a child process, so that a hang fails the test instead of the suite."""
    script = textwrap.dedent(
        """
        import torch, amal_verified as av
        grads = []
        for tag in (False, True):
            torch.manual_seed(0)
            leaf = torch.randn(4, 4, requires_grad=True)
            base = leaf * 2
            base.register_hook(lambda g: g * 3)
            row = base[0]
            values = torch.randn(4)
            row.copy_(av.aux(values, source="aux-1") if tag else values)
            row.add_(1.0)
            (base * torch.arange(16.0).view(4, 4)).sum().backward()
            grads.append(leaf.grad)
        print(torch.equal(grads[0], grads[1]), av.label_of(base).has_aux, av.label_of(row).has_aux)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO, timeout=120
    )
    assert out.stdout.split() == ["True", "True", "True"]


@pytest.mark.slow
def test_untagged_compiled_model_is_plain_pytorch() -> None:
    """Once tagged data has flowed, an unrelated torch.compile'd model has no graph break and gives
    the bits it gives in a process that never imported the library."""
    script = textwrap.dedent(
        """
        import sys, warnings
        import torch
        warnings.simplefilter("ignore")
        if sys.argv[1] == "lib":
            import amal_verified as av
            torch.nn.Linear(3, 3)(av.primary(torch.randn(2, 3))).sum().backward()
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
        x = torch.randn(4, 8)
        explained = torch._dynamo.explain(m)(x)
        print(explained.graph_break_count, torch.compile(m)(x).sum().item().hex())
        """
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script, side], capture_output=True, text=True, check=True, cwd=REPO
        ).stdout.split()
        for side in ("plain", "lib")
    ]
    assert outputs[0] == outputs[1]
    assert outputs[1][0] == "0"


@pytest.mark.slow
def test_compiled_code_on_tagged_data_is_tracked() -> None:
    """A torch.compile'd world model called on auxiliary data is refused at the gated step, and a
    compiled function keeps its input's auxiliary label."""
    script = textwrap.dedent(
        """
        import warnings
        import torch
        import amal_verified as av
        warnings.simplefilter("ignore")
        m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        opt = av.GatedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1))
        before = [p.detach().clone() for p in m.parameters()]
        x = av.aux(torch.randn(5, 4), source="sim")
        torch.compile(m)(x).sum().backward()
        try:
            opt.step()
            print("stepped")
        except av.IsolationViolation:
            print("refused", all(torch.equal(a, p) for a, p in zip(before, m.parameters())))
        f = torch.compile(lambda a, b: (a * 2 + b).sin().sum())
        print(av.label_of(f(x, torch.randn(5, 4))).aux_sources)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.split("\n")
    assert out[0] == "refused True"
    assert "sim" in out[1]


@pytest.mark.slow
def test_a_compiled_policy_trains_on_aux_data_as_it_does_untagged() -> None:
    """A torch.compile'd policy (plain optimizer) trained on auxiliary data: backward runs, the
    parameters take the aux label, and their bits are those of the same training on untagged data."""
    script = textwrap.dedent(
        """
        import sys, warnings
        import torch
        import amal_verified as av
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        policy = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        compiled = torch.compile(policy, backend="aot_eager")
        opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
        for step in range(3):
            g = torch.Generator().manual_seed(step)
            obs, target = torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)
            if sys.argv[1] == "aux":
                obs, target = av.aux(obs, source="sim"), av.aux(target, source="sim")
            opt.zero_grad()
            ((compiled(obs) - target) ** 2).mean().backward()
            opt.step()
        values = torch.cat([p.detach().flatten() for p in policy.parameters()])
        print(av.label_of(policy[0].weight).has_aux, values.sum().item().hex())
        """
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script, side], capture_output=True, text=True, check=True, cwd=REPO
        ).stdout.split()
        for side in ("untagged", "aux")
    ]
    assert outputs[0][0] == "False" and outputs[1][0] == "True"
    assert outputs[0][1] == outputs[1][1]


def test_no_bare_assert_in_the_isolation_core() -> None:
    core = sorted((REPO / "amal_verified" / "isolation").rglob("*.py"))
    assert len(core) > 15
    for path in core:
        tree = ast.parse(path.read_text())
        asserts = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
        assert not asserts, f"{path.name}: assert statements at lines {asserts}"


# -- 2. leaks in users' code -------------------------------------------------------------------------


class _Mixed(Dataset[torch.Tensor]):
    def __init__(self) -> None:
        self.primary = prim(8, 3)
        self.aux = auxd(8, 3)

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.primary[i] if i < 8 else self.aux[i - 8]


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_dataloader_batches_keep_their_labels_row_by_row(workers: int) -> None:
    loader = DataLoader(
        _Mixed(), batch_size=16, num_workers=workers, multiprocessing_context="spawn" if workers else None
    )
    (batch,) = list(loader)
    assert isinstance(batch, av.TaggedTensor)
    assert av.label_of(batch) == P | A
    assert av.label_of(batch[:8]) is P and av.label_of(batch[8:]) is A
    wm = torch.nn.Linear(3, 3)
    opt = gated(wm)
    F.mse_loss(wm(batch), batch).backward()
    with pytest.raises(av.IsolationViolation):
        opt.step()
    opt.zero_grad()
    F.mse_loss(wm(batch[:8]), batch[:8]).backward()
    opt.step()


def test_labels_survive_multiprocessing_queues() -> None:
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    written = torch.zeros(3)
    written.add_(auxd(3))  # a plain tensor whose memory now holds aux data
    queue.put((prim(2), auxd(2), written))
    received = queue.get()
    assert [av.label_of(t) for t in received] == [P, A, A]


def _shared_encoder_step(
    encoder: torch.nn.Module, head: torch.nn.Module, data: torch.Tensor, results: Any
) -> None:
    """A worker's plain optimizer stepping a policy that shares the world model's encoder."""
    opt = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=0.5)
    head(encoder(data)).pow(2).mean().backward()
    try:
        opt.step()
        results.put("stepped")
    except av.IsolationViolation as exc:
        results.put("refused: " + str(exc).splitlines()[0])


@pytest.mark.parametrize("kind", ["aux", "primary"])
def test_a_protected_encoder_in_shared_memory_is_protected_in_a_spawned_worker(kind: str) -> None:
    """Hogwild/A3C: the world model's encoder, in shared memory, also serves a policy trained in a
    spawned worker; the worker's step on auxiliary data is refused there, one on primary data is not."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    encoder, head = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)
    encoder.share_memory()
    wm = torch.nn.Sequential(encoder, torch.nn.Linear(4, 3))
    gated(wm)
    before = [p.detach().clone() for p in encoder.parameters()]
    data = auxd(5, 3) if kind == "aux" else prim(5, 3)
    results = context.SimpleQueue()
    worker = context.Process(target=_shared_encoder_step, args=(encoder, head, data, results))
    worker.start()
    worker.join(timeout=300)
    outcome = results.get()
    changed = not all(torch.equal(a, p) for a, p in zip(before, encoder.parameters(), strict=True))
    if kind == "aux":
        assert outcome.startswith("refused") and "shared from another process" in outcome, outcome
        assert not changed
    else:
        assert outcome == "stepped" and changed


def test_labels_survive_pickle_deepcopy_and_torch_save(tmp_path: Path) -> None:
    values = {"p": prim(3), "a": auxd(2, 2), "rows": torch.cat([prim(2, 2), auxd(2, 2)])}
    for copied in (pickle.loads(pickle.dumps(values)), copy.deepcopy(values)):
        assert {k: av.label_of(v) for k, v in copied.items()} == {"p": P, "a": A, "rows": P | A}
        assert av.label_of(copied["rows"][:2]) is P
    path = tmp_path / "tagged.pt"
    torch.save(values, path)
    loaded = torch.load(path, weights_only=True)
    assert {k: av.label_of(v) for k, v in loaded.items()} == {"p": P, "a": A, "rows": P | A}
    assert av.label_of(loaded["rows"][2:]) is A
    assert torch.equal(plain_values(loaded["a"]), plain_values(values["a"]))


def test_a_gated_model_trained_on_primary_data_saves_as_plain_pytorch(tmp_path: Path) -> None:
    """Primary provenance is not written to files: anyone loads the world model without the library."""
    wm = torch.nn.Linear(3, 3)
    opt = gated(wm)
    x = prim(4, 3)
    F.mse_loss(wm(x), x).backward()
    opt.step()
    assert av.label_of(wm.weight) is P
    path = tmp_path / "wm.pt"
    torch.save({"model": wm.state_dict(), "optimizer": opt.state_dict()}, path)
    script = (
        "import sys, torch; d = torch.load(sys.argv[1], weights_only=True); "
        "print(type(d['model']['weight']).__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "Tensor"


def test_aux_written_into_optimizer_state_is_refused_before_anything_changes() -> None:
    wm = torch.nn.Linear(3, 3)
    opt = gated(wm)
    x = prim(4, 3)
    F.mse_loss(wm(x), x).backward()
    opt.step()
    exp_avg = opt.state[wm.weight]["exp_avg"]
    with pytest.raises(av.IsolationViolation, match="optimizer state"):
        exp_avg.add_(auxd(3, 3))
    opt.state[wm.weight]["exp_avg"] = av.aux(exp_avg.clone(), source="aux-1")  # replaced outright
    F.mse_loss(wm(x), x).backward()
    before = [plain_values(p).clone() for p in wm.parameters()]
    state_before = copy.deepcopy(opt.state_dict())
    with pytest.raises(av.IsolationViolation, match=r"state\['exp_avg'\]"):
        opt.step()
    assert all(torch.equal(b, plain_values(p)) for b, p in zip(before, wm.parameters(), strict=True))
    assert str(opt.state_dict()) == str(state_before)


def test_optimizer_state_of_a_scalar_parameter_stepped_on_aux_data_is_labelled() -> None:
    """A 0-dim parameter (a learned log-std) stepped by a plain optimizer on auxiliary gradients: its
    moments carry the label, so a gated optimizer refuses to load them; the step counter does not."""
    log_std = torch.nn.Parameter(torch.zeros(()))
    aux_opt = torch.optim.Adam([log_std], lr=0.1)
    (log_std * auxd(5).mean()).backward()
    aux_opt.step()
    state = aux_opt.state[log_std]
    assert av.label_of(state["exp_avg"]).has_aux and av.label_of(state["exp_avg_sq"]).has_aux
    assert not av.label_of(state["step"]).has_aux
    fresh = av.GatedOptimizer(torch.optim.Adam([torch.nn.Parameter(torch.zeros(()))], lr=0.1))
    with pytest.raises(av.IsolationViolation, match="exp_avg"):
        fresh.load_state_dict(aux_opt.state_dict())
    assert not fresh.state


def test_a_gated_model_loads_and_converts_when_pytorch_swaps_parameters() -> None:
    """Under ``torch.__future__.set_swap_module_params_on_conversion(True)`` a gated model loads a
    checkpoint and converts its dtype as plain PyTorch does, and its parameters stay protected."""
    wm = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 4))
    checkpoint = {k: v.detach().clone() + 1 for k, v in wm.state_dict().items()}
    opt = gated(wm)
    wm(prim(3, 4)).pow(2).mean().backward()
    opt.step()
    aux_checkpoint = {k: av.aux(v.clone(), source="aux-1") for k, v in checkpoint.items()}
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        with pytest.raises(av.IsolationViolation, match="load_state_dict"):
            wm.load_state_dict(aux_checkpoint)
        wm.load_state_dict(checkpoint)
        assert all(torch.equal(v, checkpoint[k]) for k, v in wm.state_dict().items())
        wm.double()
        assert all(p.dtype == torch.float64 for p in wm.parameters())
        with pytest.raises(av.IsolationViolation, match="protected"), torch.no_grad():
            wm[0].weight.add_(av.aux(torch.randn(8, 4, dtype=torch.float64), source="aux-1"))
    finally:
        torch.__future__.set_swap_module_params_on_conversion(False)


class _EMACodebook(torch.nn.Module):
    """A VQ codebook kept as a parameter and moved towards its assigned inputs in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Parameter(torch.randn(4, 3))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        code = torch.cdist(z, self.embed).argmin(1)
        if self.training:
            with torch.no_grad():
                onehot = F.one_hot(code, 4).float()
                mean = (onehot.t() @ z) / onehot.sum(0).clamp(min=1)[:, None]
                self.embed.data.lerp_(mean, 0.5)
        return z + (self.embed[code] - z).detach()


def test_a_call_on_aux_data_that_writes_protected_parameters_is_undone_and_refused() -> None:
    """Modules that write their own parameters in forward (an EMA codebook, Embedding's max_norm):
    called on auxiliary data, the call is undone and refused; on primary data the write is made."""
    codebook = _EMACodebook()
    embedding = torch.nn.Embedding(10, 3, max_norm=0.5)
    wm = torch.nn.ModuleList([codebook, embedding])
    gated(wm)
    before = [p.detach().clone() for p in wm.parameters()]
    with pytest.raises(av.IsolationViolation, match=r"parameter 0\.embed .*restored"):
        codebook(auxd(8, 3))
    with pytest.raises(av.IsolationViolation, match=r"parameter 1\.weight .*restored"):
        embedding(av.aux(torch.tensor([1, 2, 3]), source="aux-1"))
    assert all(torch.equal(a, p) for a, p in zip(before, wm.parameters(), strict=True))
    codebook(prim(8, 3))
    embedding(av.primary(torch.tensor([1, 2, 3])))
    assert not all(torch.equal(a, p) for a, p in zip(before, wm.parameters(), strict=True))


def test_frozen_parameters_can_be_gated() -> None:
    wm = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    wm[0].requires_grad_(False)
    opt = gated(wm)
    wm(prim(4, 3)).sum().backward()
    opt.step()
    wm(auxd(4, 3)).sum().backward()
    with pytest.raises(av.IsolationViolation, match="aux-1"):
        opt.step()


def test_a_lazy_module_runs_on_tagged_data_and_is_gated_once_initialised() -> None:
    wm = torch.nn.Sequential(torch.nn.LazyLinear(4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    with pytest.raises(TypeError, match=r"lazy module .* run one forward pass first"):
        gated(wm)
    assert av.label_of(wm(prim(5, 3))) is P  # the first call initialises it
    opt = gated(wm)
    wm(auxd(5, 3)).sum().backward()
    with pytest.raises(av.IsolationViolation, match="aux-1"):
        opt.step()


def test_optimizer_load_state_dict_of_aux_derived_state_is_refused() -> None:
    wm, other = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    opt = gated(wm)
    aux_opt = torch.optim.Adam(other.parameters(), lr=1e-2)
    other(auxd(4, 3)).sum().backward()
    aux_opt.step()
    before = str(opt.state_dict())
    with pytest.raises(av.IsolationViolation, match="load_state_dict"):
        opt.load_state_dict(aux_opt.state_dict())
    assert str(opt.state_dict()) == before


def test_module_load_state_dict_is_atomic_and_raises_isolation_violation() -> None:
    wm = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    gated(wm)
    incoming = {k: v.detach().clone() + 1 for k, v in wm.state_dict().items()}
    incoming["1.weight"] = av.aux(incoming["1.weight"], source="aux-1")
    before = {k: plain_values(v).clone() for k, v in wm.state_dict().items()}
    with pytest.raises(av.IsolationViolation, match=r"1\.weight"):
        wm.load_state_dict(incoming)
    assert all(torch.equal(before[k], plain_values(v)) for k, v in wm.state_dict().items())


class _Normalised(torch.nn.Module):
    """A world model with a running normaliser (registered buffers, no parameters of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(3))
        self.body = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.mean.lerp_(x.mean(0), 0.1)
        out: torch.Tensor = self.body(x - self.mean)
        return out


def test_protected_buffers_refuse_aux_writes_and_calls_that_would_change_them() -> None:
    wm = _Normalised()
    gated(wm)
    with pytest.raises(av.IsolationViolation, match="protected buffer mean"):
        wm.mean.add_(auxd(3))
    before = wm.mean.clone()
    with pytest.raises(av.IsolationViolation, match="restored"):
        wm(auxd(5, 3))
    assert torch.equal(wm.mean, before)
    wm.eval()
    assert av.label_of(wm(auxd(5, 3))).has_aux  # evaluating on auxiliary data is fine
    wm.train()
    wm(prim(5, 3))
    assert av.label_of(wm.mean) is P


def test_polyak_and_ema_from_an_aux_trained_model_are_refused() -> None:
    online = aux_trained(torch.nn.Linear(3, 3))
    assert av.label_of(online.weight) is A
    target = torch.nn.Linear(3, 3)
    gated(target)
    param, target_param = online.weight, target.weight
    with pytest.raises(av.IsolationViolation):  # CleanRL
        target_param.data.copy_(0.005 * param.data + 0.995 * target_param.data)
    with pytest.raises(av.IsolationViolation), torch.no_grad():  # Stable-Baselines3's polyak_update
        torch.add(target_param.data.mul(0.995), param.data, alpha=0.005, out=target_param.data)
    with pytest.raises(av.IsolationViolation), torch.no_grad():  # foreach
        torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), 0.005)
    assert not any(av.label_of(p).has_aux for p in target.parameters())


@pytest.mark.parametrize("via", ["data", "foreach"])
def test_polyak_from_an_aux_trained_model_restored_from_a_checkpoint_is_refused(via: str) -> None:
    online = aux_trained(torch.nn.Linear(3, 3))
    buffer = io.BytesIO()
    torch.save(online.state_dict(), buffer)
    buffer.seek(0)
    restored = torch.nn.Linear(3, 3)  # resumed in a fresh instance: PyTorch copies the labelled
    restored.load_state_dict(torch.load(buffer))  # values into its parameters below Python
    target = torch.nn.Linear(3, 3)
    gated(target)
    before = [p.detach().clone() for p in target.parameters()]

    @torch.no_grad()
    def soft_update() -> None:
        if via == "data":
            for dst, src in zip(target.parameters(), restored.parameters(), strict=True):
                dst.data.mul_(0.9).add_(src.data, alpha=0.1)
        else:
            torch._foreach_lerp_(list(target.parameters()), list(restored.parameters()), 0.1)

    with pytest.raises(av.IsolationViolation, match="protected parameter"):
        soft_update()
    assert not any(av.label_of(p).has_aux for p in target.parameters())
    if via == "foreach":  # one operation, refused before it writes
        assert all(torch.equal(p, q) for p, q in zip(target.parameters(), before, strict=True))


def test_reading_data_of_a_parameter_whose_memory_holds_aux_data_tracks_it() -> None:
    source = torch.nn.Linear(3, 3)
    with torch.no_grad():
        source.weight.detach().copy_(av.aux(torch.randn(3, 3), source="aux-0"))  # through an alias
    assert type(source.weight) is torch.nn.Parameter  # the owner itself was not seen
    target = torch.nn.Linear(3, 3)
    gated(target)
    with pytest.raises(av.IsolationViolation, match="protected parameter"):
        target.weight.data.add_(source.weight.data, alpha=0.1)
    assert isinstance(source.weight, torch.nn.Parameter) and av.label_of(source.weight).has_aux


def test_distillation_from_an_aux_trained_teacher_is_refused() -> None:
    teacher = aux_trained(torch.nn.Linear(3, 3))
    student = torch.nn.Linear(3, 3)
    opt = gated(student)
    x = prim(5, 3)
    with torch.no_grad():
        soft = teacher(x)
    assert av.label_of(soft) == P | A
    F.mse_loss(student(x), soft).backward()
    with pytest.raises(av.IsolationViolation):
        opt.step()


def test_protecting_parameters_initialised_from_aux_values_is_refused() -> None:
    source = aux_trained(torch.nn.Linear(3, 3))
    wm = torch.nn.Linear(3, 3)
    wm.load_state_dict(source.state_dict())
    with pytest.raises(av.IsolationViolation, match="Nothing was protected"):
        gated(wm)


def test_a_protected_parameter_stays_primary_as_long_as_the_gate_holds() -> None:
    wm = torch.nn.Linear(3, 3)
    opt = gated(wm)
    for _ in range(3):
        x = prim(4, 3)
        F.mse_loss(wm(x), x).backward()
        opt.step()
        opt.zero_grad()
        assert all(av.label_of(p) is P for p in wm.parameters())


def test_sources_of_a_label_are_named_in_order() -> None:
    assert list(P | A) == sorted([Source(SourceKind.PRIMARY, "real-env"), Source(SourceKind.AUX, "aux-1")])


def test_a_module_that_returns_its_input_keeps_the_gradient_label() -> None:
    """Identity and Dropout(0) return the tensor they were given: the gradient leaving them keeps
    the label it arrived with (the case of a Transformer decoder's attention output projection)."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerDecoderLayer(4, 2, dim_feedforward=8, dropout=0.0)
    layer(auxd(3, 2, 4), prim(3, 2, 4)).sum().backward()
    assert all(p.grad is not None and av.label_of(p.grad).has_aux for p in layer.parameters())
    x = auxd(3, 4)
    assert torch.nn.Identity()(x) is x


@pytest.mark.parametrize("load", ["copy_", "deepcopy"])
def test_state_of_an_optimizer_stepped_on_aux_data_keeps_its_label_when_copied(load: str) -> None:
    other = torch.nn.Linear(3, 3)
    other_opt = torch.optim.Adam(other.parameters(), lr=1e-2)
    other(auxd(4, 3)).sum().backward()
    other_opt.step()
    exp_avg = other_opt.state[other.weight]["exp_avg"]
    assert av.label_of(exp_avg) is A and av.label_of(exp_avg.clone()) is A
    assert not av.label_of(other_opt.state[other.weight]["step"]).has_aux  # a count, not data
    wm = torch.nn.Linear(3, 3)
    opt = gated(wm)
    x = prim(4, 3)
    F.mse_loss(wm(x), x).backward()
    opt.step()
    opt.zero_grad()
    state = opt.state[wm.weight]["exp_avg"]
    copied = copy.deepcopy(other_opt.state_dict())
    load_aux = {"copy_": lambda: state.copy_(exp_avg), "deepcopy": lambda: opt.load_state_dict(copied)}[load]
    with pytest.raises(av.IsolationViolation):
        load_aux()


def test_torch_func_transforms_on_tagged_data_keep_pytorchs_graph() -> None:
    from torch.func import grad, vmap

    model = torch.nn.Linear(3, 1)
    x = torch.randn(4, 3)
    for data in (x, prim(4, 3), auxd(4, 3)):
        g = grad(lambda z: model(z).sum())(data)
        assert g.requires_grad  # connected to the parameters, as without the library
    tagged = auxd(4, 3)
    per_row = vmap(grad(lambda z: torch.tanh(model(z)).sum()))(tagged)
    expected = vmap(grad(lambda z: torch.tanh(model(z)).sum()))(plain_values(tagged).clone())
    assert torch.equal(plain_values(per_row), expected)


# -- 6. precision, stated ------------------------------------------------------------------------


def test_rows_of_a_concatenation_keep_their_labels() -> None:
    p, a = prim(4, 3), auxd(2, 3)
    batch = torch.cat([p, a])
    assert av.label_of(batch) == P | A
    assert av.label_of(batch[:4]) is P and av.label_of(batch[4:]) is A
    assert av.label_of(batch[3:5]) == P | A  # a view spanning both keeps both
    assert av.label_of(torch.stack([p, p, p])[1]) is P
    assert av.label_of(batch.clone()[:4]) is P and av.label_of(batch.double()[4:]) is A
    batch[:4] = a[:1].expand(4, 3)  # an overwrite replaces the label of the rows it covers
    assert av.label_of(batch[:4]) is A
    wm = torch.nn.Linear(3, 3)
    opt = gated(wm)
    mixed = torch.cat([prim(4, 3), auxd(2, 3)])
    F.mse_loss(wm(mixed[:4]), mixed[:4]).backward()
    opt.step()  # primary rows only: accepted
    opt.zero_grad()
    F.mse_loss(wm(mixed), mixed).backward()
    with pytest.raises(av.IsolationViolation):
        opt.step()


def test_a_model_called_on_primary_rows_inside_a_call_on_mixed_data_is_tracked_on_its_own() -> None:
    class Agent(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.world_model = torch.nn.Linear(3, 3)
            self.policy = torch.nn.Linear(3, 1)

        def forward(self, batch: torch.Tensor, n: int) -> torch.Tensor:
            prediction = self.world_model(batch[:n])
            return (prediction - batch[:n]).pow(2).mean() + self.policy(batch).pow(2).mean()

    agent = Agent()
    opt = av.GatedOptimizer(torch.optim.SGD(agent.world_model.parameters(), lr=0.1), names=agent.world_model)
    agent(torch.cat([prim(4, 3), auxd(2, 3)]), 4).backward()
    assert av.label_of(agent.policy.weight.grad).has_aux
    opt.step()  # the world model saw primary rows only


# -- aux() read as an in-place operation ----------------------------------------------------------


def test_aux_makes_the_tensor_it_tags_tracked_in_place() -> None:
    x = torch.randn(4, 3)
    returned = av.aux(x, source="aux-1")
    assert returned is x and isinstance(x, av.AuxData)
    assert av.label_of(x * 2.0) is A  # arithmetic on the object itself is followed


def test_aux_of_a_view_makes_the_viewed_tensor_tracked() -> None:
    buffer = torch.zeros(4, 3)
    av.aux(buffer[2:], source="aux-1")
    assert isinstance(buffer, av.TaggedTensor)
    assert av.label_of(buffer[:2]).is_empty  # the other rows keep their own (empty) label
    assert av.label_of(buffer.sum(0)) is A


def test_aux_of_a_leaf_that_requires_grad_keeps_it_a_leaf_with_its_gradient() -> None:
    w = torch.randn(3, requires_grad=True)
    av.aux(w, source="aux-1")
    assert w.is_leaf and w.requires_grad and isinstance(w, av.AuxData)
    (w * 2.0).sum().backward()
    assert w.grad is not None and torch.equal(plain_values(w.grad), torch.full((3,), 2.0))


def test_primary_leaves_the_tensor_it_tags_plain() -> None:
    x = torch.randn(4, 3)
    returned = av.primary(x, source="real-env")
    assert type(x) is torch.Tensor and returned is not x and av.label_of(x) is P


def test_world_model_trained_on_the_tagged_object_is_refused() -> None:
    features = torch.randn(4, 3)
    av.aux(features, source="aux-1")  # the returned tensor is not kept
    wm = torch.nn.Linear(3, 2)
    opt = av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1), names=wm)
    wm(features * 0.5).pow(2).mean().backward()
    before = [p.detach().clone() for p in wm.parameters()]
    with pytest.raises(av.IsolationViolation):
        opt.step()
    assert all(torch.equal(b, p.detach()) for b, p in zip(before, wm.parameters(), strict=True))


@pytest.fixture(scope="module")
def user_operator_library() -> Any:
    """A user's own operator (``torch.library``) that writes its first argument in place."""
    library = torch.library.Library("amal_user_ops", "DEF")
    library.define("scale_into(Tensor(a!) out, Tensor x) -> ()")

    def scale_into(out: torch.Tensor, x: torch.Tensor) -> None:
        out.copy_(x * 2)

    library.impl("scale_into", scale_into, "CompositeExplicitAutograd")
    yield torch.ops.amal_user_ops.scale_into
    del library  # unregisters the operator


def test_a_refused_user_operator_is_named_by_its_own_namespace(user_operator_library: Any) -> None:
    world_model = torch.nn.Linear(3, 3)
    av.GatedOptimizer(torch.optim.SGD(world_model.parameters(), lr=0.1), names=world_model)
    before = world_model.bias.detach().clone()
    with pytest.raises(av.IsolationViolation) as refused, torch.no_grad():
        user_operator_library(world_model.bias, auxd(3))
    message = str(refused.value)
    assert message.startswith("refused amal_user_ops.scale_into at "), message
    assert "aten." not in message, message
    assert torch.equal(world_model.bias.detach(), before)
    # On primary data the same operator writes, as without the library.
    with torch.no_grad():
        user_operator_library(world_model.bias, prim(3))
    assert not torch.equal(world_model.bias.detach(), before)


# -- training patterns of users' code: selection by priorities, activation checkpointing, parametrizations


def _world_model(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))


def _select(kind: str, scores: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if kind == "multinomial":
        return torch.multinomial(scores.abs() + 1e-3, 8, replacement=True, generator=generator)
    if kind == "topk":
        return torch.topk(scores, 8).indices
    if kind == "argsort":
        return torch.argsort(scores)[:8]
    return scores > 0  # a boolean mask


@pytest.mark.parametrize("kind", ["multinomial", "topk", "argsort", "mask"])
def test_primary_rows_selected_by_auxiliary_scores_are_refused(kind: str) -> None:
    """Prioritised replay with priorities from a critic of auxiliary data: every row is primary, which rows
    train the world model is not."""
    replay = prim(32, 4)
    world_model = _world_model()
    gate = av.GatedOptimizer(torch.optim.Adam(world_model.parameters()), names=world_model)
    before = [p.detach().clone() for p in world_model.parameters()]
    batch = replay[_select(kind, auxd(32), torch.Generator().manual_seed(0))]
    assert isinstance(batch, av.AuxData)
    F.mse_loss(world_model(batch), batch).backward()
    with pytest.raises(av.IsolationViolation, match="aux:aux-1"):
        gate.step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(world_model.parameters(), before, strict=True))


@pytest.mark.parametrize("kind", ["multinomial", "topk", "argsort", "mask"])
def test_primary_rows_selected_by_primary_scores_train_as_without_the_library(kind: str) -> None:
    values = torch.randn(32, 4)
    scores = torch.randn(32)

    def train(tagged: bool) -> list[torch.Tensor]:
        world_model = _world_model()
        inner = torch.optim.Adam(world_model.parameters())
        optimizer = av.GatedOptimizer(inner, names=world_model) if tagged else inner
        replay = av.primary(values.clone(), source="real-env") if tagged else values.clone()
        s = av.primary(scores.clone(), source="real-env") if tagged else scores.clone()
        generator = torch.Generator().manual_seed(0)
        for _ in range(3):
            batch = replay[_select(kind, s, generator)]
            optimizer.zero_grad()
            F.mse_loss(world_model(batch), batch).backward()
            optimizer.step()
        return [p.detach().clone() for p in world_model.parameters()]

    for gated, plain in zip(train(True), train(False), strict=True):
        assert torch.equal(gated, plain)


@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("where", ["whole model", "inside forward"])
def test_activation_checkpointing_on_auxiliary_data_is_refused(use_reentrant: bool, where: str) -> None:
    """``torch.utils.checkpoint`` runs the forward again inside backward; the recomputation is tracked too."""
    world_model = _world_model()
    gate = av.GatedOptimizer(torch.optim.Adam(world_model.parameters()), names=world_model)
    x = auxd(16, 4).requires_grad_(use_reentrant)  # the reentrant form needs an input that requires grad
    if where == "whole model":
        out = checkpoint(world_model, x, use_reentrant=use_reentrant)
    else:
        hidden = checkpoint(lambda v: world_model[1](world_model[0](v)), x, use_reentrant=use_reentrant)
        out = world_model[2](hidden)
    F.mse_loss(out, prim(16, 4)).backward()
    with pytest.raises(av.IsolationViolation, match="aux:aux-1"):
        gate.step()


def _trains_as_without_the_library(
    make: Callable[[], torch.nn.Module], forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
) -> None:
    """Three Adam steps of ``mse(forward(model, x), y)``, tagged and gated against plain: bit-identical."""
    values, targets = torch.randn(16, 4), torch.randn(16, 4)
    results = []
    for tagged in (True, False):
        world_model = make()
        inner = torch.optim.Adam(world_model.parameters())
        optimizer = av.GatedOptimizer(inner, names=world_model) if tagged else inner
        x = av.primary(values.clone(), source="real-env") if tagged else values.clone()
        y = av.primary(targets.clone(), source="real-env") if tagged else targets.clone()
        for _ in range(3):
            optimizer.zero_grad()
            F.mse_loss(forward(world_model, x), y).backward()
            optimizer.step()
        results.append([p.detach().clone() for p in world_model.parameters()])
    for gated, plain in zip(*results, strict=True):
        assert torch.equal(gated, plain)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_activation_checkpointing_on_primary_data_trains_as_without_the_library(use_reentrant: bool) -> None:
    def forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = checkpoint(model, x.requires_grad_(use_reentrant), use_reentrant=use_reentrant)
        return out

    _trains_as_without_the_library(_world_model, forward)


def test_parametrized_weights_trained_on_auxiliary_data_are_refused_and_on_primary_as_without() -> None:
    """``weight_norm`` computes the weight in forward from parameters of a parametrization submodule."""

    def make() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(4, 8)),
            torch.nn.Tanh(),
            torch.nn.Linear(8, 4),
        )

    world_model = make()
    gate = av.GatedOptimizer(torch.optim.Adam(world_model.parameters()), names=world_model)
    F.mse_loss(world_model(auxd(16, 4)), prim(16, 4)).backward()
    with pytest.raises(av.IsolationViolation, match="original0"):
        gate.step()
    _trains_as_without_the_library(make, lambda model, x: model(x))
