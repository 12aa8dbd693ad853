(** * The label lattice

    Mirrors [amal_verified/isolation/labels.py] and the pure-Python specification
    [amal_verified/isolation/reference.py]: a source is a kind (primary or auxiliary)
    and a name; a label is a finite set of sources, represented by a list read as a
    set (membership is all that matters).  The join is set union, the order is
    inclusion, and the bottom is the empty label.  Any number of sources and names:
    nothing here bounds the number of auxiliary agents. *)

From Coq Require Import Bool List String.
Import ListNotations.


Inductive kind := Primary | Aux.

Definition kind_eqb (k1 k2 : kind) : bool :=
  match k1, k2 with
  | Primary, Primary | Aux, Aux => true
  | _, _ => false
  end.

Record source := Source { skind : kind; sname : string }.

Definition source_eqb (s1 s2 : source) : bool :=
  kind_eqb (skind s1) (skind s2) && String.eqb (sname s1) (sname s2).

Lemma source_eqb_eq : forall s1 s2, source_eqb s1 s2 = true <-> s1 = s2.
Proof.
  intros [k1 n1] [k2 n2]; unfold source_eqb; simpl.
  rewrite andb_true_iff, String.eqb_eq.
  destruct k1, k2; simpl; split; intros H;
    try (destruct H; subst; reflexivity); try (inversion H; subst; auto);
    try discriminate; destruct H; discriminate.
Qed.

Definition label := list source.

Definition bottom : label := [].

Definition join (a b : label) : label := a ++ b.

Definition join_all (ls : list label) : label := fold_right join bottom ls.

(** Membership, decided. *)
Definition mem (s : source) (l : label) : bool := existsb (source_eqb s) l.

Lemma mem_In : forall s l, mem s l = true <-> In s l.
Proof.
  intros s l; unfold mem; rewrite existsb_exists; split.
  - intros [x [Hin Heq]]; apply source_eqb_eq in Heq; subst; exact Hin.
  - intros Hin; exists s; split; [exact Hin | apply source_eqb_eq; reflexivity].
Qed.

(** The order: [a] may flow into [b] iff every source of [a] is in [b]. *)
Definition flows_to (a b : label) : Prop := forall s, In s a -> In s b.
Definition flows_tob (a b : label) : bool := forallb (fun s => mem s b) a.

Lemma flows_tob_spec : forall a b, flows_tob a b = true <-> flows_to a b.
Proof.
  intros a b; unfold flows_tob, flows_to; rewrite forallb_forall; split;
    intros H s Hs; specialize (H s Hs); apply mem_In; auto; apply mem_In in H; auto.
Qed.

(** Two labels are the same set. *)
Definition same (a b : label) : Prop := flows_to a b /\ flows_to b a.

Definition is_aux (s : source) : bool := kind_eqb (skind s) Aux.
Definition has_aux (l : label) : bool := existsb is_aux l.
Definition aux_part (l : label) : label := filter is_aux l.

(** ** Lattice laws (up to [same]: labels are sets) *)

Lemma join_comm : forall a b, same (join a b) (join b a).
Proof. intros a b; split; intros s; unfold join; rewrite !in_app_iff; tauto. Qed.

Lemma join_assoc : forall a b c, join (join a b) c = join a (join b c).
Proof. intros; unfold join; rewrite app_assoc; reflexivity. Qed.

Lemma join_idem : forall a, same (join a a) a.
Proof. intros a; split; intros s; unfold join; rewrite ?in_app_iff; tauto. Qed.

Lemma join_bottom_l : forall a, join bottom a = a.
Proof. reflexivity. Qed.

Lemma join_upper_l : forall a b, flows_to a (join a b).
Proof. intros a b s H; unfold join; rewrite in_app_iff; auto. Qed.

Lemma join_upper_r : forall a b, flows_to b (join a b).
Proof. intros a b s H; unfold join; rewrite in_app_iff; auto. Qed.

Lemma join_least : forall a b c, flows_to a c -> flows_to b c -> flows_to (join a b) c.
Proof. intros a b c Ha Hb s H; unfold join in H; rewrite in_app_iff in H; destruct H; auto. Qed.

Lemma flows_to_refl : forall a, flows_to a a.
Proof. intros a s H; exact H. Qed.

Lemma flows_to_trans : forall a b c, flows_to a b -> flows_to b c -> flows_to a c.
Proof. intros a b c H1 H2 s H; auto. Qed.

Lemma bottom_least : forall a, flows_to bottom a.
Proof. intros a s H; destruct H. Qed.

