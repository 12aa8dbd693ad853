(** * Lemmas 1 and 2: descent and the Polyak–Łojasiewicz inequality

    Same setting as [Theorem2.v]: an abstract real inner-product space, a function
    [f] with gradient map [grad], gradient descent [x⁺ = x − η·grad x].  The class
    enters through the standard characterisations of L-smooth and μ-strongly convex
    functions by their values (Nesterov 2004), taken as premises for every pair of
    points:

    - the quadratic upper bound of L-smoothness (Nesterov 2.1.9):
      f(y) ≤ f(x) + ⟨∇f(x), y − x⟩ + (L/2)‖y − x‖²;
    - the quadratic lower bound of μ-strong convexity (Nesterov 2.1.20):
      f(y) ≥ f(x) + ⟨∇f(x), y − x⟩ + (μ/2)‖y − x‖². *)

From Coq Require Import Reals Lra Psatz.
From AmalVerified Require Import Theorem2.
Open Scope R_scope.

Section Lemmas.

Variable S : space.
Variable f : S -> R.
Variable grad : S -> S.

Definition smooth_upper (L : R) : Prop :=
  forall x y, f y <= f x + inner (grad x) (minus S y x) + L / 2 * norm2 S (minus S y x).

Definition strong_lower (mu : R) : Prop :=
  forall x y, f x + inner (grad x) (minus S y x) + mu / 2 * norm2 S (minus S y x) <= f y.

Lemma inner_step_r : forall c x w,
  inner w (minus S (plus x (scal c (grad x))) x) = c * inner w (grad x).
Proof.
  intros c x w; rewrite inner_sym, inner_minus_l, inner_plus_l, inner_scal_l, (inner_sym (grad x) w),
    (inner_sym x w); ring.
Qed.

Lemma norm2_step : forall c x,
  norm2 S (minus S (plus x (scal c (grad x))) x) = c * c * norm2 S (grad x).
Proof.
  intros c x; unfold norm2; rewrite inner_step_r, inner_sym, inner_step_r; ring.
Qed.

(** Lemma 1 (descent): 0 < η ≤ 1/L gives f(x⁺) ≤ f(x) − (η/2)‖∇f(x)‖². *)
Theorem lemma1_descent : forall L eta x,
  0 < L -> 0 < eta -> eta * L <= 1 -> smooth_upper L ->
  f (gd_step S grad eta x) <= f x - eta / 2 * norm2 S (grad x).
Proof.
  intros L eta x HL Heta Hstep Hsm.
  specialize (Hsm x (gd_step S grad eta x)); unfold gd_step in *.
  rewrite inner_step_r, norm2_step in Hsm.
  fold (norm2 S (grad x)) in Hsm.
  pose proof (inner_pos (grad x)) as Hq; fold (norm2 S (grad x)) in Hq.
  assert (0 <= eta * eta * norm2 S (grad x) * (1 - eta * L)) by
    (apply Rmult_le_pos; [apply Rmult_le_pos; [nra | exact Hq] | lra]).
  nra.
Qed.

(** Lemma 2 (Polyak–Łojasiewicz): ‖∇f(x)‖² ≥ 2μ(f(x) − f(x⋆)), for every x and every x⋆
    (in particular the minimiser). *)
Theorem lemma2_pl : forall mu x xs,
  0 < mu -> strong_lower mu -> 2 * mu * (f x - f xs) <= norm2 S (grad x).
Proof.
  intros mu x xs Hmu Hsc; specialize (Hsc x xs).
  set (d := minus S xs x) in *.
  pose proof (inner_pos (plus (grad x) (scal mu d))) as H.
  rewrite inner_plus_l, inner_scal_l, inner_sym, inner_plus_l, inner_scal_l in H.
  rewrite (inner_sym d (plus (grad x) (scal mu d))), inner_plus_l, inner_scal_l in H.
  rewrite (inner_sym d (grad x)) in H; unfold norm2 in *.
  assert (Hd : 0 <= inner d d) by apply inner_pos.
  nra.
Qed.

(** Together: for 0 < μ ≤ L and 0 < η ≤ 1/L, f(x_t) − f(x⋆) ≤ (1 − ημ)^t (f(x_0) − f(x⋆)). *)
Theorem function_value_rate : forall mu L eta xs t x0,
  0 < mu -> mu <= L -> 0 < eta -> eta * L <= 1 -> smooth_upper L -> strong_lower mu ->
  f (iterate S grad eta t x0) - f xs <= (1 - eta * mu) ^ t * (f x0 - f xs).
Proof.
  intros mu L eta xs t x0 Hmu HL Heta Hstep Hsm Hsc.
  induction t as [|t IH]; simpl; [lra|].
  pose proof (lemma1_descent L eta (iterate S grad eta t x0) ltac:(lra) Heta Hstep Hsm) as Hd.
  pose proof (lemma2_pl mu (iterate S grad eta t x0) xs Hmu Hsc) as Hp.
  assert (Hr : 0 <= 1 - eta * mu) by nra.
  apply Rle_trans with ((1 - eta * mu) * (f (iterate S grad eta t x0) - f xs)).
  - unfold iterate in *; simpl in *.
    assert (eta / 2 * (2 * mu * (f (Nat.iter t (gd_step S grad eta) x0) - f xs))
            <= eta / 2 * norm2 S (grad (Nat.iter t (gd_step S grad eta) x0)))
      by (apply Rmult_le_compat_l; lra).
    nra.
  - rewrite Rmult_assoc; apply Rmult_le_compat_l; [exact Hr | exact IH].
Qed.

End Lemmas.

(** The step-size condition of Lemma 1 cannot be dropped: for η ∈ (1/L, 2/L) the 1-d
    quadratic f(x) = (L/2)x², which satisfies both premises with μ = L, violates the
    descent inequality at x = 1. *)
Theorem lemma1_step_size_needed : forall L eta,
  0 < L -> 1 < eta * L -> eta * L < 2 ->
  let f := fun x : real_line => L / 2 * (x * x) in
  smooth_upper real_line f (quadratic_grad L) L /\
  strong_lower real_line f (quadratic_grad L) L /\
  f (gd_step real_line (quadratic_grad L) eta 1) > f 1 - eta / 2 * norm2 real_line (quadratic_grad L 1).
Proof.
  intros L eta HL H1 H2 f; unfold f, smooth_upper, strong_lower, norm2, minus, gd_step, quadratic_grad;
    simpl; repeat split; intros.
  - apply Req_le; field.
  - apply Req_le; field.
  - assert (0 < eta * L * (eta * L - 1)) by (apply Rmult_lt_0_compat; lra).
    nra.
Qed.
