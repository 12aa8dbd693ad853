"""The isolation core: labels on data, followed through PyTorch, and the gate that enforces Theorem 1.

Public modules here: ``labels`` (the lattice), ``errors``, ``tagging`` (``primary``, ``aux``,
``label_of``), ``gate`` (``GatedOptimizer``), ``escapes`` (``declassify`` and recorded escapes),
``buffers`` (replay buffers that keep primary and auxiliary rows apart) and ``reference`` (the
pure-Python specification the properties check the core against).  ``_engine`` is the machinery.

One label, from tagging to a refusal:

1. ``tagging.primary(x, source="real-env")`` or ``tagging.aux(x, source="aux-3")`` builds the label
   with ``labels.Label.of``, switches tracking on (``_engine.global_hooks.ensure_active``), writes
   the label on the memory of ``x`` (``_engine.label_store.write_label``) and returns ``x`` as a
   ``_engine.dispatch.TaggedTensor`` over the same memory (``primary(x, ..., follow=False)`` returns
   ``x`` itself: step 2 then never runs on it, and step 3 reads its label from the memory when the
   module holds protected parameters or labelled state).
2. An operation on tagged data reaches ``TaggedTensor.__torch_dispatch__``: ``_engine.dispatch``
   runs it on plain tensors and labels what it produced with the join of its inputs' labels
   (``_label_of_args``, ``_wrap_fresh``); an in-place or ``out=`` write joins the label into the
   target's memory (``_dispatch_write``) and is refused before it happens if the target is
   protected memory and the label holds an auxiliary source (``_refuse_protected_write``).
3. A module called on tagged data is tracked at its boundary (``_engine.boundary.pre_hook``): the
   call's label is the join of its inputs' and its own state's labels, the module runs as plain
   PyTorch, and ``post_hook`` labels the outputs and hooks them for the backward pass.
4. In the backward pass each output's hook (``boundary._OutputHook``) joins the label of the
   arriving gradient into the call's and hands it to ``_engine.grad_labels.attribute``; a hook on
   each parameter (``grad_labels._BeforeAccumulation``) writes it on the gradient before it is
   accumulated into ``.grad``.
5. ``gate.GatedOptimizer.step`` first runs ``check``: the labels of every gradient, parameter,
   optimizer state and tensor hyperparameter it would read; any auxiliary source is refused with
   ``_engine.refusals.violation`` (an ``errors.IsolationViolation``), and nothing changes.

The other ways in are closed by ``_engine.optimizer_steps`` (any other optimizer stepping a
protected parameter), ``_engine.parameter_data`` (``param.data = value``), ``_engine.transfer``
and the unpickling functions of ``global_hooks`` (labels through ``pickle``, ``torch.save`` and
worker processes) and ``_engine.protection`` (which memory is protected).

Layers, bottom to top, with no import upward: ``labels``, ``errors``, ``escapes``;
``_engine.label_store``, ``origins``, ``protection``, ``refusals``; ``dispatch``; ``grad_labels``,
``transfer``, ``parameter_data``, ``optimizer_steps``; ``boundary``; ``global_hooks``; ``tagging``,
``gate``, ``buffers``.  ``reference`` imports nothing of the package.
"""