Lemma flows_to_join_iff : forall a b, flows_to a b <-> same (join a b) b.
Proof.
  intros a b; split.
  - intros H; split; [apply join_least; [exact H | apply flows_to_refl] | apply join_upper_r].
  - intros [H _]; eapply flows_to_trans; [apply join_upper_l | exact H].
Qed.

(** ** The auxiliary test *)

Lemma has_aux_spec : forall l, has_aux l = true <-> exists s, In s l /\ skind s = Aux.
Proof.
  intros l; unfold has_aux, is_aux; rewrite existsb_exists; split;
    intros [s [Hin Hk]]; exists s; split; auto; destruct (skind s); simpl in *; congruence.
Qed.

Lemma has_aux_join : forall a b, has_aux (join a b) = has_aux a || has_aux b.
Proof. intros; unfold has_aux, join; apply existsb_app. Qed.

Lemma has_aux_join_false : forall a b,
  has_aux (join a b) = false <-> has_aux a = false /\ has_aux b = false.
Proof. intros; rewrite has_aux_join, orb_false_iff; tauto. Qed.

Lemma has_aux_monotone : forall a b, flows_to a b -> has_aux a = true -> has_aux b = true.
Proof.
  intros a b Hab Ha; apply has_aux_spec in Ha as [s [Hs Hk]].
  apply has_aux_spec; exists s; auto.
Qed.

Lemma has_aux_join_all_false : forall ls,
  has_aux (join_all ls) = false <-> forall l, In l ls -> has_aux l = false.
Proof.
  induction ls as [|l ls IH]; simpl.
  - split; [intros _ l [] | reflexivity].
  - rewrite has_aux_join_false, IH; split.
    + intros [H1 H2] x [Hx | Hx]; [subst; exact H1 | auto].
    + intros H; split; auto.
Qed.

Lemma has_aux_aux_part : forall l, has_aux l = true <-> aux_part l <> [].
Proof.
  intros l; unfold has_aux, aux_part; induction l as [|s l IH]; simpl.
  - split; congruence.
  - destruct (is_aux s); simpl; [split; congruence | exact IH].
Qed.

(** ** Labels of computed values ([reference.op_label], [reference.inplace_label]) *)

Definition op_label (inputs : list label) (label_neutral : bool) : label :=
  if label_neutral then bottom else join_all inputs.

Definition inplace_label (target : label) (inputs : list label) (whole : bool) : label :=
  if whole then join_all inputs else join target (join_all inputs).

(** ** The gate decision ([reference.gate_decision]): the protected parameters whose
    gradient label has an auxiliary source.  [grads] maps parameter names to
    gradient labels (a parameter without a gradient is absent). *)

Fixpoint lookup (grads : list (string * label)) (n : string) : option label :=
  match grads with
  | [] => None
  | (m, l) :: rest => if String.eqb m n then Some l else lookup rest n
  end.

Definition gate_decision (grads : list (string * label)) (protected : list string) : list string :=
  filter (fun n => match lookup grads n with Some l => has_aux l | None => false end) protected.

Lemma gate_decision_spec : forall grads protected n,
  In n (gate_decision grads protected) <->
  In n protected /\ exists l, lookup grads n = Some l /\ has_aux l = true.
Proof.
  intros; unfold gate_decision; rewrite filter_In.
  destruct (lookup grads n) as [l|]; split.
  - intros [H1 H2]; split; eauto.
  - intros [H1 [l' [H2 H3]]]; inversion H2; subst; auto.
  - intros [_ H]; discriminate.
  - intros [_ [l' [H _]]]; discriminate.
Qed.

(** The gate refuses nothing iff every protected gradient is free of auxiliary sources. *)
Lemma gate_accepts_iff : forall grads protected,
  gate_decision grads protected = [] <->
  forall n l, In n protected -> lookup grads n = Some l -> has_aux l = false.
Proof.
  intros grads protected; split.
  - intros H n l Hn Hl; destruct (has_aux l) eqn:E; auto.
    assert (Hin : In n (gate_decision grads protected))
      by (apply gate_decision_spec; eauto).
    rewrite H in Hin; destruct Hin.
  - intros H; destruct (gate_decision grads protected) as [|n rest] eqn:E; auto.
    assert (Hin : In n (gate_decision grads protected)) by (rewrite E; left; auto).
    apply gate_decision_spec in Hin as [Hp [l [Hl Ha]]].
    rewrite (H n l Hp Hl) in Ha; discriminate.
Qed.
