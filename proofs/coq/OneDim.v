(** * The premises of Theorem 2, derived in one dimension

    [Theorem2.v] takes the class of μ-strongly convex, L-smooth functions through three
    characterisations of their gradients.  On the real line they follow from the
    definition by second derivatives: if [g] (the gradient f') is differentiable with
    derivative [h] (f'') and μ ≤ h ≤ L everywhere, then [g] is μ-strongly monotone,
    1/L-co-coercive and satisfies Nesterov's 2.1.11 (by the mean value theorem of Coq's
    standard library).  Hence, for every such function on ℝ, the rates of [Theorem2.v]
    hold with no premise left but μ ≤ f'' ≤ L and f'(x* ) = 0. *)

From Coq Require Import Reals Lra Psatz.
From AmalVerified Require Import Theorem2.
Open Scope R_scope.

Section OneDimension.

Variables g h : R -> R.
Variables mu L : R.
Hypothesis Hderiv : forall x, derivable_pt_lim g x (h x).
Hypothesis Hbounds : forall x, mu <= h x <= L.
Hypothesis Hmu : 0 < mu.

Lemma mean_value : forall x y, exists c, g x - g y = h c * (x - y) /\ mu <= h c <= L.
Proof.
  intros x y; destruct (Rtotal_order x y) as [Hlt | [Heq | Hgt]].
  - destruct (MVT_cor2 g h x y Hlt (fun c _ => Hderiv c)) as [c [Hc _]].
    exists c; split; [lra | apply Hbounds].
  - subst; exists y; split; [ring | apply Hbounds].
  - destruct (MVT_cor2 g h y x Hgt (fun c _ => Hderiv c)) as [c [Hc _]].
    exists c; split; [lra | apply Hbounds].
Qed.

Lemma one_dim_premises :
  strongly_monotone real_line g mu /\ cocoercive real_line g L /\ nesterov_2_1_11 real_line g mu L.
Proof.
  unfold strongly_monotone, cocoercive, nesterov_2_1_11, norm2, minus; simpl.
  repeat split; intros x y; destruct (mean_value x y) as [c [Hc [Hlo Hhi]]];
    replace (g x + -1 * g y) with (h c * (x - y)) by lra;
    replace (x + -1 * y) with (x - y) by ring;
    assert (Hs : 0 <= (x - y) * (x - y)) by apply Rle_0_sqr.
  - assert (0 <= (h c - mu) * ((x - y) * (x - y))) by (apply Rmult_le_pos; lra). nra.
  - assert (0 <= h c * (L - h c) * ((x - y) * (x - y)))
      by (apply Rmult_le_pos; [apply Rmult_le_pos|]; lra).
    nra.
  - assert (0 <= (h c - mu) * (L - h c) * ((x - y) * (x - y)))
      by (apply Rmult_le_pos; [apply Rmult_le_pos|]; lra).
    nra.
Qed.

(** Theorem 2 corrected, for every twice-differentiable f on ℝ with μ ≤ f'' ≤ L and a
    critical point x*: for every η ∈ (0, 2/L) and every t,
    |x_t − x*|² ≤ (1 − ημ(2 − ηL))^t |x_0 − x*|². *)
Theorem one_dim_rate_every_step_size : forall xs eta t x0,
  g xs = 0 -> mu <= L -> 0 < eta -> eta * L < 2 ->
  norm2 real_line (minus real_line (iterate real_line g eta t x0) xs)
    <= factor mu L eta ^ t * norm2 real_line (minus real_line x0 xs).
Proof.
  intros xs eta t x0 Hc HL Heta Hstep.
  destruct one_dim_premises as [Hsm [Hco _]].
  apply rate_every_step_size; auto.
  intros y; simpl; rewrite Hc; ring.
Qed.

(** And the exact threshold on this class: the paper's (1 − ημ)^t holds for every start
    and every t when η ≤ (2L − μ)/L². *)
Theorem one_dim_paper_rate_below_threshold : forall xs eta t x0,
  g xs = 0 -> mu <= L -> 0 < eta -> eta * L < 2 -> eta <= (2 * L - mu) / (L * L) ->
  norm2 real_line (minus real_line (iterate real_line g eta t x0) xs)
    <= (1 - eta * mu) ^ t * norm2 real_line (minus real_line x0 xs).
Proof.
  intros xs eta t x0 Hc HL Heta Hstep Hthr.
  destruct one_dim_premises as [Hsm [Hco Hn]].
  apply (proj2 (stated_rate_threshold mu L eta Hmu HL Heta Hstep)); auto.
  intros y; simpl; rewrite Hc; ring.
Qed.

End OneDimension.
