"""Proposition 3 (paper §5.4): the trainer's costs, measured against the paper's cost model.

**Paper.**  Per episode of horizon T: world-model update O(T·|D_P|·d); MI estimation O(M·K·T);
auxiliary evolution O(N·G·T); total O(T(|D_P|·d + MK + NG)).  The abstract adds that isolation costs
O(|D_A|).

**Claim (as checked, for this implementation).**  Time grows with each size as follows (exponent p
of ``time ∝ x^p`` fitted by least squares on log-log axes over a grid spanning a factor 8-256):

* world model: an epoch of trainer updates covering D_P once (⌈|D_P|/256⌉ calls of
  ``WorldModelLearner.update``) and one full-batch update (batch = |D_P|) grow linearly in |D_P|
  (p = 1 ± 0.3); one minibatch update does not grow with the buffer's fill from 4,096 to 1,048,576
  transitions (p = 0 ± 0.1);
* information gain (``gaussian_ensemble_eig``), per scored (s, a) with M outer draws and K members:
  linear in M at K = 8 (M = 128..2048) and linear in K at M = 2048 (K = 16..128), where the M·K
  log-likelihoods dominate (p = 1 ± 0.3); **quadratic** in K at one draw per member, M = K
  (K = 32..256, p = 2 ± 0.5), where the pairwise terms, K² per row and independent of M, weigh most.
  Each after subtracting a fixed per-call cost, with the same number of log-likelihoods in every
  timed call;
* auxiliary evolution: G CEM generations cost linearly in G, and N agents stepping their environments
  linearly in N (p = 1 ± 0.3); one generation grows **quadratically** in the CEM population P
  (p = 2 ± 0.5 at the trainer's 256 probe states);
* the gate: a gated world-model update and ``GatedOptimizer.step`` alone do not grow with the
  auxiliary data |D_A| held by the run (p = 0 ± 0.1), from 4,096 to 262,144 transitions, all alive
  as aux-labelled tensors while measured (the label store grows from 80 to 5,120 entries).  Over a
  factor of 64, |p| ≤ 0.1 bounds any |D_A|-dependent part at about 52% of the step's time at the
  largest size; a gate that scanned the label store on every step (a mutant tried by hand) failed.

**Where the paper's cost model is off for this implementation.**

1. *|D_P|.*  O(T·|D_P|·d) is a full gradient pass over D_P at every step.  The trainer instead takes
   ``wm_updates_per_round`` (25) minibatch steps of B = 256 rows every ``wm_train_every`` (250) steps,
   so its world-model cost per episode is O(T·(25/250)·B·K·d_member) and does **not** grow with |D_P|
   (sampling a batch is O(B)).  "|D_P|" is therefore measured as the cost of covering D_P once.  The
   ensemble size K multiplies the cost: the paper's d is K·d_member here.  A fixed per-update cost not
   proportional to the batch — the gate's check of every protected parameter, the SHA-256 digest of
   all parameters for the ledger, Adam over all parameters, Python dispatch, about 8-20 ms on the small
   models measured — dominates below about 10³ rows, which is why the full-batch series is measured on
   a model at half the paper's widths and its exponent comes out near 0.9 rather than 1.
2. *MI.*  IG is computed per scored (s, a): B pairs per round (the primary transitions of the last
   round, in chunks of 256, plus imagined rollouts), D = obs_dim + 1 output dimensions, and one
   ensemble forward pass O(K·B·d) that does not depend on M; the paper's T stands for B summed over
   rounds.  Per pair, the estimator (each log-density a quadratic form, float64) costs
   c₁·M·K·D + c₂·K²·D + c₃·M·D: the M·K log-likelihoods, the pairwise terms W_jk = a_k(μ_k − μ_j)
   and Q_jk (K² of them, built once per state whatever M), and drawing the M observations.  Since
   M ≥ K (at least one draw per member), the paper's O(M·K) holds as a bound (times D), but the cost
   is not proportional to M·K: at fixed K it is affine in M with an intercept ∝ K², so the O(M·K)
   *growth* is what is seen where M ≫ K (the trainer's defaults, K = 20 and 5 draws per member, are
   not far from M = K), and at M = K the pairwise part is of the same order as the rest.  The checks
   measure the regimes separately: linear in M and in K with at least 16 draws per member, quadratic
   in K at one draw per member (there the M·K part is K² as well; the series does not separate the
   two).  The estimator is memory-bound (a chain of batched products and elementwise passes over
   B·M·K-element intermediates): measured on this machine (2 cores, 1 MB L2 per core, a 32 MB L3
   shared with other processes), its cost per log-likelihood changes 2-3× between cache regimes
   (jumps around 0.5, 1-2 and 8-16 MB per intermediate), and fits whose points straddled them gave
   exponents from 0.5 to 2 from one run to the next.  So every timed call holds the same number of
   log-likelihoods, B·M·K = 2¹⁸ (2 MB per intermediate), the rows per call varying with M·K, and
   the time is fitted per scored row after subtracting the estimator's fixed per-call cost (input
   validation, Python dispatch: about 0.2-0.5 ms depending on the load, measured in the same rounds on
   the smallest call, K = 2 and one row).  At fixed M the c₃·M·D part does not grow with K and short
   reductions over K cost more per entry at small K, which pulls the K series below 1.  Memory is
   O(B·M·K) for the log-likelihood matrix plus O(K²·D) per block of states for the pairwise terms.
3. *N·G.*  The paper uses one N for the auxiliary agents and the CEM candidates (Algorithm 1 evolves
   the agents themselves).  Here the CEM population P (Table 1: 100) is sampled and scored, and the
   best N (Table 1: 16) become the agents.  A generation costs O(P·dim) for ask/tell,
   O(P·B_probe·d_π) for the candidates' behaviour on the probe set, and O(P²·B_probe·A) time and
   memory for the all-pairs Diversity term; at the trainer's 256 probe states the quadratic term
   dominates from P ≈ 64 (P = 256 allocates 134 MB per pairwise intermediate), so the cost is
   quadratic in the population, not linear.  G, the number of generations per episode, is
   T / ``cem_every``; each costs the same (measured p ≈ 1).  N enters through stepping the agents
   (O(N·T) environment steps, not in the paper's model); a fixed per-step cost of the batched policy
   forward pass makes the measured exponent about 0.9.
4. *The gate.*  The abstract's O(|D_A|) is not what isolation costs here: the gate never reads
   auxiliary data; per step it looks up the label of each protected parameter's gradient and value
   (O(number of protected parameters), dictionary lookups), whatever the size of the auxiliary data.

**Assumptions.**  CPU PyTorch, one intra-op thread, synthetic CartPole-shaped data (costs do not depend
on the values), small world models (K = 5 members at 1/8 of the paper's widths; 1/2 for the full-batch
series); CPU time of the measuring process (``time.process_time``), the median of 3-5 interleaved
rounds in shuffled order after a warm-up call (information gain: the smallest of 3 passes' medians of 5
rounds).  Other load on the machine perturbs the timings
(shared caches and memory bandwidth still count), which the generous tolerances absorb.

**Discharge.**  ``properties/test_proposition3_costs.py::test_proposition3_costs`` (a timing
measurement, marker ``benchmark``: run with ``--run-benchmarks``, about 1-2 minutes of CPU, so only in
the full report).  It records every series (x, seconds, fitted and expected exponent, tolerance) as the
evidence ``proposition3_costs``.  Verdict at best "tested": exponents fitted on finite grids on one
machine are measurements, not an asymptotic proof.  ``benchmarks/proposition3_costs.py`` runs the same
measurement and prints it as a table.
"""

