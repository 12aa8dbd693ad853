"""Labels follow every tensor operation that starts from tagged data (issue point 1)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import amal_verified as av
from amal_verified.isolation.labels import Label, SourceKind

P = Label.of(SourceKind.PRIMARY, "real-env")
A = Label.of(SourceKind.AUX, "aux-1")
PA = P | A


def prim(*shape: int) -> torch.Tensor:
    return av.primary(torch.randn(*shape), source="real-env")


def auxd(*shape: int) -> torch.Tensor:
    return av.aux(torch.randn(*shape), source="aux-1")


def test_tagging_gives_named_sources_and_types() -> None:
    p, a = prim(2, 3), auxd(2, 3)
    assert av.label_of(p) is P
    assert av.label_of(a) is A
    assert isinstance(p, av.PrimaryData) and not isinstance(p, av.AuxData)
    assert isinstance(a, av.AuxData) and not isinstance(a, av.PrimaryData)
    assert isinstance(p, torch.Tensor)
    assert av.label_of(torch.zeros(2)).is_empty


def test_forward_ops_propagate_and_join() -> None:
    p, a = prim(4, 3), auxd(4, 3)
    assert av.label_of(p + 1) is P
    assert av.label_of(p * a) is PA
    assert av.label_of(torch.cat([p, a])) is PA
    assert av.label_of(torch.stack([p, p])) is P
    assert av.label_of(torch.where(p > 0, p, a)) is PA
    assert av.label_of(p[1:3]) is P
    assert av.label_of(p[torch.tensor([0, 2])]) is P
    assert av.label_of(p.sum()) is P
    assert av.label_of(a.mean(dim=0)) is A
    assert av.label_of(p.max(dim=1).values) is P
    assert av.label_of(F.mse_loss(p, a)) is PA
    # Composite functions run several operations: auxiliary labels follow every one of them ...
    assert av.label_of(F.cross_entropy(a, torch.tensor([0, 1, 2, 0]))) is A
    # ... primary labels the first (its output is a plain tensor with the label on its memory).
    first = F.log_softmax(p, dim=1)
    assert type(first) is torch.Tensor and av.label_of(first) is P
    assert av.label_of(F.cross_entropy(p, torch.tensor([0, 1, 2, 0]))).is_empty
    mixed = p * a
    assert isinstance(mixed, av.AuxData) and not isinstance(mixed, av.PrimaryData)


def test_plain_tensor_joins_nothing() -> None:
    p = prim(3)
    assert av.label_of(p + torch.ones(3)) is P


def test_module_calls_linear_gru_grucell_conv() -> None:
    lin = torch.nn.Linear(3, 5)
    gru = torch.nn.GRU(3, 4, batch_first=True)
    cell = torch.nn.GRUCell(3, 4)
    conv = torch.nn.Conv1d(3, 2, kernel_size=2)
    p, a = prim(6, 3), auxd(2, 5, 3)
    assert av.label_of(lin(p)) is P
    out, h = gru(a)
    assert av.label_of(out) is A and av.label_of(h) is A
    assert av.label_of(cell(p, torch.zeros(6, 4))) is P
    assert av.label_of(cell(p, av.aux(torch.zeros(6, 4), source="aux-1"))) is PA
    assert av.label_of(conv(av.primary(torch.randn(1, 3, 7)))) is P
    assert av.label_of(F.linear(a[0], lin.weight[:, :3].T.contiguous().T)) is A


def test_detach_clone_to_reshape_views_keep_provenance() -> None:
    p = av.primary(torch.randn(4, 3, requires_grad=True))
    assert av.label_of(p.detach()) is P
    assert av.label_of(p.clone()) is P
    assert av.label_of(p.to(torch.float64)) is P
    assert av.label_of(p.reshape(12)) is P
    assert av.label_of(p.view(3, 4)) is P
    assert av.label_of(p.t()) is P
    assert av.label_of(p.unsqueeze(0).expand(2, 4, 3)) is P
    assert all(av.label_of(chunk) is P for chunk in p.chunk(2))


def test_factory_like_ops_are_unlabelled_but_tracked() -> None:
    """Their values do not depend on the input's; they stay tracked because they are typically filled
    in place next, and a plain buffer filled with aux data would lose the label on its next use."""
    a = auxd(3)
    for made in (torch.ones_like(a), torch.zeros_like(a), torch.empty_like(a), a.new_zeros(2)):
        assert av.label_of(made).is_empty
        assert isinstance(made, av.TaggedTensor)
    buf = a.new_zeros(4)
    buf[:3] = a
    assert av.label_of(buf) is A and av.label_of(buf * 2) is A
    assert type(torch.ones_like(a) + 1) is torch.Tensor  # unlabelled values computed from it are plain


def test_inplace_write_through_view_labels_base() -> None:
    base = prim(4, 3)
    view = base[0:2]
    view.copy_(auxd(2, 3))
    assert av.label_of(base) is PA
    assert av.label_of(view) is A  # copy_ overwrites: those rows no longer hold primary data
    assert av.label_of(base[3]) is P  # rows the write did not touch keep their label
    assert av.label_of(base[1:3]) is PA


def test_aux_rows_written_into_primary_store_by_index_put() -> None:
    store = prim(10, 3)
    store[torch.tensor([1, 2])] = auxd(2, 3)
    assert av.label_of(store).has_aux


def test_inplace_into_plain_tensor_labels_it() -> None:
    running = torch.zeros(3)
    running.mul_(0.9).add_(0.1 * auxd(3))
    assert av.label_of(running) is A
    # ...and whatever later reads it together with primary data is mixed.
    assert av.label_of(prim(3) - running) is PA


def test_whole_overwrite_replaces_label() -> None:
    t = auxd(3).clone()
    t.zero_()
    assert av.label_of(t).is_empty
    t.copy_(prim(3))
    assert av.label_of(t) is P


def test_batchnorm_running_statistics_functional_and_module() -> None:
    rm, rv = torch.zeros(3), torch.ones(3)
    F.batch_norm(auxd(8, 3), rm, rv, training=True)
    assert av.label_of(rm) is A and av.label_of(rv) is A
    # The normalised output of a writing op is labelled too (not only the statistics it wrote).
    out = F.batch_norm(prim(8, 3), torch.zeros(3), torch.ones(3), training=True)
    assert av.label_of(out) is P
    rm2, rv2 = torch.zeros(3), torch.ones(3)
    F.batch_norm(auxd(8, 3), rm2, rv2, training=False)
    assert av.label_of(rm2).is_empty

    bn = torch.nn.BatchNorm1d(3)
    bn(auxd(8, 3))
    assert av.label_of(bn.running_mean).has_aux
    bn.eval()
    assert av.label_of(bn(prim(8, 3))) is PA


def test_dropout_in_train_mode_on_aux_data_does_not_touch_parameters() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5))
    out = net(auxd(4, 3))
    assert av.label_of(out) is A
    assert all(av.label_of(p).is_empty for p in net.parameters())


def test_module_output_containers_are_tagged() -> None:
    class Heads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"mean": self.a(x), "reward": self.b(x)}

    out = Heads()(prim(4, 3))
    assert av.label_of(out["mean"]) is P and av.label_of(out["reward"]) is P


def test_backward_gradients_carry_exactly_their_data() -> None:
    wm, pol = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    av.GatedOptimizer(
        torch.optim.SGD(wm.parameters(), lr=0.1)
    )  # primary labels are followed to protected parameters
    p, a = prim(5, 3), auxd(5, 3)
    loss = F.mse_loss(wm(p), p) + pol(a).pow(2).mean()
    loss.backward()
    assert av.label_of(loss) is PA
    assert av.label_of(wm.weight.grad) is P
    assert av.label_of(pol.weight.grad) is A


def test_aux_target_reaches_gradient() -> None:
    wm = torch.nn.Linear(3, 3)
    F.mse_loss(wm(prim(5, 3)), auxd(5, 3)).backward()
    assert av.label_of(wm.weight.grad) is PA


def test_autograd_grad_results_are_labelled() -> None:
    wm = torch.nn.Linear(3, 3)
    (g,) = torch.autograd.grad(F.mse_loss(wm(prim(5, 3)), auxd(5, 3)), [wm.weight])
    assert av.label_of(g) is PA


def test_gradient_accumulates_labels_across_backward_calls() -> None:
    wm = torch.nn.Linear(3, 1)
    av.GatedOptimizer(torch.optim.SGD(wm.parameters(), lr=0.1))
    wm(prim(2, 3)).sum().backward()
    assert av.label_of(wm.weight.grad) is P
    wm(auxd(2, 3)).sum().backward()
    assert av.label_of(wm.weight.grad) is PA


def test_input_gradients_flow_back_labelled() -> None:
    x = av.aux(torch.randn(4, 3), source="aux-1").requires_grad_()
    lin = torch.nn.Linear(3, 2)
    (lin(x) * prim(4, 2)).sum().backward()
    assert x.grad is not None
    assert av.label_of(x.grad) is PA


def test_closure_tensor_inside_module_gets_call_label() -> None:
    """A tensor created before the call and used inside it receives S ⊔ G in backward."""
    shared = torch.nn.Linear(3, 3)
    features = shared(torch.randn(2, 3))  # plain, with history into `shared`

    class UsesClosure(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x) + features

    UsesClosure()(auxd(2, 3)).sum().backward()
    assert av.label_of(shared.weight.grad).has_aux


def test_parameters_take_the_labels_of_their_updates() -> None:
    """Provenance: a parameter stepped with aux-derived gradients carries that label, becomes tracked
    in place (same object), and what is computed from it alone is labelled."""
    wm = torch.nn.Linear(3, 3)
    weight = wm.weight
    opt = torch.optim.Adam(wm.parameters(), lr=0.1)
    wm(auxd(4, 3)).sum().backward()
    opt.step()
    assert wm.weight is weight and isinstance(weight, torch.nn.Parameter)
    assert all(av.label_of(p) is A for p in wm.parameters())
    assert av.label_of(wm.weight.detach() * 2) is A  # a Polyak average or a flattened copy
    assert av.label_of(torch.nn.utils.parameters_to_vector(wm.parameters())) is A
    assert av.label_of(wm(torch.randn(2, 3))) is A  # calls on plain data too
    # Manual SGD through .data joins the gradient's label as well.
    other = torch.nn.Linear(3, 3)
    other(auxd(4, 3)).sum().backward()
    with torch.no_grad():
        for p in other.parameters():
            assert p.grad is not None
            p.data.add_(p.grad, alpha=-0.1)
    assert all(av.label_of(p) is A for p in other.parameters())


def test_tagged_tensor_repr_and_deepcopy() -> None:
    import copy

    p = prim(2)
    assert "PrimaryData" in repr(p) and "real-env" in repr(p)
    q = copy.deepcopy(p)
    assert av.label_of(q) is P and torch.equal(q, p)


def test_memory_of_dead_parameters_is_labelled_normally() -> None:
    """Regression: a storage address freed by a parameter and reused by data must be labelled.

    Parameter storages are label-neutral; an address-keyed registry that outlived the
    parameter once made freshly allocated data at the same address label-neutral too.
    """
    for _ in range(200):
        lin = torch.nn.Linear(3, 3)
        lin(auxd(2, 3)).sum().backward()
        del lin
        running = torch.zeros(3, 3)
        running.add_(auxd(3, 3))
        assert av.label_of(running) is A


def test_labels_die_with_their_memory() -> None:
    """A label is an attribute of the storage object: freed memory leaves nothing behind, and memory
    allocated again starts unlabelled."""
    import gc
    import weakref

    x = prim(4)
    ref = weakref.ref(x.untyped_storage())
    del x
    gc.collect()
    assert ref() is None
    for _ in range(50):
        assert av.label_of(torch.empty(4)).is_empty


def test_tagging_a_tensor_that_requires_grad_stays_differentiable() -> None:
    x = torch.randn(3, requires_grad=True)
    p = av.primary(x, source="real-env")
    assert p.requires_grad
    again = av.primary(p, source="other-sensor")  # tagging tagged data joins sources
    assert av.label_of(again) is P | Label.of(SourceKind.PRIMARY, "other-sensor")
    (again * 2).sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, torch.full((3,), 2.0))


def test_shape_changing_inplace_ops_keep_tracked_metadata() -> None:
    v = prim(4)
    assert (v @ torch.randn(4, 4)).shape == (4,)
    x = prim(1, 3)
    assert x.squeeze_(0) is x
    assert x.shape == (3,)
    t = auxd(2, 3)
    assert t.resize_(10) is t
    assert t.shape == (10,) and av.label_of(t) is A


def test_recurrent_cells_called_on_differently_labelled_inputs_label_their_output() -> None:
    """``rnn_tanh_cell`` adds the input's term, in C++, into the hidden state's term and goes on from
    that plain intermediate: the module call, run operation by operation, labels its output."""
    for nonlinearity in ("tanh", "relu"):
        cell = torch.nn.RNNCell(3, 4, nonlinearity=nonlinearity)
        assert av.label_of(cell(auxd(2, 3), prim(2, 4))) is PA
        assert av.label_of(cell(auxd(3), torch.zeros(4))).has_aux
        rnn = torch.nn.RNN(3, 4, nonlinearity=nonlinearity)
        out, last = rnn(auxd(5, 3), prim(1, 4))
        assert av.label_of(out) is PA and av.label_of(last) is PA
    cell = torch.nn.RNNCell(3, 4)
    cell(auxd(2, 3), prim(2, 4)).sum().backward()  # the values C++ saved for backward are plain
    assert all(p.grad is not None and av.label_of(p.grad).has_aux for p in cell.parameters())
    assert av.label_of(cell(prim(2, 3), prim(2, 4))) is P  # one label: tracked at the boundary


def test_an_out_target_left_without_elements_carries_the_label_of_what_decided_its_shape() -> None:
    values = prim(4, 3)
    mask = av.aux(torch.zeros(4, 3, dtype=torch.bool), source="aux-1")
    out = av.primary(torch.zeros(5), source="real-env")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: a non-empty out= target is resized
        torch.masked_select(values, mask, out=out)
    assert out.numel() == 0 and av.label_of(out) is PA


def test_tagged_keyword_argument_of_a_module_call_reaches_every_parameter_gradient() -> None:
    """A tagged ``attn_mask`` makes ``nn.MultiheadAttention`` run operation by operation: outputs
    computed from it are tagged inside the call, and what they depend on through the call's plain
    inputs (the query's label) reaches the parameters' gradients all the same."""
    attention = torch.nn.MultiheadAttention(4, 2, add_bias_kv=True)
    query = auxd(3, 1, 4)
    mask = av.aux(torch.zeros(3, 3), source="aux-2")
    both = A | Label.of(SourceKind.AUX, "aux-2")
    out, weights = attention(query, query, query, attn_mask=mask)
    assert av.label_of(out) is both and av.label_of(weights) is both
    out.sum().backward()
    data_dependent = ("in_proj_weight", "in_proj_bias", "bias_k", "bias_v", "out_proj.weight")
    for name, parameter in attention.named_parameters():
        if name in data_dependent:
            assert parameter.grad is not None and A.flows_to(av.label_of(parameter.grad)), name


def test_primary_without_following_labels_the_memory_and_returns_the_tensor_itself() -> None:
    x = torch.randn(4, 3)
    p = av.primary(x, source="real-env", follow=False)
    assert p is x and type(p) is torch.Tensor
    assert av.label_of(p) is P  # the memory holds the label
    assert not isinstance(p, av.PrimaryData)  # the views are of tracked tensors
    assert av.label_of(p * 2).is_empty  # operations on it are not followed
    assert av.label_of(torch.nn.Linear(3, 2)(p)).is_empty  # nor calls of modules that are not gated

    model = torch.nn.Linear(3, 2)  # a gated model called on it reads the label of its memory
    gate = av.GatedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    out = model(p)
    assert av.label_of(out) is P
    out.sum().backward()
    assert model.weight.grad is not None and av.label_of(model.weight.grad) is P
    gate.step()
    assert av.label_of(model.weight) is P

    leaf = torch.randn(3, requires_grad=True)
    assert av.primary(leaf, source="real-env", follow=False) is leaf

    tracked = prim(2, 3)  # a tracked tensor stays tracked, and tagging it again joins sources
    again = av.primary(tracked, source="other-sensor", follow=False)
    assert again is tracked and isinstance(again, av.PrimaryData)
    assert av.label_of(again) is P | Label.of(SourceKind.PRIMARY, "other-sensor")

    rows = torch.randn(6, 3)  # a view: the rows it spans are labelled, as with follow=True
    av.primary(rows[:2], source="real-env", follow=False)
    assert av.label_of(rows[:2]) is P
    assert av.label_of(rows[2:]).is_empty


def test_primary_without_following_refuses_auxiliary_memory_and_changes_nothing() -> None:
    a = auxd(4, 3)
    with pytest.raises(av.TaggingError, match="declassify"):
        av.primary(a.detach(), source="real-env", follow=False)
    assert av.label_of(a) is A
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", av.IsolationWarning)
        with av.declassify(reason="actions executed in the real environment"):
            q = av.primary(a.detach(), source="real-env", follow=False)
    assert av.label_of(q) is P
    with pytest.raises(TypeError, match="follow"):
        av.primary(torch.randn(2), source="real-env", follow=1)  # type: ignore[call-overload]
