"""GatedOptimizer: leaks refused before anything changes (point 2), no false alarms (point 3)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

import amal_verified as av


class WorldModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
        self.gru = torch.nn.GRU(8, 8, batch_first=True)
        self.decoder = torch.nn.Linear(8, 4)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(self.encoder(obs))
        out: torch.Tensor = self.decoder(h)
        return out


class Policy(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder if encoder is not None else torch.nn.Sequential(torch.nn.Linear(4, 8))
        self.head = torch.nn.Linear(8, 2)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.encoder(obs))
        return out


def make(seed: int = 0) -> tuple[WorldModel, av.GatedOptimizer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    wm = WorldModel()
    opt = av.GatedOptimizer(torch.optim.Adam(wm.parameters(), lr=1e-2), names=wm)
    g = torch.Generator().manual_seed(seed)
    p = av.primary(torch.randn(3, 5, 4, generator=g), source="real-env")
    a = av.aux(torch.randn(3, 5, 4, generator=g), source="aux-3")
    return wm, opt, p, a


def snapshot(module: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[list[torch.Tensor], object]:
    return [t.detach().clone() for t in module.state_dict().values()], copy.deepcopy(opt.state_dict())


def assert_unchanged(
    module: torch.nn.Module, opt: torch.optim.Optimizer, snap: tuple[list[torch.Tensor], object]
) -> None:
    values, opt_state = snap
    assert all(torch.equal(a, b) for a, b in zip(values, module.state_dict().values(), strict=True))
    assert str(opt.state_dict()) == str(opt_state)


def refused(step: Callable[[], object]) -> av.IsolationViolation:
    with pytest.raises(av.IsolationViolation) as info:
        step()
    return info.value


# -- point 2: leaks ---------------------------------------------------------------


def test_clean_step_changes_parameters() -> None:
    wm, opt, p, _ = make()
    before = snapshot(wm, opt)
    F.mse_loss(wm(p), p).backward()
    opt.step()
    assert not all(torch.equal(a, b) for a, b in zip(before[0], wm.state_dict().values(), strict=True))


def test_aux_as_target_refused_before_any_change_and_recoverable() -> None:
    wm, opt, p, a = make()
    F.mse_loss(wm(p), p).backward()
    opt.step()  # optimizer state exists, so "unchanged" covers it too
    opt.zero_grad()
    snap = snapshot(wm, opt)
    F.mse_loss(wm(p), a).backward()
    err = refused(opt.step)
    assert_unchanged(wm, opt, snap)
    assert "decoder.weight" in err.parameters and "encoder.0.weight" in err.parameters
    assert [str(s) for s in err.sources] == ["aux:aux-3"]
    assert err.operation is not None and "test_gate.py" in err.operation
    message = str(err)
    assert "aux:aux-3" in message and "decoder.weight" in message
    assert "Nothing was changed" in message and "What to do" in message
    # After a refusal: zero_grad and a clean step work again.
    opt.zero_grad()
    F.mse_loss(wm(p), p).backward()
    opt.step()


def test_mixed_batch_refused() -> None:
    wm, opt, p, a = make()
    batch = torch.cat([p, a])
    F.mse_loss(wm(batch), batch).backward()
    err = refused(opt.step)
    # The batch's rows carry different labels, so the model runs operation by operation and the
    # first call on the mixed rows' join is named, at the user's line.
    assert err.operation is not None and "called on data labelled" in err.operation
    assert "test_gate.py" in err.operation


def test_aux_weighted_loss_refused() -> None:
    wm, opt, p, a = make()
    weight = a.abs().mean()
    (weight * F.mse_loss(wm(p), p)).backward()
    refused(opt.step)


def test_global_gradient_clipping_over_both_models_refused() -> None:
    wm, opt, p, a = make()
    policy = Policy()
    loss = F.mse_loss(wm(p), p) + policy(a).pow(2).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([*wm.parameters(), *policy.parameters()], max_norm=1e-3)
    err = refused(opt.step)
    assert err.operation is not None and "test_gate.py" in err.operation


@pytest.mark.parametrize("foreach", [True, False])
def test_clipping_refused_for_both_implementations(foreach: bool) -> None:
    wm, opt, p, a = make()
    policy = Policy()
    (F.mse_loss(wm(p), p) + policy(a).pow(2).mean()).backward()
    torch.nn.utils.clip_grad_norm_([*wm.parameters(), *policy.parameters()], 1e-3, foreach=foreach)
    refused(opt.step)


def test_gradient_surgery_with_aux_gradient_refused() -> None:
    wm, opt, p, a = make()
    F.mse_loss(wm(p), p).backward()
    aux_grads = torch.autograd.grad(F.mse_loss(wm(a), a), list(wm.parameters()))
    with torch.no_grad():
        for param, g_aux in zip(wm.parameters(), aux_grads, strict=True):
            assert param.grad is not None
            coef = (param.grad * g_aux).sum() / (g_aux * g_aux).sum().clamp_min(1e-12)
            param.grad.sub_(coef * g_aux)  # PCGrad-style projection
    refused(opt.step)


def test_flattened_gradient_surgery_on_autograd_grad_outputs_refused() -> None:
    """PCGrad as usually written: flatten both gradients, project, write the result into ``.grad``.
    ``autograd.grad`` results are tagged, so the flattened copies keep the auxiliary label."""
    wm, opt, p, a = make()
    params = list(wm.parameters())
    g_aux = torch.autograd.grad(F.mse_loss(wm(a), a), params)
    assert all(isinstance(g, av.TaggedTensor) and av.label_of(g).has_aux for g in g_aux)
    assert av.label_of(g_aux[0].clone()).has_aux
    snap = snapshot(wm, opt)
    g = torch.cat([d.reshape(-1) for d in torch.autograd.grad(F.mse_loss(wm(p), p), params)])
    flat_aux = torch.cat([d.reshape(-1) for d in g_aux])
    g = g - torch.clamp(g @ flat_aux, max=0.0) / flat_aux.pow(2).sum().clamp_min(1e-12) * flat_aux
    for param, piece in zip(params, g.split([q.numel() for q in params]), strict=True):
        param.grad = piece.reshape(param.shape)
    refused(opt.step)
    assert_unchanged(wm, opt, snap)


def test_autograd_grad_on_primary_data_alone_is_accepted() -> None:
    wm, opt, p, _ = make()
    params = list(wm.parameters())
    grads = torch.autograd.grad(F.mse_loss(wm(p), p), params)
    for param, g in zip(params, grads, strict=True):
        param.grad = g.clone()
    opt.step()


def test_shared_encoder_updated_by_plain_policy_optimizer_refused() -> None:
    wm, opt, _, a = make()
    policy = Policy(encoder=wm.encoder)
    policy_opt = torch.optim.SGD(policy.parameters(), lr=0.1)
    snap = snapshot(wm, opt)
    policy(a).pow(2).mean().backward()
    err = refused(policy_opt.step)
    assert_unchanged(wm, opt, snap)
    assert set(err.parameters) == {"encoder.0.weight", "encoder.0.bias"}
    assert "SGD.step()" in str(err) and "GatedOptimizer(Adam)" in str(err)
    # The gated optimizer refuses the same gradients too.
    refused(opt.step)


@pytest.mark.parametrize("read", ["learning rate", "state"])
def test_another_optimizer_is_refused_what_the_gate_refuses(read: str) -> None:
    """A plain optimizer over protected parameters is checked like the gate: a tensor learning rate
    computed from auxiliary data, or auxiliary state loaded into it, is refused before it steps
    (SGD reads a tensor learning rate as a Python number, where no label would follow it)."""
    wm, opt, _, a = make()
    snap = snapshot(wm, opt)
    params = list(wm.decoder.parameters())
    if read == "learning rate":
        other = torch.optim.SGD(params, lr=0.1)
        other.param_groups[0]["lr"] = (a.mean() * 0.0 + 0.1).reshape(())  # a schedule's tensor
    else:
        other = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        other.load_state_dict(
            {
                "state": {0: {"momentum_buffer": a.mean() + torch.zeros_like(params[0])}},
                "param_groups": other.state_dict()["param_groups"],
            }
        )
    for p in params:
        p.grad = torch.ones_like(p)
    err = refused(other.step)
    assert ("hyperparameter 'lr'" if read == "learning rate" else "state['momentum_buffer']") in str(err)
    assert_unchanged(wm, opt, snap)


@pytest.mark.parametrize("read", ["state entry", "plain state entry", "tensor betas", "found_inf"])
def test_every_read_of_the_step_is_checked_before_it_runs(read: str) -> None:
    """What the step reads besides the gradients -- an optimizer state entry replaced in the state
    dict, a tensor hyperparameter inside a tuple, the ``GradScaler`` flag -- is refused by the check,
    named, before the wrapped optimizer changes anything (a later write would be refused only
    after state was updated)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    g = torch.Generator().manual_seed(0)
    x = av.primary(torch.randn(8, 4, generator=g), source="real-env")
    y = av.primary(torch.randn(8, 3, generator=g), source="real-env")
    aux_value = av.aux(torch.randn(3, generator=g), source="aux-3")
    if read == "tensor betas":
        beta1 = (aux_value.mean() * 0.0 + 0.9).reshape(())
        with pytest.warns(av.IsolationWarning):  # Adam validates betas with a Python comparison
            inner = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(beta1, torch.tensor(0.999)))
    else:
        inner = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt = av.GatedOptimizer(inner, names=model)
    if read in ("state entry", "plain state entry"):
        F.mse_loss(model(x), y).backward()
        opt.step()
        entry = aux_value * 0.0
        # a plain alias of auxiliary memory: what a copy that lost its tracked type still is
        opt.state[model.bias]["exp_avg"] = entry if read == "state entry" else entry.elem
    elif read == "found_inf":
        opt.found_inf = aux_value.sum() * 0.0  # an inf flag computed from auxiliary gradients
    opt.zero_grad()
    F.mse_loss(model(x), y).backward()
    params = [p.detach().clone() for p in model.parameters()]
    state = [(k, v.detach().clone()) for entries in opt.state.values() for k, v in entries.items()]
    err = refused(opt.step)
    expected = {
        "state entry": "bias state['exp_avg']",
        "plain state entry": "bias state['exp_avg']",
        "tensor betas": "hyperparameter 'betas'",
        "found_inf": "GradScaler's found_inf",
    }[read]
    assert expected in str(err)
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))
    after = [(k, v) for entries in opt.state.values() for k, v in entries.items()]
    assert len(after) == len(state)
    with av.declassify(reason="the test compares the state's values"):
        assert all(k == k2 and torch.equal(v, v2) for (k, v), (k2, v2) in zip(state, after, strict=True))


