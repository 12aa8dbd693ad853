(** * Theorem 2, corrected, and the refutation of the paper's statement

    Setting: an abstract real inner-product space (any carrier with addition, scalar
    multiplication and a symmetric, bilinear, positive semi-definite inner product:
    ℝⁿ, or any Hilbert space), a gradient map [grad] with a critical point [xs]
    ([grad xs] is orthogonal to every vector, i.e. it is zero), and gradient descent
    [x⁺ = x − η·grad x].  The class of μ-strongly convex, L-smooth functions enters
    only through the standard characterisations of their gradients (Nesterov 2004),
    taken as premises:

    - μ-strong monotonicity (Nesterov 2.1.22): ⟨∇x − ∇y, x − y⟩ ≥ μ‖x − y‖²;
    - 1/L-co-coercivity (Nesterov 2.1.8/2.1.11 with μ = 0), multiplied by L > 0:
      ‖∇x − ∇y‖² ≤ L⟨∇x − ∇y, x − y⟩;
    - Nesterov 2.1.11 (Thm 2.1.12), used only for the 2/(μ+L) rate and the exact
      threshold: (μ+L)⟨∇x − ∇y, x − y⟩ ≥ μL‖x − y‖² + ‖∇x − ∇y‖².

    Everything is over Coq's real numbers (the standard library's axiomatised
    reals). *)

From Coq Require Import Reals Lra Psatz.
Open Scope R_scope.

Record space := Space {
  car :> Type;
  plus : car -> car -> car;
  scal : R -> car -> car;
  inner : car -> car -> R;
  inner_sym : forall x y, inner x y = inner y x;
  inner_plus_l : forall x y z, inner (plus x y) z = inner x z + inner y z;
  inner_scal_l : forall a x z, inner (scal a x) z = a * inner x z;
  inner_pos : forall x, 0 <= inner x x
}.

Arguments plus {s}. Arguments scal {s}. Arguments inner {s}.
Arguments inner_sym {s}. Arguments inner_plus_l {s}. Arguments inner_scal_l {s}. Arguments inner_pos {s}.

Section GradientDescent.

Variable S : space.

Definition minus (x y : S) : S := plus x (scal (-1) y).
Definition norm2 (x : S) : R := inner x x.

Lemma inner_minus_l : forall u v w : S, inner (minus u v) w = inner u w - inner v w.
Proof. intros; unfold minus; rewrite inner_plus_l, inner_scal_l; ring. Qed.

(** ** The class, as premises on the gradient map *)

Definition strongly_monotone (grad : S -> S) (mu : R) : Prop :=
  forall x y, mu * norm2 (minus x y) <= inner (minus (grad x) (grad y)) (minus x y).

Definition cocoercive (grad : S -> S) (L : R) : Prop :=
  forall x y, norm2 (minus (grad x) (grad y)) <= L * inner (minus (grad x) (grad y)) (minus x y).

Definition nesterov_2_1_11 (grad : S -> S) (mu L : R) : Prop :=
  forall x y, mu * L * norm2 (minus x y) + norm2 (minus (grad x) (grad y))
              <= (mu + L) * inner (minus (grad x) (grad y)) (minus x y).

Definition critical (grad : S -> S) (xs : S) : Prop := forall y, inner (grad xs) y = 0.

Definition gd_step (grad : S -> S) (eta : R) (x : S) : S := plus x (scal (- eta) (grad x)).

Definition iterate (grad : S -> S) (eta : R) (t : nat) (x0 : S) : S := Nat.iter t (gd_step grad eta) x0.

Variable grad : S -> S.
Variable xs : S.
Hypothesis Hcrit : critical grad xs.

(** The scalars of one step: a = ‖x − x*‖², p = ⟨∇x, x − x*⟩, q = ‖∇x‖². *)
Let a (x : S) := norm2 (minus x xs).
Let p (x : S) := inner (grad x) (minus x xs).
Let q (x : S) := norm2 (grad x).

Lemma step_expansion : forall eta x,
  norm2 (minus (gd_step grad eta x) xs) = a x - 2 * eta * p x + eta * eta * q x.
Proof.
  intros eta x; unfold a, p, q, norm2, gd_step.
  assert (Hlin : forall w, inner (minus (plus x (scal (- eta) (grad x))) xs) w
                           = inner (minus x xs) w - eta * inner (grad x) w).
  { intros w; rewrite !inner_minus_l, inner_plus_l, inner_scal_l; ring. }
  rewrite Hlin, (inner_sym (minus x xs)), (inner_sym (grad x) (minus (plus x _) xs)), !Hlin.
  rewrite (inner_sym (minus x xs) (grad x)); ring.
