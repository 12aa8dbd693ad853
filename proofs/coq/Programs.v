(** * Program vectors: whole programs of [Isolation.v]'s language, run by Coq

    [Isolation.v] proves Theorem 1 for a language whose values and operations are
    abstract.  Here the language is instantiated with concrete ones (values are
    residues modulo 1009, five operations, one of them label-neutral), a
    deterministic pseudo-random generator builds [program_count] programs of it, and
    the language's own definitions ([exec], [run], [step_refused]) run each of them
    on two data streams that agree on every primary source and differ on the
    auxiliary ones.  [program_lines] is the result as text; it is extracted to
    OCaml ([programs.ml], written when this file is compiled) and
    [programs_main.ml] prints it, one line each: [make coq-vectors] stores the lines
    as [programs.txt], and [properties/test_reference_coq_programs.py] runs
    the same programs with [reference.py] and compares.

    A program is a block of lines (fields separated by [|], location lists by
    commas, labels as their sources in the universe's order, comma-separated,
    [kind:name]):

    - [program|N|locations=L|protected=LOCS|steps=T]: program [N] over locations
      [0 .. L-1], [LOCS] protected, [T] training steps;
    - [init|LOC|LABEL|VALUE]: the initial memory, one line per location (protected
      locations start without auxiliary sources: Theorem 1's [clean init]);
    - the body of training step [t], one line per command [i]:
      [cmd|t|i|input|SOURCE|K|DST|DA|DB] (the [K]-th datum of [SOURCE], [DA] in
      stream [A] and [DB] in stream [B]), [cmd|t|i|op|OP|SRCS|DST],
      [cmd|t|i|write_part|OP|SRCS|DST], and
      [cmd|t|i|step|gated or ungated|OP|P:G,...|EXTRA] (parameter [P] updated
      with gradient [G]; the parameters of a step are distinct);
    - [outcome|t|i|S|applied or refused|NAMES] for each step command, in stream
      [S]: whether the language's step is refused at that point of the program
      ([step_refused]), and [Labels.gate_decision] on the step's gradients, the
      parameters named [l<loc>];
    - [memory|t|LABEL/VA/VB;...]: every location after training step [t], in
      location order ([run]): its label and its value in streams [A] and [B]. *)

From Coq Require Import Bool List String Ascii NArith Arith.
From AmalVerified Require Import Labels Isolation.
Import ListNotations.
Local Open Scope string_scope.

(** ** The instantiation: values, operations, data *)

Definition modulus : N := 1009.

Inductive opk := Add | Mul | Mix | Zeros | Sgd.

Definition sum_mod (vs : list N) : N := fold_left (fun a v => N.modulo (a + v)%N modulus) vs 0%N.

(** [Mix] depends on the order of its arguments; [Sgd] is [p - g + 3 * (sum of the rest)]. *)
Definition eval (o : opk) (vs : list N) : N :=
  match o with
  | Add => sum_mod vs
  | Mul => fold_left (fun a v => N.modulo (a * v)%N modulus) vs 1%N
  | Mix => fold_left (fun a v => N.modulo (a * 31 + v + 1)%N modulus) vs 7%N
  | Zeros => 0%N
  | Sgd =>
      match vs with
      | p :: g :: rest => N.modulo (p + (modulus - 1) * g + 3 * sum_mod rest)%N modulus
      | _ => 0%N
      end
  end.

Definition neutral (o : opk) : bool := match o with Zeros => true | _ => false end.

(** The premise [Isolation.v]'s theorems take of the operations holds here. *)
Lemma eval_neutral_ignores_values : forall o vs ws,
  neutral o = true -> List.length vs = List.length ws -> eval o vs = eval o ws.
Proof. intros [] vs ws H _; try discriminate; reflexivity. Qed.

Definition universe : list source :=
  [Source Primary "a"; Source Primary "b"; Source Aux "a"; Source Aux "b"; Source Aux "c"].

Fixpoint index_of (s : source) (l : list source) : nat :=
  match l with
  | [] => 0
  | x :: rest => if source_eqb s x then 0 else S (index_of s rest)
  end.

(** The linear congruential generator of the C standard's example (modulo 2^31, as a mask). *)
Definition lcg (s : N) : N := N.land (s * 1103515245 + 12345)%N 2147483647.

Definition stream_A : N := 0.
Definition stream_B : N := 1.

(** The [k]-th datum of source [s] at training step [t]: the same in both streams for a
    primary source, different (as a rule) for an auxiliary one. *)
Definition datum (stream : N) (t : nat) (s : source) (k : nat) : N :=
  let salt := match skind s with Primary => 0%N | Aux => (1 + stream)%N end in
  N.modulo (N.shiftr (lcg (lcg (N.of_nat (index_of s universe) * 7919 + N.of_nat t * 104729
                             + N.of_nat k * 1299709 + salt * 15485863)%N)) 16) modulus.

Lemma streams_agree_on_primary : data_agree_on_primary N (datum stream_A) (datum stream_B).
Proof. intros t s k Hs; unfold datum; rewrite Hs; reflexivity. Qed.

(** ** Programs *)

Record program := Program {
  size : nat;
  prot : list loc;
  init_cells : list (label * N);
  bodies : list (list (cmd opk))
}.

Definition protected (p : program) (l : loc) : bool := existsb (Nat.eqb l) (prot p).

Definition init (p : program) : Isolation.mem N :=
  fun l => let (lb, v) := nth l (init_cells p) ([], 0%N) in Cell N v lb.

Definition body (p : program) (t : nat) : list (cmd opk) := nth t (bodies p) [].

(** Memory after [t] training steps of stream [stream]: [Isolation.run]. *)
Definition memory_after (p : program) (stream : N) (t : nat) : Isolation.mem N :=
  run N opk eval neutral (protected p) (body p) (init p) (datum stream) t.

(** Memory before command [i] of training step [t]: [Isolation.exec] of the body's first [i]
    commands. *)
Definition memory_before (p : program) (stream : N) (t i : nat) : Isolation.mem N :=
  exec N opk eval neutral (protected p) (datum stream t) (memory_after p stream t)
       (firstn i (body p t)).

(** ** The generator (a state monad over the generator's seed) *)

Definition Gen (A : Type) := N -> A * N.
Definition ret {A} (a : A) : Gen A := fun s => (a, s).
Definition bind {A B} (g : Gen A) (f : A -> Gen B) : Gen B :=
  fun s => let (a, s') := g s in f a s'.
Notation "x <- g ;; k" := (bind g (fun x => k)) (at level 61, g at next level, right associativity).

Definition below (n : nat) : Gen nat :=
  fun s => let s' := lcg s in (N.to_nat (N.modulo (N.shiftr s' 16) (N.of_nat n)), s').
Definition chance (num den : nat) : Gen bool := x <- below den ;; ret (Nat.ltb x num).
Definition choose {A} (d : A) (xs : list A) : Gen A := i <- below (List.length xs) ;; ret (nth i xs d).

Fixpoint repeat_gen {A} (n : nat) (g : Gen A) : Gen (list A) :=
  match n with
  | 0 => ret []
  | S n' => x <- g ;; xs <- repeat_gen n' g ;; ret (x :: xs)
  end.

Fixpoint map_gen {A B} (f : A -> Gen B) (xs : list A) : Gen (list B) :=
  match xs with
  | [] => ret []
  | x :: rest => y <- f x ;; ys <- map_gen f rest ;; ret (y :: ys)
  end.

(** [n] distinct elements of [pool] (fewer if [pool] is shorter). *)
Fixpoint distinct (n : nat) (pool : list loc) : Gen (list loc) :=
  match n with
  | 0 => ret []
  | S n' =>
      match pool with
      | [] => ret []
      | _ => x <- choose 0 pool ;; xs <- distinct n' (filter (fun y => negb (Nat.eqb y x)) pool) ;;
             ret (x :: xs)
      end
  end.

Definition subset (xs : list source) : Gen label :=
  keep <- map_gen (fun _ => chance 1 3) xs ;;
  ret (map snd (filter fst (combine keep xs))).

Definition primary_sources : list source := filter (fun s => negb (has_aux [s])) universe.

Definition gen_cell (prot : list loc) (l : loc) : Gen (label * N) :=
  lb <- subset (if existsb (Nat.eqb l) prot then primary_sources else universe) ;;
  v <- below 1009 ;;
  ret (lb, N.of_nat v).

(** A location, with a bias towards the protected ones (half the draws) when [bias]. *)
Definition gen_loc (size : nat) (prot : list loc) (bias : bool) : Gen loc :=
  b <- chance 1 2 ;;
  if bias && b then choose 0 prot else below size.

Definition gen_cmd (size : nat) (prot : list loc) : Gen (cmd opk) :=
  kind <- below 10 ;;
  if Nat.ltb kind 3 then
    s <- choose (Source Primary "a") universe ;; k <- below 3 ;; dst <- gen_loc size prot true ;;
    ret (Input opk s k dst)
  else if Nat.ltb kind 6 then
    o <- choose Add [Add; Mul; Mix; Zeros] ;; n <- below 4 ;; srcs <- repeat_gen n (below size) ;;
    dst <- gen_loc size prot true ;; ret (Op opk o srcs dst)
  else if Nat.ltb kind 8 then
    o <- choose Add [Add; Mul; Mix; Zeros] ;; n <- below 3 ;; srcs <- repeat_gen n (below size) ;;
    dst <- gen_loc size prot true ;; ret (WritePart opk o srcs dst)
  else
    gated <- chance 2 3 ;; o <- choose Sgd [Sgd; Mix] ;; n <- below 3 ;;
    onprot <- chance 3 4 ;;
    params <- distinct (S n) (if onprot then prot else seq 0 size) ;;
    grads <- repeat_gen (List.length params) (below size) ;;
    ne <- below 3 ;; extra <- repeat_gen ne (gen_loc size prot true) ;;
    ret (Step opk gated o (combine params grads) extra).

Definition gen_program : Gen program :=
  size <- (n <- below 6 ;; ret (8 + n)) ;;
  mask <- repeat_gen (size - 1) (chance 1 3) ;;
  let prot := 0 :: map fst (filter snd (combine (seq 1 (size - 1)) mask)) in
  cells <- map_gen (gen_cell prot) (seq 0 size) ;;
  steps <- below 4 ;;
  bodies <- repeat_gen (S steps) (n <- below 9 ;; repeat_gen (2 + n) (gen_cmd size prot)) ;;
  ret (Program size prot cells bodies).

Definition program_count : nat := 400.

Definition program_of (i : nat) : program := fst (gen_program (lcg (N.of_nat i * 2654435761 + 1)%N)).

(** Theorem 1 applies to every generated program: each starts with its protected memory free
    of auxiliary sources (checked by computation), so the protected memory has the same
    trajectory in both streams. *)

Definition clean_init_b (p : program) : bool :=
  forallb (fun l => negb (has_aux (lab N (init p l)))) (prot p).

Lemma clean_init_of_check : forall p, clean_init_b p = true -> clean N (protected p) (init p).
Proof.
  intros p H l Hl; unfold clean_init_b in H; rewrite forallb_forall in H.
  unfold protected in Hl; apply existsb_exists in Hl as [x [Hx Heq]].
  apply Nat.eqb_eq in Heq; subst x; apply negb_true_iff, H, Hx.
Qed.

Lemma generated_programs_clean :
  forallb (fun n => clean_init_b (program_of n)) (seq 0 program_count) = true.
Proof. vm_compute; reflexivity. Qed.

Corollary generated_protected_trajectories_agree : forall n t l,
  n < program_count -> protected (program_of n) l = true ->
  memory_after (program_of n) stream_A t l = memory_after (program_of n) stream_B t l.
Proof.
  intros n t l Hn Hl; unfold memory_after.
  apply (theorem1_isolation N opk eval neutral eval_neutral_ignores_values); auto.
  - apply clean_init_of_check.
    pose proof generated_programs_clean as H; rewrite forallb_forall in H.
    apply H, in_seq; split; [apply Nat.le_0_l | exact Hn].
  - exact streams_agree_on_primary.
Qed.

(** ** Printing *)

Fixpoint show_nat_aux (fuel n : nat) (acc : string) : string :=
  match fuel with
  | 0 => acc
  | S f =>
      let acc' := String (ascii_of_nat (48 + n mod 10)) acc in
      if Nat.ltb n 10 then acc' else show_nat_aux f (n / 10) acc'
  end.

Definition show_nat (n : nat) : string := show_nat_aux 8 n "".
Definition show_N (n : N) : string := show_nat (N.to_nat n).

Fixpoint sep (s : string) (xs : list string) : string :=
  match xs with
  | [] => ""
  | [x] => x
  | x :: rest => x ++ s ++ sep s rest
  end.

Definition show_source (s : source) : string :=
  (match skind s with Primary => "primary:" | Aux => "aux:" end) ++ sname s.

Definition show_label (l : label) : string :=
  sep "," (map show_source (filter (fun s => Labels.mem s l) universe)).

Definition show_locs (ls : list loc) : string := sep "," (map show_nat ls).

Definition show_op (o : opk) : string :=
  match o with Add => "add" | Mul => "mul" | Mix => "mix" | Zeros => "zeros" | Sgd => "sgd" end.

Definition show_stream (stream : N) : string := if N.eqb stream stream_A then "A" else "B".

Definition param_name (l : loc) : string := "l" ++ show_nat l.

Definition show_cmd (t i : nat) (c : cmd opk) : string :=
  "cmd|" ++ show_nat t ++ "|" ++ show_nat i ++ "|" ++
  match c with
  | Input _ s k dst =>
      "input|" ++ show_source s ++ "|" ++ show_nat k ++ "|" ++ show_nat dst ++ "|"
      ++ show_N (datum stream_A t s k) ++ "|" ++ show_N (datum stream_B t s k)
  | Op _ o srcs dst => "op|" ++ show_op o ++ "|" ++ show_locs srcs ++ "|" ++ show_nat dst
  | WritePart _ o srcs dst => "write_part|" ++ show_op o ++ "|" ++ show_locs srcs ++ "|" ++ show_nat dst
  | Step _ gated o ups extra =>
      "step|" ++ (if gated then "gated" else "ungated") ++ "|" ++ show_op o ++ "|"
      ++ sep "," (map (fun '(p, g) => show_nat p ++ ":" ++ show_nat g) ups) ++ "|" ++ show_locs extra
  end.

Definition outcome_line (p : program) (stream : N) (t i : nat) (c : cmd opk) : list string :=
  match c with
  | Step _ gated o ups extra =>
      let m := memory_before p stream t i in
      let nups := map (fun pg => (param_name (fst pg), pg)) ups in
      ["outcome|" ++ show_nat t ++ "|" ++ show_nat i ++ "|" ++ show_stream stream ++ "|"
       ++ (if step_refused N opk eval (protected p) m gated o ups extra then "refused" else "applied")
       ++ "|" ++ sep "," (gate_decision (named_grads N m nups) (map fst nups))]
  | _ => []
  end.

(** Labels are those of stream [A]: by [run_noninterference] both streams have the same. *)
Definition show_memory (p : program) (t : nat) : string :=
  let mA := memory_after p stream_A t in
  let mB := memory_after p stream_B t in
  sep ";" (map (fun l => show_label (lab N (mA l)) ++ "/" ++ show_N (val N (mA l)) ++ "/"
                         ++ show_N (val N (mB l)))
               (seq 0 (size p))).

Definition step_lines (p : program) (t : nat) : list string :=
  let cmds := combine (seq 0 (List.length (body p t))) (body p t) in
  app (map (fun '(i, c) => show_cmd t i c) cmds)
      (app (flat_map (fun stream => flat_map (fun '(i, c) => outcome_line p stream t i c) cmds)
                     [stream_A; stream_B])
           ["memory|" ++ show_nat t ++ "|" ++ show_memory p (S t)]).

Definition program_block (n : nat) (p : program) : list string :=
  ("program|" ++ show_nat n ++ "|locations=" ++ show_nat (size p) ++ "|protected="
   ++ show_locs (prot p) ++ "|steps=" ++ show_nat (List.length (bodies p)))
  :: app (map (fun '(l, (lb, v)) => "init|" ++ show_nat l ++ "|" ++ show_label lb ++ "|" ++ show_N v)
              (combine (seq 0 (size p)) (init_cells p)))
         (flat_map (step_lines p) (seq 0 (List.length (bodies p)))).

Definition program_lines : list string :=
  flat_map (fun n => program_block n (program_of n)) (seq 0 program_count).

Require Extraction.
Extraction Language OCaml.
Extraction "programs.ml" program_lines.