@pytest.mark.parametrize("rows", ["primary", "auxiliary"])
def test_a_gradient_viewing_rows_of_a_concatenation_is_judged_by_its_rows(rows: str) -> None:
    """A gradient set from one side of ``torch.cat([primary, aux])`` carries the label of the rows
    it views: the auxiliary side is refused, the primary side steps."""
    model = torch.nn.Linear(4, 3)
    opt = av.GatedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), names=model)
    both = torch.cat([av.primary(torch.ones(3), source="real-env"), av.aux(torch.ones(3), source="aux-3")])
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    model.bias.grad = both[:3] if rows == "primary" else both[3:]
    before = model.bias.detach().clone()
    if rows == "primary":
        opt.step()
        assert torch.equal(model.bias.detach(), before - 0.1)
    else:
        err = refused(opt.step)
        assert "bias" in str(err)
        assert torch.equal(model.bias.detach(), before)


def test_other_code_paths_writing_protected_parameters_refused() -> None:
    wm, opt, _, a = make()
    snap = snapshot(wm, opt)
    with torch.no_grad():
        refused(lambda: wm.decoder.bias.add_(a[0, 0]))
        refused(lambda: wm.decoder.bias.data.copy_(a[0, 0]))
        refused(lambda: wm.decoder.weight.mul_(a.mean()))
    assert_unchanged(wm, opt, snap)