from __future__ import annotations

from amal_tools.compliance.obligation import Check, Kind, Method, Obligation

OBLIGATION = Obligation(
    id="proposition3-costs",
    title="Proposition 3: computational costs (measured exponents)",
    paper="§5.4, Proposition 3; abstract (isolation overhead)",
    claim=(
        "Measured with the trainer's own code: an epoch of world-model updates over D_P and a full-batch "
        "update cost O(|D_P|), one minibatch update O(1) in |D_P|; the information-gain estimator costs "
        "O(M·K) per scored pair where the M outer draws dominate (linear in M at fixed K and in K at "
        "fixed M, with M/K >= 16), plus pairwise terms that grow as K² and do not depend on M (at one "
        "draw per member, M = K, the cost is quadratic in K); G CEM generations cost O(G) and stepping "
        "N auxiliary agents O(N), while one generation is quadratic in the CEM population (all-pairs "
        "diversity); the gate's cost does not grow with the auxiliary data |D_A|."
    ),
    assumptions=(
        "one CPU thread, torch CPU; CPU time of the measuring process, median of interleaved rounds",
        "small world models (K = 5 members, 1/8 of the paper's widths; 1/2 for the full-batch series)",
        "synthetic CartPole-shaped data: costs do not depend on the values",
        "exponents fitted by least squares on log-log axes over finite grids (factor 8-256), "
        "tolerance ±0.3 (±0.5 for the quadratic series, ±0.1 for expected 0)",
        "the information-gain series hold the same number of log-likelihoods (B·M·K = 2^18) in every timed "
        "call, have the estimator's fixed per-call cost (measured on its smallest call) subtracted, and "
        "are fitted per scored pair",
    ),
    kind=Kind.CLAIM,
    checks=(
        Check(
            name="fitted cost exponents",
            method=Method.MEASUREMENT,
            target="properties/test_proposition3_costs.py::test_proposition3_costs",
            files=(
                "amal_verified/world_model/learner.py",
                "amal_verified/world_model/ensemble.py",
                "amal_verified/isolation/buffers.py",
                "amal_verified/world_model/information_gain.py",
                "amal_verified/agents/rollouts.py",
                "amal_verified/agents/cem.py",
                "amal_verified/agents/aux_population.py",
                "amal_verified/isolation/gate.py",
                "amal_verified/isolation/_engine/label_store.py",
                "amal_verified/run/trainer.py",
            ),
            quick=False,
            timeout_s=900.0,
        ),
    ),
    notes=(
        "The paper's model is off in four places (module docstring of proofs/proposition3_costs.py): the "
        "trainer's world-model cost per episode does not grow with |D_P| (fixed minibatch steps); IG is "
        "O(M·K·B·D) per round with B scored pairs, of which a pairwise part O(K²·B·D) does not depend "
        "on M; CEM evolution is quadratic in the population, which the paper conflates with the N "
        "agents; the gate costs O(#parameters) per step, not O(|D_A|)."
    ),
)