Qed.

Lemma grad_minus_critical : forall x w, inner (minus (grad x) (grad xs)) w = inner (grad x) w.
Proof. intros; rewrite inner_minus_l, Hcrit; ring. Qed.

Lemma premise_p : forall mu x, strongly_monotone grad mu -> mu * a x <= p x.
Proof.
  intros mu x H; specialize (H x xs); unfold a, p.
  rewrite grad_minus_critical in H; exact H.
Qed.

Lemma norm2_grad_minus_critical : forall x, norm2 (minus (grad x) (grad xs)) = q x.
Proof.
  intros x; unfold norm2, q; rewrite grad_minus_critical, inner_sym, grad_minus_critical; reflexivity.
Qed.

Lemma premise_q : forall L x, cocoercive grad L -> q x <= L * p x.
Proof.
  intros L x H; specialize (H x xs); unfold p.
  rewrite norm2_grad_minus_critical, grad_minus_critical in H; exact H.
Qed.

Lemma premise_nesterov : forall mu L x, nesterov_2_1_11 grad mu L ->
  mu * L * a x + q x <= (mu + L) * p x.
Proof.
  intros mu L x H; specialize (H x xs); unfold a, p.
  rewrite norm2_grad_minus_critical, grad_minus_critical in H; exact H.
Qed.

(** ‖g − c·d‖² ≥ 0, expanded: q − 2c·p + c²·a ≥ 0. *)
Lemma combination_nonneg : forall c x, 0 <= q x - 2 * c * p x + c * c * a x.
Proof.
  intros c x.
  pose proof (inner_pos (plus (grad x) (scal (- c) (minus x xs)))) as H.
  rewrite inner_plus_l, inner_scal_l, inner_sym, inner_plus_l, inner_scal_l in H.
  rewrite (inner_sym (minus x xs) (plus (grad x) (scal (- c) (minus x xs)))),
          inner_plus_l, inner_scal_l in H.
  unfold a, p, q, norm2; rewrite (inner_sym (minus x xs) (grad x)) in H; nra.
Qed.

Lemma a_nonneg : forall x, 0 <= a x.
Proof. intros; apply inner_pos. Qed.

Lemma q_nonneg : forall x, 0 <= q x.
Proof. intros; apply inner_pos. Qed.

(** ** Per-step contraction for every η ∈ (0, 2/L) *)

Definition factor (mu L eta : R) : R := 1 - eta * mu * (2 - eta * L).

Theorem contraction : forall mu L eta x,
  0 < mu -> mu <= L -> 0 < eta -> eta * L < 2 ->
  strongly_monotone grad mu -> cocoercive grad L ->
  norm2 (minus (gd_step grad eta x) xs) <= factor mu L eta * norm2 (minus x xs).
Proof.
  intros mu L eta x Hmu HL Heta Hstep Hsm Hco.
  rewrite step_expansion; fold (a x); unfold factor.
  pose proof (premise_p mu x Hsm); pose proof (premise_q L x Hco).
  assert (H1 : 0 <= eta * eta * (L * p x - q x)) by (apply Rmult_le_pos; nra).
  assert (H2 : 0 <= eta * (2 - eta * L) * (p x - mu * a x)) by (apply Rmult_le_pos; nra).
  nra.
Qed.

Lemma factor_bounds : forall mu L eta,
  0 < mu -> mu <= L -> 0 < eta -> eta * L < 2 -> 0 <= factor mu L eta < 1.
Proof.
  intros mu L eta Hmu HL Heta Hstep; unfold factor; split.
  - assert (eta * mu * (2 - eta * L) <= eta * L * (2 - eta * L)) by (apply Rmult_le_compat_r; nra).
    assert (0 <= (1 - eta * L) * (1 - eta * L)) by apply Rle_0_sqr.
    lra.
  - assert (0 < eta * mu * (2 - eta * L)) by (apply Rmult_lt_0_compat; nra). lra.
Qed.

Lemma factor_le_paper_rate : forall mu L eta,
  0 < mu -> 0 < eta -> eta * L <= 1 -> factor mu L eta <= 1 - eta * mu.
Proof.
  intros mu L eta Hmu Heta Hstep; unfold factor.
  assert (0 <= eta * mu * (1 - eta * L)) by (apply Rmult_le_pos; [apply Rmult_le_pos|]; lra).
  lra.
Qed.

(** ** t steps, by induction *)