def test_data_swapped_for_aux_memory_refused_at_the_assignment() -> None:
    wm, opt, p, _ = make()
    before = wm.decoder.bias.detach().clone()
    aux_values = torch.randn(4)
    av.aux(aux_values, source="aux-3")
    err = refused(lambda: setattr(wm.decoder.bias, "data", aux_values))
    assert "decoder.bias" in err.parameters
    assert torch.equal(wm.decoder.bias.detach(), before)
    F.mse_loss(wm(p), p).backward()
    opt.step()


def test_data_of_a_protected_plain_tensor_swapped_for_aux_memory_refused_at_step() -> None:
    """Only ``nn.Parameter.data`` is guarded at the assignment; a protected plain tensor (a learnt
    temperature) whose memory was swapped is refused at the next gated step."""
    log_alpha = torch.zeros(1, requires_grad=True)
    opt = av.GatedOptimizer(torch.optim.Adam([log_alpha], lr=1e-2), names={"log_alpha": log_alpha})
    log_alpha.data = av.aux(torch.ones(1), source="aux-3")
    (log_alpha * av.primary(torch.ones(1))).sum().backward()
    err = refused(opt.step)
    assert "log_alpha" in err.parameters


def test_closure_gradients_are_checked_before_use() -> None:
    torch.manual_seed(0)
    wm = torch.nn.Linear(4, 4)
    opt = av.GatedOptimizer(torch.optim.LBFGS(wm.parameters(), lr=0.1, max_iter=3))
    a = av.aux(torch.randn(5, 4), source="aux-3")
    before = [t.clone() for t in wm.parameters()]

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.mse_loss(wm(a), a)
        loss.backward()
        return loss

    refused(lambda: opt.step(closure))
    assert all(torch.equal(x, y) for x, y in zip(before, wm.parameters(), strict=True))


