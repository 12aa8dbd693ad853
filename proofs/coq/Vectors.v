(** * Test vectors: the lattice and the gate decision, computed by Coq

    The functions of [Labels.v] evaluated on every label over the universe of
    [reference.SOURCES] (primary:a, aux:a, aux:b: 8 labels) and, for the gate, on
    two parameters [p] and [q], each without a gradient or with any of the 8 labels,
    and every protected subset.  Building this file writes [vectors.out]
    ([Redirect]); [tests/isolation/test_reference_coq_vectors.py] checks [reference.py] against the
    lines, one per case, in the format

    - [join|A|B|A⊔B], [flows_to|A|B|bool], [has_aux|A|bool], [aux_part|A|aux(A)],
    - [op_label|A|B|neutral|label], [inplace_label|T|A|whole|label]
      (inputs [[A]] for the in-place write),
    - [gate|P|Q|protected|refused], where [P], [Q] are a label or [none] (no
      gradient) and [protected], [refused] are sets of names,
    - [gated_step|P|Q|protected|bool]: whether the gated step of the language of
      [Isolation.v] (the one Theorem 1 is proved for) refuses, for parameters [p]
      and [q] with empty labels, gradients labelled [P] and [Q] (or none), and the
      protected parameters with a gradient in the gated optimizer,

    labels written as their sources in the universe's order, comma-separated
    ([kind:name]). *)

From Coq Require Import Bool List String.
From AmalVerified Require Import Labels Isolation.
Import ListNotations.
Local Open Scope string_scope.

Definition universe : list source :=
  [Source Primary "a"; Source Aux "a"; Source Aux "b"].

Fixpoint subsets (l : list source) : list label :=
  match l with
  | [] => [[]]
  | s :: rest => let rs := subsets rest in rs ++ map (cons s) rs
  end%list.

Definition all_labels : list label := subsets universe.

Definition canon (l : label) : label := filter (fun s => Labels.mem s l) universe.

Definition show_source (s : source) : string :=
  (match skind s with Primary => "primary:" | Aux => "aux:" end) ++ sname s.

Fixpoint sep (xs : list string) : string :=
  match xs with
  | [] => ""
  | [x] => x
  | x :: rest => x ++ "," ++ sep rest
  end.

Definition show_label (l : label) : string := sep (map show_source (canon l)).
Definition show_bool (b : bool) : string := if b then "true" else "false".

Definition pairs {A : Type} (xs : list A) : list (A * A) := list_prod xs xs.

Definition lattice_lines : list string :=
  map (fun '(a, b) =>
         "join|" ++ show_label a ++ "|" ++ show_label b ++ "|" ++ show_label (join a b))
      (pairs all_labels)
  ++ map (fun '(a, b) =>
         "flows_to|" ++ show_label a ++ "|" ++ show_label b ++ "|" ++ show_bool (flows_tob a b))
      (pairs all_labels)
  ++ map (fun a => "has_aux|" ++ show_label a ++ "|" ++ show_bool (has_aux a)) all_labels
  ++ map (fun a => "aux_part|" ++ show_label a ++ "|" ++ show_label (aux_part a)) all_labels
  ++ flat_map (fun '(a, b) =>
       map (fun n => "op_label|" ++ show_label a ++ "|" ++ show_label b ++ "|" ++ show_bool n
                     ++ "|" ++ show_label (op_label [a; b] n)) [false; true])
      (pairs all_labels)
  ++ flat_map (fun '(t, a) =>
       map (fun w => "inplace_label|" ++ show_label t ++ "|" ++ show_label a ++ "|" ++ show_bool w
                     ++ "|" ++ show_label (inplace_label t [a] w)) [false; true])
      (pairs all_labels).

Definition grad_choices : list (option label) := None :: map Some all_labels.

Definition show_choice (c : option label) : string :=
  match c with None => "none" | Some l => show_label l end.

Definition grads_of (cp cq : option label) : list (string * label) :=
  (match cp with None => [] | Some l => [("p", l)] end)
  ++ (match cq with None => [] | Some l => [("q", l)] end).

Definition protected_sets : list (list string) := [[]; ["p"]; ["q"]; ["p"; "q"]].

Definition gate_lines : list string :=
  flat_map (fun '(cp, cq) =>
    map (fun prot => "gate|" ++ show_choice cp ++ "|" ++ show_choice cq ++ "|" ++ sep prot ++ "|"
                     ++ sep (gate_decision (grads_of cp cq) prot)) protected_sets)
    (pairs grad_choices).

(** The language of [Isolation.v] on a memory of four locations: parameters [p] (0)
    and [q] (1), their gradients (2, 3); values play no part in the decision. *)
Definition step_memory (cp cq : option label) : Isolation.mem unit :=
  fun l => match l with
           | 2 => Cell unit tt (match cp with Some g => g | None => [] end)
           | 3 => Cell unit tt (match cq with Some g => g | None => [] end)
           | _ => Cell unit tt []
           end%nat.

Definition step_updates (cp cq : option label) (prot : list string) : list (loc * loc) :=
  (if existsb (String.eqb "p") prot then match cp with Some _ => [(0, 2)] | None => [] end else [])
  ++ (if existsb (String.eqb "q") prot then match cq with Some _ => [(1, 3)] | None => [] end else []).

Definition language_refuses (cp cq : option label) (prot : list string) : bool :=
  step_refused unit unit (fun _ _ => tt) (fun _ => true) (step_memory cp cq) true tt
               (step_updates cp cq prot) [].

Definition step_lines : list string :=
  flat_map (fun '(cp, cq) =>
    map (fun prot => "gated_step|" ++ show_choice cp ++ "|" ++ show_choice cq ++ "|" ++ sep prot ++ "|"
                     ++ show_bool (language_refuses cp cq prot)) protected_sets)
    (pairs grad_choices).

Definition vectors : list string := lattice_lines ++ gate_lines ++ step_lines.

Redirect "vectors" Compute vectors.