Lemma rate_by_induction : forall eta r, 0 <= r ->
  (forall x, norm2 (minus (gd_step grad eta x) xs) <= r * norm2 (minus x xs)) ->
  forall t x0, norm2 (minus (iterate grad eta t x0) xs) <= r ^ t * norm2 (minus x0 xs).
Proof.
  intros eta r Hr Hstep t x0; induction t as [|t IH]; simpl.
  - lra.
  - eapply Rle_trans; [apply Hstep|].
    rewrite Rmult_assoc; apply Rmult_le_compat_l; auto.
Qed.

Theorem rate_every_step_size : forall mu L eta t x0,
  0 < mu -> mu <= L -> 0 < eta -> eta * L < 2 ->
  strongly_monotone grad mu -> cocoercive grad L ->
  norm2 (minus (iterate grad eta t x0) xs) <= factor mu L eta ^ t * norm2 (minus x0 xs).
Proof.
  intros; apply rate_by_induction; [apply factor_bounds; auto|].
  intros; apply contraction; auto.
Qed.

(** The paper's rate, on the step sizes where it holds: η ≤ 1/L. *)
Theorem rate_small_step : forall mu L eta t x0,
  0 < mu -> mu <= L -> 0 < eta -> eta * L <= 1 ->
  strongly_monotone grad mu -> cocoercive grad L ->
  norm2 (minus (iterate grad eta t x0) xs) <= (1 - eta * mu) ^ t * norm2 (minus x0 xs).
Proof.
  intros mu L eta t x0 Hmu HL Heta Hstep Hsm Hco.
  eapply Rle_trans; [apply (rate_every_step_size mu L); auto; lra|].
  apply Rmult_le_compat_r; [apply inner_pos|].
  apply pow_incr; split; [apply factor_bounds; auto; lra | apply factor_le_paper_rate; auto].
Qed.

(** ** Nesterov's rate for η ≤ 2/(μ+L) (Thm 2.1.15) *)

Definition nesterov_factor (mu L eta : R) : R := 1 - 2 * eta * mu * L / (mu + L).

Theorem nesterov_contraction : forall mu L eta x,
  0 < mu -> mu <= L -> 0 < eta -> eta * (mu + L) <= 2 ->
  nesterov_2_1_11 grad mu L ->
  norm2 (minus (gd_step grad eta x) xs) <= nesterov_factor mu L eta * norm2 (minus x xs).
Proof.
  intros mu L eta x Hmu HL Heta Hstep Hn.
  rewrite step_expansion; fold (a x); unfold nesterov_factor.
  pose proof (premise_nesterov mu L x Hn); pose proof (q_nonneg x).
  assert (Hk : (mu + L) * (a x - 2 * eta * p x + eta * eta * q x)
               <= ((mu + L) - 2 * eta * mu * L) * a x).
  { assert (0 <= eta * q x * (2 - eta * (mu + L))) by (apply Rmult_le_pos; nra). nra. }
  apply Rmult_le_reg_l with (mu + L); [lra|].
  replace ((mu + L) * ((1 - 2 * eta * mu * L / (mu + L)) * a x))
    with (((mu + L) - 2 * eta * mu * L) * a x) by (field; lra).
  exact Hk.
Qed.

Lemma nesterov_factor_bounds : forall mu L eta,
  0 < mu -> mu <= L -> 0 < eta -> eta * (mu + L) <= 2 -> 0 <= nesterov_factor mu L eta < 1.
Proof.
  intros mu L eta Hmu HL Heta Hstep; unfold nesterov_factor.
  assert (Hpos : 0 < 2 * eta * mu * L / (mu + L)).
  { apply Rdiv_lt_0_compat; [repeat apply Rmult_lt_0_compat|]; lra. }
  split; [|lra].
  assert (2 * eta * mu * L / (mu + L) <= 1); [|lra].
  apply Rmult_le_reg_l with (mu + L); [lra|].
  replace ((mu + L) * (2 * eta * mu * L / (mu + L))) with (2 * eta * mu * L) by (field; lra).
  assert (H1 : 0 <= mu * L * (2 - eta * (mu + L))) by (apply Rmult_le_pos; [apply Rmult_le_pos|]; lra).
  assert (H2 : 0 <= (L - mu) * (L - mu)) by apply Rle_0_sqr.
  apply Rmult_le_reg_l with (mu + L); [lra|].
  nra.
Qed.

Theorem rate_nesterov : forall mu L eta t x0,
  0 < mu -> mu <= L -> 0 < eta -> eta * (mu + L) <= 2 ->
  nesterov_2_1_11 grad mu L ->
  norm2 (minus (iterate grad eta t x0) xs) <= nesterov_factor mu L eta ^ t * norm2 (minus x0 xs).
Proof.
  intros; apply rate_by_induction; [apply nesterov_factor_bounds; auto|].
  intros; apply nesterov_contraction; auto.
Qed.

(** ** The tight per-step contraction max((1−ημ)², (1−ηL)²), every η ∈ (0, 2/L) *)

Theorem tight_contraction : forall mu L eta x,
  0 < mu -> mu <= L -> 0 < eta -> eta * L < 2 ->
  strongly_monotone grad mu -> cocoercive grad L -> nesterov_2_1_11 grad mu L ->
  norm2 (minus (gd_step grad eta x) xs)
    <= Rmax ((1 - eta * mu) ^ 2) ((1 - eta * L) ^ 2) * norm2 (minus x xs).
Proof.
  intros mu L eta x Hmu HL Heta Hstep Hsm Hco Hn.
  rewrite step_expansion; fold (a x).
  pose proof (premise_p mu x Hsm); pose proof (premise_q L x Hco).
  pose proof (premise_nesterov mu L x Hn); pose proof (q_nonneg x); pose proof (a_nonneg x).
  (* q ≥ μ²a from ‖g − μd‖² ≥ 0; q ≤ L²a from ‖g − Ld‖² ≥ 0 and q ≤ Lp *)
  pose proof (combination_nonneg mu x) as Hlo; pose proof (combination_nonneg L x) as Hhi.
  assert (Hq_lo : mu * mu * a x <= q x) by nra.
  assert (Hq_hi : q x <= L * L * a x) by nra.
  destruct (Rle_lt_dec (eta * (mu + L)) 2) as [Hsmall | Hbig].
  - apply Rle_trans with ((1 - eta * mu) ^ 2 * a x); [|apply Rmult_le_compat_r; [lra | apply Rmax_l]].
    apply Rmult_le_reg_l with (mu + L); [lra|].
    assert (0 <= eta * (q x - mu * mu * a x) * (2 - eta * (mu + L)))
      by (apply Rmult_le_pos; [apply Rmult_le_pos|]; nra).
    nra.
  - apply Rle_trans with ((1 - eta * L) ^ 2 * a x); [|apply Rmult_le_compat_r; [lra | apply Rmax_r]].
    apply Rmult_le_reg_l with (mu + L); [lra|].
    assert (0 <= eta * (L * L * a x - q x) * (eta * (mu + L) - 2))
      by (apply Rmult_le_pos; [apply Rmult_le_pos|]; nra).
    nra.
Qed.

End GradientDescent.

(** ** The paper's statement and the exact threshold *)

(** The paper's eq. 12 at (μ, L, η): on every space, for every gradient map of the
    class (the three characterisations) with a critical point, every start and every
    number of steps, ‖θ_t − θ*‖² ≤ (1 − ημ)^t ‖θ_0 − θ*‖². *)
Definition stated_rate_holds (mu L eta : R) : Prop :=
  forall (S : space) (grad : S -> S) (xs : S),
    critical S grad xs -> strongly_monotone S grad mu -> cocoercive S grad L ->
    nesterov_2_1_11 S grad mu L ->
    forall t x0, norm2 S (minus S (iterate S grad eta t x0) xs)
                 <= (1 - eta * mu) ^ t * norm2 S (minus S x0 xs).

(** The real line, with the product as inner product. *)
Definition real_line : space.
Proof.
  refine (Space R Rplus Rmult Rmult _ _ _ _); intros; try ring.
  apply Rle_0_sqr.
Defined.

(** The 1-d quadratic f(x) = (L/2)x²: gradient L·x, minimiser 0. *)
Definition quadratic_grad (L : R) : real_line -> real_line := fun x => L * x.

Lemma quadratic_in_class : forall mu L, 0 < mu -> mu <= L ->
  critical real_line (quadratic_grad L) 0 /\
  strongly_monotone real_line (quadratic_grad L) mu /\
  cocoercive real_line (quadratic_grad L) L /\
  nesterov_2_1_11 real_line (quadratic_grad L) mu L.
Proof.
  intros mu L Hmu HL; unfold critical, strongly_monotone, cocoercive, nesterov_2_1_11,
    norm2, minus, quadratic_grad; simpl; repeat split.
  - intros; ring.
  - intros x y.
    assert (0 <= (L - mu) * ((x + -1 * y) * (x + -1 * y))) by (apply Rmult_le_pos; [lra | apply Rle_0_sqr]).
    lra.
  - intros x y.
    assert (0 <= L * ((x + -1 * y) * (x + -1 * y))) by (apply Rmult_le_pos; [lra | apply Rle_0_sqr]).
    lra.
  - intros x y; lra.
Qed.

Lemma quadratic_one_step : forall L eta x0,
  norm2 real_line (minus real_line (iterate real_line (quadratic_grad L) eta 1 x0) 0)
  = (1 - eta * L) ^ 2 * norm2 real_line (minus real_line x0 0).
Proof. intros; unfold norm2, minus, iterate, gd_step, quadratic_grad; simpl; ring. Qed.

(** The exact threshold: for 0 < μ ≤ L and η ∈ (0, 2/L), the paper's rate holds on the
    whole class iff η ≤ (2L − μ)/L². *)
Theorem stated_rate_threshold : forall mu L eta,
  0 < mu -> mu <= L -> 0 < eta -> eta * L < 2 ->
  (stated_rate_holds mu L eta <-> eta <= (2 * L - mu) / (L * L)).
Proof.
  intros mu L eta Hmu HL Heta Hstep.
  assert (HL2 : 0 < L * L) by nra.
  assert (Hiff : eta <= (2 * L - mu) / (L * L) <-> eta * (L * L) <= 2 * L - mu).
  { split; intros H.
    - apply Rmult_le_compat_r with (r := L * L) in H; [|lra].
      unfold Rdiv in H; rewrite Rmult_assoc, Rinv_l in H; lra.
    - apply Rmult_le_reg_r with (L * L); [lra|].
      unfold Rdiv; rewrite Rmult_assoc, Rinv_l; lra. }
  rewrite Hiff; split.
  - intros Hholds; destruct (Rle_lt_dec (eta * (L * L)) (2 * L - mu)) as [Hle | Hgt]; [exact Hle|].
    exfalso.
    destruct (quadratic_in_class mu L Hmu HL) as [Hc [Hsm [Hco Hn]]].
    specialize (Hholds real_line (quadratic_grad L) 0 Hc Hsm Hco Hn 1%nat 1).
    rewrite quadratic_one_step in Hholds.
    unfold norm2, minus in Hholds; simpl in Hholds.
    nra.
  - intros Hle S grad xs Hc Hsm Hco Hn t x0.
    apply rate_by_induction; [nra|].
    intros x.
    apply Rle_trans with (Rmax ((1 - eta * mu) ^ 2) ((1 - eta * L) ^ 2) * norm2 S (minus S x xs)).
    { apply (tight_contraction S grad xs Hc mu L eta x); auto. }
    apply Rmult_le_compat_r; [apply inner_pos|].
    assert (Hem : eta * mu <= 1).
    { assert (0 <= (L - mu) * (L - mu)) by apply Rle_0_sqr.
      assert (eta * mu * (L * L) <= (2 * L - mu) * mu) by (rewrite Rmult_comm, <- Rmult_assoc; nra).
      nra. }
    apply Rmax_lub.
    + assert (0 <= eta * mu * (1 - eta * mu)) by (apply Rmult_le_pos; nra). nra.
    + assert (0 <= eta * ((2 * L - mu) - eta * (L * L))) by (apply Rmult_le_pos; lra). nra.
Qed.

(** The paper's statement (§5.2, eq. 12 with Assumption 1: every η ∈ (0, 2/L)) is false. *)
Theorem paper_statement_false :
  ~ (forall mu L eta, 0 < mu -> mu <= L -> 0 < eta -> eta * L < 2 -> stated_rate_holds mu L eta).
Proof.
  intros Hpaper.
  pose proof (Hpaper 1 10 (195 / 1000)) as H.
  apply (stated_rate_threshold 1 10 (195 / 1000)) in H; lra.
Qed.

(** The concrete counterexample, by computation: μ = 1, L = 10, η = 0.195, f(x) = 5x²,
    x₀ = 1: after one step ‖x₁ − x*‖² = 0.9025 > 0.805 = (1 − ημ)·‖x₀ − x*‖². *)
Theorem counterexample_mu1_L10_eta0195 :
  let eta := 195 / 1000 in
  norm2 real_line (minus real_line (iterate real_line (quadratic_grad 10) eta 1 1) 0) = 9025 / 10000 /\
  (1 - eta * 1) ^ 1 * norm2 real_line (minus real_line 1 0) = 805 / 1000 /\
  9025 / 10000 > 805 / 1000.
Proof.
  simpl; unfold norm2, minus, iterate, gd_step, quadratic_grad; simpl.
  repeat split; [field | field | lra].
Qed.