# -- point 3: precision -------------------------------------------------------------


def test_one_backward_over_disjoint_losses_is_accepted() -> None:
    wm, opt, p, a = make()
    policy = Policy()
    policy_opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    (F.mse_loss(wm(p), p) + policy(a).pow(2).mean()).backward()
    opt.step()
    policy_opt.step()


@pytest.mark.parametrize("mode", ["no_grad", "detach"])
def test_world_model_features_for_aux_trained_policy_are_accepted(mode: str) -> None:
    wm, opt, p, a = make()
    head = torch.nn.Linear(4, 1)
    head_opt = torch.optim.SGD(head.parameters(), lr=0.1)
    if mode == "no_grad":
        with torch.no_grad():
            features = wm(a)
    else:
        features = wm(a).detach()
    (head(features).pow(2).mean() + F.mse_loss(wm(p), p)).backward()
    opt.step()
    head_opt.step()


def test_regulariser_on_parameters_is_accepted() -> None:
    wm, opt, p, _ = make()
    l2 = sum(param.pow(2).sum() for param in wm.parameters())
    (F.mse_loss(wm(p), p) + 1e-3 * l2).backward()
    opt.step()


def test_clipping_the_world_model_alone_is_accepted() -> None:
    wm, opt, p, a = make()
    policy = Policy()
    (F.mse_loss(wm(p), p) + policy(a).pow(2).mean()).backward()
    torch.nn.utils.clip_grad_norm_(wm.parameters(), 1e-3)
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1e-3)
    opt.step()


def test_policy_on_primary_and_aux_while_world_model_untouched() -> None:
    wm, opt, p, a = make()
    policy = Policy()
    policy_opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    policy(torch.cat([p, a])).pow(2).mean().backward()
    policy_opt.step()
    F.mse_loss(wm(p), p).backward()
    opt.step()


# -- the wrapper: Opacus-style proxying and arithmetic ------------------------------------


def test_gated_training_is_bit_identical_to_plain() -> None:
    def train(gated: bool) -> list[torch.Tensor]:
        torch.manual_seed(1)
        wm = WorldModel()
        inner = torch.optim.Adam(wm.parameters(), lr=1e-2)
        opt: torch.optim.Optimizer = av.GatedOptimizer(inner) if gated else inner
        g = torch.Generator().manual_seed(2)
        for _ in range(3):
            x = torch.randn(3, 5, 4, generator=g)
            if gated:
                x = av.primary(x)
            F.mse_loss(wm(x), x).backward()
            torch.nn.utils.clip_grad_norm_(wm.parameters(), 0.5)
            opt.step()
            opt.zero_grad()
        return [t.detach().clone() for t in wm.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(train(False), train(True), strict=True))


