(* Prints [Programs.program_lines] (proofs/coq/Programs.v, extracted to programs.ml), one a line.
   Coq's strings are lists of 8-bit characters (least significant bit first); nothing else
   is computed here. *)

let bit b n = match b with Programs.True -> n | Programs.False -> 0

let char_of (Programs.Ascii (b0, b1, b2, b3, b4, b5, b6, b7)) =
  Char.chr (bit b0 1 + bit b1 2 + bit b2 4 + bit b3 8 + bit b4 16 + bit b5 32 + bit b6 64 + bit b7 128)

let rec to_string buf = function
  | Programs.EmptyString -> Buffer.contents buf
  | Programs.String (c, rest) -> Buffer.add_char buf (char_of c); to_string buf rest

let rec print_all = function
  | Programs.Nil -> ()
  | Programs.Cons (s, rest) -> print_endline (to_string (Buffer.create 256) s); print_all rest

let () = print_all Programs.program_lines
