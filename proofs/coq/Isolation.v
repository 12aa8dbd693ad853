(** * Theorem 1 (pathwise isolation) for any number of steps

    A small language of labelled tensor programs, closed over an abstract type of
    values [V] and abstract operations [op] (no arithmetic is needed): memory maps
    locations (storages: activations, gradients, parameters, optimizer state) to a
    value and a label.  Every write goes through the rules the core implements:

    - [Input s k dst]: the [k]-th datum of source [s] in the current training step,
      labelled with the single source [s];
    - [Op o srcs dst]: an out-of-place operation, or an in-place write that
      overwrites the whole storage [dst]: the result carries the join of its inputs'
      labels ([op_label]); a label-neutral operation ([neutral o], e.g. [zeros_like])
      carries [bottom];
    - [WritePart o srcs dst]: an in-place write into part of the storage [dst]
      (through any view): the new contents are computed from the old contents and
      the inputs, and the storage's label is the join of both ([inplace_label]);
    - [Step gated o ups extra]: an optimizer step; each pair [(p, g)] of [ups]
      updates parameter [p] from its own value, its gradient [g] and the shared
      locations [extra] (optimizer state, tensor hyperparameters); the parameter's
      new label (its provenance) joins all their labels.  A gated step
      ([gated = true]) changes nothing if any update would read an auxiliary
      source (the gate); otherwise it applies every update.  An ungated step is
      refused only when it would give a protected parameter an auxiliary label
      (the core's global step hook).

    Protected locations (parameters of the world model, their optimizer state and
    buffers) refuse every write whose label has an auxiliary source (the
    dispatcher's protection); a refused command changes nothing.

    Assumed of the implementation (and nothing else): each operation's label rule
    above, the gate's check, the protection check, and that a label-neutral
    operation's result does not depend on its inputs' values
    ([neutral_ignores_values]).  Programs are straight-line per training step
    (any length, any commands, any sources: any number of auxiliary agents); the
    program does not branch on data values. *)

From Coq Require Import Bool List Arith.
From AmalVerified Require Import Labels.
Import ListNotations.

Section Language.

Variable V : Type.
Variable op : Type.
Variable eval_op : op -> list V -> V.
Variable neutral : op -> bool.
Hypothesis neutral_ignores_values :
  forall o vs ws, neutral o = true -> length vs = length ws -> eval_op o vs = eval_op o ws.

(** A default value, used only to fill in the auxiliary part of a replayed stream. *)
Variable vdefault : V.

Definition loc := nat.

Record cell := Cell { val : V; lab : label }.

Definition mem := loc -> cell.

Variable protected : loc -> bool.

Definition upd (m : mem) (l : loc) (c : cell) : mem :=
  fun l' => if Nat.eqb l' l then c else m l'.

Inductive cmd :=
| Input (s : source) (k : nat) (dst : loc)
| Op (o : op) (srcs : list loc) (dst : loc)
| WritePart (o : op) (srcs : list loc) (dst : loc)
| Step (gated : bool) (o : op) (ups : list (loc * loc)) (extra : list loc).

(** The data of one training step: the [k]-th datum of each source. *)
Definition stepdata := source -> nat -> V.

Definition vals (m : mem) (ls : list loc) : list V := map (fun l => val (m l)) ls.
Definition labs (m : mem) (ls : list loc) : list label := map (fun l => lab (m l)) ls.

(** A write of [c] into [dst], refused (memory unchanged) when [dst] is protected and
    [c]'s label has an auxiliary source. *)
Definition write (m : mem) (dst : loc) (c : cell) : mem :=
  if protected dst && has_aux (lab c) then m else upd m dst c.

Definition step_cell (m : mem) (o : op) (extra : list loc) (pg : loc * loc) : cell :=
  let (p, g) := pg in
  Cell (eval_op o (val (m p) :: val (m g) :: vals m extra))
       (join_all (lab (m p) :: lab (m g) :: labs m extra)).

Definition step_refused (m : mem) (gated : bool) (o : op) (ups : list (loc * loc))
    (extra : list loc) : bool :=
  existsb (fun pg => (gated || protected (fst pg)) && has_aux (lab (step_cell m o extra pg))) ups.

Definition step_apply (m : mem) (o : op) (ups : list (loc * loc)) (extra : list loc) : mem :=
  fold_left (fun acc pg => upd acc (fst pg) (step_cell m o extra pg)) ups m.

Definition exec_cmd (d : stepdata) (m : mem) (c : cmd) : mem :=
  match c with
  | Input s k dst => write m dst (Cell (d s k) [s])
  | Op o srcs dst =>
      write m dst (Cell (eval_op o (vals m srcs)) (op_label (labs m srcs) (neutral o)))
  | WritePart o srcs dst =>
      write m dst (Cell (eval_op o (val (m dst) :: vals m srcs))
                        (inplace_label (lab (m dst)) (labs m srcs) false))
  | Step gated o ups extra =>
      if step_refused m gated o ups extra then m else step_apply m o ups extra
  end.

Definition exec (d : stepdata) (m : mem) (p : list cmd) : mem := fold_left (exec_cmd d) p m.

(** Training: at step [t] the program [body t] runs on the data [data t]. *)
Variable body : nat -> list cmd.
Variable init : mem.

Fixpoint run (data : nat -> stepdata) (n : nat) : mem :=
  match n with
  | 0 => init
  | S t => exec (data t) (run data t) (body t)
  end.

(** ** Low equivalence: equal labels everywhere, equal values wherever the label has no
    auxiliary source. *)

Definition cell_loweq (c1 c2 : cell) : Prop :=
  lab c1 = lab c2 /\ (has_aux (lab c1) = false -> val c1 = val c2).

Definition loweq (m1 m2 : mem) : Prop := forall l, cell_loweq (m1 l) (m2 l).

(** Two step data agree on every primary source (and may differ arbitrarily on auxiliary ones). *)
Definition data_loweq (d1 d2 : stepdata) : Prop :=
  forall s k, skind s = Primary -> d1 s k = d2 s k.

(** Protected locations carry no auxiliary source. *)
Definition clean (m : mem) : Prop := forall l, protected l = true -> has_aux (lab (m l)) = false.

Lemma loweq_labs : forall m1 m2 ls, loweq m1 m2 -> labs m1 ls = labs m2 ls.
Proof.
  intros m1 m2 ls H; unfold labs; apply map_ext_in; intros l _; apply H.
Qed.

Lemma loweq_vals : forall m1 m2 ls, loweq m1 m2 ->
  has_aux (join_all (labs m1 ls)) = false -> vals m1 ls = vals m2 ls.
Proof.
  intros m1 m2 ls H Ha; unfold vals; apply map_ext_in; intros l Hl.
  apply H; apply has_aux_join_all_false with (l := lab (m1 l)) in Ha; auto.
  unfold labs; apply in_map_iff; eauto.
Qed.

Lemma upd_loweq : forall m1 m2 l c1 c2,
  loweq m1 m2 -> cell_loweq c1 c2 -> loweq (upd m1 l c1) (upd m2 l c2).
Proof.
  intros m1 m2 l c1 c2 H Hc l'; unfold upd; destruct (Nat.eqb l' l); auto.
Qed.

Lemma write_loweq : forall m1 m2 dst c1 c2,
  loweq m1 m2 -> cell_loweq c1 c2 -> loweq (write m1 dst c1) (write m2 dst c2).
Proof.
  intros m1 m2 dst c1 c2 H Hc; unfold write.
  assert (Hl : lab c1 = lab c2) by apply Hc.
  rewrite <- Hl.
  destruct (protected dst && has_aux (lab c1)); [exact H | apply upd_loweq; assumption].
Qed.

Lemma step_cell_loweq : forall m1 m2 o extra pg,
  loweq m1 m2 -> cell_loweq (step_cell m1 o extra pg) (step_cell m2 o extra pg).
Proof.
  intros m1 m2 o extra [p g] H; simpl.
  destruct (H p) as [Hp Hpv], (H g) as [Hg Hgv].
  rewrite Hp, Hg, (loweq_labs m1 m2 extra H); split; [reflexivity|].
  intros Ha; simpl in Ha.
  rewrite <- Hp, <- Hg, <- (loweq_labs m1 m2 extra H) in Ha.
  apply has_aux_join_false in Ha as [Ha1 Ha]; apply has_aux_join_false in Ha as [Ha2 Ha3].
  rewrite (Hpv Ha1), (Hgv Ha2), (loweq_vals m1 m2 extra H Ha3); reflexivity.
Qed.

Lemma step_refused_loweq : forall m1 m2 gated o ups extra, loweq m1 m2 ->
  step_refused m1 gated o ups extra = step_refused m2 gated o ups extra.
Proof.
  intros m1 m2 gated o ups extra H; unfold step_refused.
  induction ups as [|pg ups IH]; simpl; auto.
  destruct (step_cell_loweq m1 m2 o extra pg H) as [Hl _]; rewrite Hl, IH; reflexivity.
Qed.

Lemma step_apply_loweq : forall m1 m2 o ups extra, loweq m1 m2 ->
  loweq (step_apply m1 o ups extra) (step_apply m2 o ups extra).
Proof.
  intros m1 m2 o ups extra H; unfold step_apply.
  assert (Hgen : forall acc1 acc2, loweq acc1 acc2 ->
    loweq (fold_left (fun acc pg => upd acc (fst pg) (step_cell m1 o extra pg)) ups acc1)
          (fold_left (fun acc pg => upd acc (fst pg) (step_cell m2 o extra pg)) ups acc2)).
  { induction ups as [|pg ups IH]; simpl; intros acc1 acc2 Hacc; auto.
    apply IH, upd_loweq; auto using step_cell_loweq. }
  apply Hgen, H.
Qed.

(** ** Label soundness (noninterference), one command and any program *)

Theorem exec_cmd_noninterference : forall d1 d2 m1 m2 c,
  data_loweq d1 d2 -> loweq m1 m2 -> loweq (exec_cmd d1 m1 c) (exec_cmd d2 m2 c).
Proof.
  intros d1 d2 m1 m2 c Hd H; destruct c as [s k dst | o srcs dst | o srcs dst | gated o ups extra]; simpl.
  - apply write_loweq; auto; split; simpl; auto.
    intros Ha; apply Hd; destruct s as [[|] n]; simpl in *; auto; discriminate.
  - apply write_loweq; auto; simpl.
    rewrite (loweq_labs m1 m2 srcs H); split; auto; intros Ha.
    unfold op_label in Ha; destruct (neutral o) eqn:En.
    + apply neutral_ignores_values; auto; unfold vals; rewrite !map_length; reflexivity.
    + rewrite (loweq_vals m1 m2 srcs H); auto; rewrite (loweq_labs m1 m2 srcs H); auto.
  - apply write_loweq; auto; simpl.
    destruct (H dst) as [Hd1 Hd2].
    rewrite (loweq_labs m1 m2 srcs H), Hd1; split; auto; intros Ha.
    unfold inplace_label in Ha; apply has_aux_join_false in Ha as [Ha1 Ha2].
    rewrite <- Hd1 in Ha1; rewrite (Hd2 Ha1), (loweq_vals m1 m2 srcs H); auto.
    rewrite (loweq_labs m1 m2 srcs H); auto.
  - rewrite (step_refused_loweq m1 m2 gated o ups extra H).
    destruct (step_refused m2 gated o ups extra); auto using step_apply_loweq.
Qed.

Theorem exec_noninterference : forall d1 d2 p m1 m2,
  data_loweq d1 d2 -> loweq m1 m2 -> loweq (exec d1 m1 p) (exec d2 m2 p).
Proof.
  intros d1 d2 p; induction p as [|c p IH]; simpl; intros m1 m2 Hd H; auto.
  apply IH; auto using exec_cmd_noninterference.
Qed.

(** ** Protected memory stays free of auxiliary sources *)

Lemma write_clean : forall m dst c, clean m -> clean (write m dst c).
Proof.
  intros m dst c H l Hl; unfold write.
  destruct (protected dst && has_aux (lab c)) eqn:E; auto.
  unfold upd; destruct (Nat.eqb l dst) eqn:El; auto.
  apply Nat.eqb_eq in El; subst.
  rewrite Hl in E; simpl in E; exact E.
Qed.

Lemma step_apply_clean : forall m gated o ups extra,
  clean m -> step_refused m gated o ups extra = false -> clean (step_apply m o ups extra).
Proof.
  intros m gated o ups extra H Hr; unfold step_apply, step_refused in *.
  assert (Hgen : forall acc, clean acc ->
    existsb (fun pg => (gated || protected (fst pg)) && has_aux (lab (step_cell m o extra pg))) ups = false ->
    clean (fold_left (fun acc pg => upd acc (fst pg) (step_cell m o extra pg)) ups acc)).
  { induction ups as [|pg ups IH]; simpl; intros acc Hacc Hex; auto.
    apply orb_false_iff in Hex as [H1 H2]; apply IH; auto.
    intros l Hl; unfold upd; destruct (Nat.eqb l (fst pg)) eqn:El; auto.
    apply Nat.eqb_eq in El; subst; rewrite Hl, orb_true_r in H1; exact H1. }
  apply Hgen; auto.
Qed.

Lemma exec_cmd_clean : forall d m c, clean m -> clean (exec_cmd d m c).
Proof.
  intros d m c H; destruct c as [s k dst | o srcs dst | o srcs dst | gated o ups extra]; simpl;
    auto using write_clean.
  destruct (step_refused m gated o ups extra) eqn:E; auto.
  eapply step_apply_clean; eauto.
Qed.

Lemma exec_clean : forall d p m, clean m -> clean (exec d m p).
Proof.
  intros d p; induction p as [|c p IH]; simpl; intros m H; auto using exec_cmd_clean.
Qed.

(** ** The gated update: a refused step changes nothing; an accepted one reads no
    auxiliary source and leaves each parameter's provenance auxiliary-free. *)

Lemma gated_step_refused_changes_nothing : forall d m o ups extra,
  step_refused m true o ups extra = true -> exec_cmd d m (Step true o ups extra) = m.
Proof. intros d m o ups extra H; simpl; rewrite H; reflexivity. Qed.

Lemma gated_step_accepted_iff : forall m o ups extra,
  step_refused m true o ups extra = false <->
  forall pg, In pg ups -> has_aux (lab (step_cell m o extra pg)) = false.
Proof.
  intros; unfold step_refused; simpl; split.
  - intros H pg Hin; destruct (has_aux (lab (step_cell m o extra pg))) eqn:E; auto.
    assert (existsb (fun pg => has_aux (lab (step_cell m o extra pg))) ups = true)
      by (apply existsb_exists; eauto).
    congruence.
  - intros H; destruct (existsb (fun pg => has_aux (lab (step_cell m o extra pg))) ups) eqn:E; auto.
    apply existsb_exists in E as [pg [Hin Ha]]; rewrite H in Ha; auto.
Qed.

(** ** The gated step decides as the implementation's gate does

    The gate of the implementation ([Labels.gate_decision], as [reference.gate_decision]
    and [GatedOptimizer] compute it) names the protected parameters whose gradient
    carries an auxiliary source.  For a gated step over named updates, whose
    parameters and shared state carry no auxiliary source (what the protection keeps
    true of protected memory, [clean]), the step of this language refuses exactly when
    that decision names some parameter: the gate Theorem 1 is proved for is the gate the
    code implements, for any number of parameters and any labels. *)

Definition named_grads (m : mem) (nups : list (String.string * (loc * loc)))
    : list (String.string * label) :=
  map (fun nu => (fst nu, lab (m (snd (snd nu))))) nups.

Lemma lookup_named_grads_in : forall m nups n l,
  lookup (named_grads m nups) n = Some l ->
  exists pg, In (n, pg) nups /\ l = lab (m (snd pg)).
Proof.
  intros m nups n l; induction nups as [|[n' pg'] rest IH]; simpl; [discriminate|].
  destruct (String.eqb n' n) eqn:E.
  - apply String.eqb_eq in E; subst; intros H; inversion H; subst; eauto.
  - intros H; destruct (IH H) as [pg [Hin Hl]]; eauto.
Qed.

Lemma lookup_named_grads_nodup : forall m nups n pg,
  NoDup (map fst nups) -> In (n, pg) nups -> lookup (named_grads m nups) n = Some (lab (m (snd pg))).
Proof.
  intros m nups n pg; induction nups as [|[n' pg'] rest IH]; simpl; [intros _ []|].
  intros Hnd Hin; inversion Hnd as [|x xs Hnotin Hnd' Heq]; subst.
  destruct (String.eqb n' n) eqn:E.
  - apply String.eqb_eq in E; subst; destruct Hin as [Heq | Hin].
    + inversion Heq; subst; reflexivity.
    + exfalso; apply Hnotin; change n with (fst (n, pg)); apply in_map; auto.
  - destruct Hin as [Heq | Hin].
    + inversion Heq; subst; rewrite String.eqb_refl in E; discriminate.
    + apply IH; auto.
Qed.

Theorem gated_step_is_gate_decision : forall m o nups extra,
  NoDup (map fst nups) ->
  (forall n pg, In (n, pg) nups -> has_aux (lab (m (fst pg))) = false) ->
  (forall e, In e extra -> has_aux (lab (m e)) = false) ->
  (step_refused m true o (map snd nups) extra = true <->
   gate_decision (named_grads m nups) (map fst nups) <> []).
Proof.
  intros m o nups extra Hnd Hp He.
  assert (Hcell : forall n pg, In (n, pg) nups ->
            has_aux (lab (step_cell m o extra pg)) = has_aux (lab (m (snd pg)))).
  { intros n [p g] Hin; simpl.
    pose proof (Hp n (p, g) Hin) as Hpl; simpl in Hpl.
    unfold join_all; simpl; fold (join_all (labs m extra)).
    rewrite !has_aux_join, Hpl.
    assert (Hx : has_aux (join_all (labs m extra)) = false).
    { apply has_aux_join_all_false; unfold labs; intros l Hl.
      apply in_map_iff in Hl as [e [He' Hin']]; subst; auto. }
    rewrite Hx, orb_false_r; reflexivity. }
  unfold step_refused; simpl; rewrite existsb_exists; split.
  - intros [pg [Hin Ha]] Hnil.
    apply in_map_iff in Hin as [[n pg'] [Heq Hin]]; simpl in Heq; subst pg'.
    rewrite (Hcell n pg Hin) in Ha.
    assert (Hg : In n (gate_decision (named_grads m nups) (map fst nups))).
    { apply gate_decision_spec; split.
      - change n with (fst (n, pg)); apply in_map; auto.
      - exists (lab (m (snd pg))); split; auto; apply lookup_named_grads_nodup; auto. }
    rewrite Hnil in Hg; destruct Hg.
  - intros Hne; destruct (gate_decision (named_grads m nups) (map fst nups)) as [|n rest] eqn:Eg;
      [congruence|].
    assert (Hg : In n (gate_decision (named_grads m nups) (map fst nups))) by (rewrite Eg; left; auto).
    apply gate_decision_spec in Hg as [_ [l [Hl Ha]]].
    apply lookup_named_grads_in in Hl as [pg [Hin Hl]]; subst l.
    exists pg; split.
    + change pg with (snd (n, pg)); apply in_map; auto.
    + rewrite (Hcell n pg Hin); exact Ha.
Qed.

(** ** Theorem 1, by induction over training steps *)

Definition data_agree_on_primary (d1 d2 : nat -> stepdata) : Prop := forall t, data_loweq (d1 t) (d2 t).

Lemma run_invariant : forall d1 d2, clean init -> data_agree_on_primary d1 d2 ->
  forall n, loweq (run d1 n) (run d2 n) /\ clean (run d1 n).
Proof.
  intros d1 d2 Hc Hd n; induction n as [|t [IH1 IH2]]; simpl.
  - split; auto; intros l; split; auto.
  - split; [apply exec_noninterference; auto | apply exec_clean; auto].
Qed.

(** Runs from any initial memory. *)
Fixpoint run_from (m0 : mem) (data : nat -> stepdata) (n : nat) : mem :=
  match n with
  | 0 => m0
  | S t => exec (data t) (run_from m0 data t) (body t)
  end.

Lemma run_is_run_from : forall data n, run data n = run_from init data n.
Proof. intros data n; induction n as [|t IH]; simpl; [reflexivity | rewrite IH; reflexivity]. Qed.

(** Noninterference with every input varying: two runs whose initial memories differ only
    where the label has an auxiliary source (equal labels everywhere), and whose data differ
    only on auxiliary sources, agree after any number of steps wherever the label has no
    auxiliary source. *)
Theorem run_from_noninterference : forall m1 m2 d1 d2,
  loweq m1 m2 -> data_agree_on_primary d1 d2 -> forall n, loweq (run_from m1 d1 n) (run_from m2 d2 n).
Proof.
  intros m1 m2 d1 d2 Hm Hd n; induction n as [|t IH]; simpl; auto.
  apply exec_noninterference; auto.
Qed.

(** Noninterference of whole runs: after any number of steps, every location whose label
    has no auxiliary source holds the same value in two runs whose data differ only on
    auxiliary sources (any number of auxiliary agents, any auxiliary data). *)
Theorem run_noninterference : forall d1 d2, clean init -> data_agree_on_primary d1 d2 ->
  forall n l, lab (run d1 n l) = lab (run d2 n l) /\
              (has_aux (lab (run d1 n l)) = false -> val (run d1 n l) = val (run d2 n l)).
Proof. intros d1 d2 Hc Hd n l; apply (proj1 (run_invariant d1 d2 Hc Hd n) l). Qed.

(** Theorem 1: the protected parameters' whole trajectory is the same for any two
    auxiliary streams. *)
Theorem theorem1_isolation : forall d1 d2, clean init -> data_agree_on_primary d1 d2 ->
  forall n l, protected l = true -> run d1 n l = run d2 n l.
Proof.
  intros d1 d2 Hc Hd n l Hp.
  destruct (run_invariant d1 d2 Hc Hd n) as [Heq Hclean].
  destruct (Heq l) as [Hl Hv]; destruct (run d1 n l) as [v1 l1] eqn:E1, (run d2 n l) as [v2 l2] eqn:E2.
  simpl in *; subst; f_equal; apply Hv.
  specialize (Hclean l Hp); rewrite E1 in Hclean; exact Hclean.
Qed.

(** The primary stream alone: every auxiliary datum replaced by [vdefault]. *)
Definition primary_only (d : nat -> stepdata) : nat -> stepdata :=
  fun t s k => match skind s with Primary => d t s k | Aux => vdefault end.

Theorem theorem1_primary_stream_alone : forall d, clean init ->
  forall n l, protected l = true -> run d n l = run (primary_only d) n l.
Proof.
  intros d Hc n l Hp; apply theorem1_isolation; auto.
  intros t s k Hs; unfold primary_only; rewrite Hs; reflexivity.
Qed.

(** What a run records of its data: the primary stream; auxiliary data is not recorded. *)
Definition record (d : nat -> stepdata) : nat -> source -> nat -> option V :=
  fun t s k => match skind s with Primary => Some (d t s k) | Aux => None end.

(** Replay from a record. *)
Definition replay (r : nat -> source -> nat -> option V) (n : nat) : mem :=
  run (fun t s k => match r t s k with Some v => v | None => vdefault end) n.

(** The replay certificate's statement: the protected memory (the world model) after
    any number of steps is a function of the recorded primary stream. *)
Theorem theorem1_replay : forall d, clean init ->
  forall n l, protected l = true -> run d n l = replay (record d) n l.
Proof.
  intros d Hc n l Hp; unfold replay; apply theorem1_isolation; auto.
  intros t s k Hs; unfold record; rewrite Hs; reflexivity.
Qed.

Corollary theorem1_function_of_primary_stream : clean init ->
  exists F : (nat -> source -> nat -> option V) -> nat -> mem,
    forall d n l, protected l = true -> run d n l = F (record d) n l.
Proof. intros Hc; exists replay; intros; apply theorem1_replay; auto. Qed.

End Language.