def test_proxies_param_groups_state_and_state_dict() -> None:
    wm, opt, p, _ = make()
    inner = opt.original_optimizer
    assert opt.param_groups is inner.param_groups
    assert opt.defaults is inner.defaults
    F.mse_loss(wm(p), p).backward()
    opt.step()
    assert opt.state is inner.state and len(opt.state) == len(list(wm.parameters()))
    saved = opt.state_dict()
    fresh = av.GatedOptimizer(torch.optim.Adam(wm.parameters(), lr=1e-2))
    fresh.load_state_dict(saved)
    assert str(fresh.state_dict()) == str(saved)
    opt.param_groups[0]["lr"] = 0.5
    assert inner.param_groups[0]["lr"] == 0.5
    assert isinstance(opt, torch.optim.Optimizer)
    assert "GatedOptimizer" in repr(opt)


@pytest.mark.parametrize("foreach", [False, True])
def test_zero_grad_in_place_clears_labels(foreach: bool) -> None:
    torch.manual_seed(0)
    wm = WorldModel()
    opt = av.GatedOptimizer(torch.optim.Adam(wm.parameters(), lr=1e-2, foreach=foreach))
    p = av.primary(torch.randn(3, 5, 4))
    a = av.aux(torch.randn(3, 5, 4), source="aux-3")
    F.mse_loss(wm(p), a).backward()
    refused(opt.step)
    opt.zero_grad(set_to_none=False)
    assert all(av.label_of(q.grad).is_empty for q in wm.parameters() if q.grad is not None)
    F.mse_loss(wm(p), p).backward()
    opt.step()


def test_add_param_group_protects_new_parameters() -> None:
    _, opt, _, a = make()
    extra = torch.nn.Linear(4, 4)
    opt.add_param_group({"params": list(extra.parameters())})
    extra(a).pow(2).sum().backward()
    err = refused(opt.step)
    assert len(err.parameters) == 2


def test_parameters_added_to_the_wrapped_optimizer_itself_are_named_in_refusals() -> None:
    _, opt, _, a = make()
    extra = torch.nn.Linear(4, 4)
    opt.original_optimizer.add_param_group({"params": list(extra.parameters())})
    extra(a).pow(2).sum().backward()
    err = refused(opt.step)
    assert err.parameters == (
        "param_groups[1]['params'][0] (shape (4, 4))",
        "param_groups[1]['params'][1] (shape (4,))",
    )


def test_lr_scheduler_works_with_gated_optimizer() -> None:
    wm, opt, p, _ = make()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    F.mse_loss(wm(p), p).backward()
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-3)


def test_named_parameter_optimizers_need_no_names() -> None:
    wm = WorldModel()
    opt = av.GatedOptimizer(torch.optim.Adam(wm.named_parameters(), lr=1e-2))
    a = av.aux(torch.randn(2, 3, 4), source="aux-0")
    wm(a).sum().backward()
    err = refused(opt.step)
    assert "decoder.bias" in err.parameters


def test_wrapping_twice_or_non_optimizer_is_a_clear_error() -> None:
    wm, opt, _, _ = make()
    with pytest.raises(TypeError, match="already gated"):
        av.GatedOptimizer(opt)
    with pytest.raises(Exception, match="optimizer"):
        av.GatedOptimizer(wm)  # type: ignore[arg-type]


def test_step_hooks_of_the_wrapper_run() -> None:
    wm, opt, p, _ = make()
    calls: list[str] = []
    opt.register_step_pre_hook(lambda *_: calls.append("pre"))
    opt.register_step_post_hook(lambda *_: calls.append("post"))
    F.mse_loss(wm(p), p).backward()
    opt.step()
    assert calls == ["pre", "post"]


# -- precision of module-boundary tracking ---------------------------------------------


class TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.world = torch.nn.Linear(4, 4)
        self.value = torch.nn.Linear(4, 1)

    def forward(self, obs: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.world(obs), self.value(context)


def two_heads() -> tuple[TwoHeads, av.GatedOptimizer]:
    """Only the world head is protected."""
    torch.manual_seed(0)
    heads = TwoHeads()
    return heads, av.GatedOptimizer(torch.optim.SGD(heads.world.parameters(), lr=0.1))


@pytest.mark.parametrize("order", ["world-first", "value-first"])
def test_each_output_attributes_only_its_own_gradient(order: str) -> None:
    """A head whose loss is clean is accepted even if a sibling output's loss used aux data."""
    heads, opt = two_heads()
    p = av.primary(torch.randn(5, 4))
    a = av.aux(torch.randn(5, 1), source="aux-1")
    world_out, value_out = heads(p, p)
    world_loss, value_loss = F.mse_loss(world_out, p), F.mse_loss(value_out, a)
    total = world_loss + value_loss if order == "world-first" else value_loss + world_loss
    total.backward()
    assert av.label_of(heads.value.weight.grad).has_aux
    assert not av.label_of(heads.world.weight.grad).has_aux
    opt.step()


def test_inputs_with_different_labels_are_tracked_exactly() -> None:
    """world(obs) and value(context) inside one call: only the head that read aux data is tainted."""
    heads, opt = two_heads()
    p = av.primary(torch.randn(5, 4))
    a = av.aux(torch.randn(5, 4), source="aux-1")
    world_out, value_out = heads(p, a)
    assert av.label_of(world_out).is_primary_only
    assert av.label_of(value_out).has_aux
    (F.mse_loss(world_out, p) + value_out.pow(2).mean()).backward()
    assert av.label_of(heads.world.weight.grad).is_primary_only
    assert av.label_of(heads.value.weight.grad).has_aux
    opt.step()


@pytest.mark.parametrize("make", [torch.optim.SparseAdam, torch.optim.Adagrad], ids=["SparseAdam", "Adagrad"])
def test_sparse_gradients_step_as_without_the_gate(make: Callable[..., torch.optim.Optimizer]) -> None:
    """Sparse gradients (an embedding looked up with primary indices) are labelled and stepped
    exactly as plain PyTorch steps them; the label store has no dense memory to read for them."""
    torch.manual_seed(0)
    plain_table = torch.nn.Embedding(16, 4, sparse=True)
    gated_table = copy.deepcopy(plain_table)
    plain_opt = make(plain_table.parameters(), lr=0.1)
    gated_opt = av.GatedOptimizer(make(gated_table.parameters(), lr=0.1), names=gated_table)
    for step in range(3):
        indices = torch.tensor([step, 3, 7, 3])
        for table, opt, idx in (
            (plain_table, plain_opt, indices),
            (gated_table, gated_opt, av.primary(indices.clone(), source="real-env")),
        ):
            opt.zero_grad()
            table(idx).square().sum().backward()
            opt.step()
    assert gated_table.weight.grad is not None and gated_table.weight.grad.is_sparse
    assert torch.equal(gated_table.weight.detach(), plain_table.weight.detach())
    assert av.label_of(gated_table.weight).is_primary_only


@pytest.mark.parametrize("follow", [True, False])
def test_the_gate_decides_alike_whether_primary_data_are_followed_or_labelled_in_memory(
    follow: bool,
) -> None:
    """``av.primary(x, follow=False)`` leaves the batch plain: the gated update is plain PyTorch's,
    bit for bit, and auxiliary data mixed into it are refused as with followed primary data."""

    def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(8, 3, generator=g), torch.randn(8, 2, generator=g)

    def update(
        model: torch.nn.Module, opt: torch.optim.Optimizer, obs: torch.Tensor, act: torch.Tensor
    ) -> None:
        opt.zero_grad()
        F.mse_loss(model(torch.cat([obs, act], 1)), torch.zeros(len(obs), 4)).backward()
        opt.step()

    torch.manual_seed(0)
    plain_model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    gated_model = copy.deepcopy(plain_model)
    plain_opt = torch.optim.Adam(plain_model.parameters(), lr=1e-2)
    gated = av.GatedOptimizer(torch.optim.Adam(gated_model.parameters(), lr=1e-2), names=gated_model)
    sim = av.aux(torch.randn(8, 3), source="aux-0")
    for seed in range(3):
        update(plain_model, plain_opt, *batch(seed))
        obs, act = (av.primary(t, source="real-env", follow=follow) for t in batch(seed))
        update(gated_model, gated, obs, act)
    assert all(  # the gated model holds no auxiliary label: comparing it is no escape
        torch.equal(a, b)
        for a, b in zip(plain_model.state_dict().values(), gated_model.state_dict().values(), strict=True)
    )

    obs, act = (av.primary(t, source="real-env", follow=follow) for t in batch(3))
    snap = snapshot(gated_model, gated)
    with pytest.raises(av.IsolationViolation, match="aux:aux-0"):
        update(gated_model, gated, torch.cat([obs, sim]), torch.cat([act, act]))
    assert_unchanged(gated_model, gated, snap)
