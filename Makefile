# The two commands a newcomer needs (see README):  make demo  and  make test.
# Both create .venv in the repository root and install torch as `torch==2.13.0`:
# on these machines that is a CPU wheel on disk; any other spec downloads a multi-GB CUDA build.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck coq coq-vectors unit unit-beside-report quick-report report audit bench bench-quick bench-full clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11) on PATH, or run: make PYTHON=python3 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml tools/pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]' -e tools
	@touch $(STAMP)

# The main job: the gate demo, then a short AMAL run on CartPole-v1 (paper defaults, fewer steps),
# its evaluation on the real environment, and its certificate (replay from primary data alone).
DEMO_STEPS ?= 6000
DEMO_RUN ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

demo: $(STAMP)
	$(BIN)/amal demo
	$(BIN)/amal train --env CartPole-v1 --steps $(DEMO_STEPS) --seed 0 --out $(DEMO_RUN)
	$(BIN)/amal evaluate $(DEMO_RUN) --episodes 10
	$(BIN)/amal certify $(DEMO_RUN)

lint: $(STAMP)
	$(BIN)/ruff check amal_verified tools tests properties proofs examples benchmarks
	$(BIN)/ruff format --check amal_verified tools tests properties proofs examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict amal_verified tools/amal_tools

# The Coq development (proofs/coq; proofs/README.md): compiled in _CoqProject's order, in place; fails if a
# file does not compile. Without coqc it says how to install Coq, and fails if AMAL_REQUIRE_COQ is set (CI
# sets it); otherwise it goes on, and the report shows the Coq checks "not checked".
COQ_DIR := proofs/coq
COQ_INSTALL := apt-get install -y coq
coq:
	@if ! command -v coqc >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "coqc not found: installing Debian's Coq (running as root)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends coq >/dev/null \
			|| { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends coq >/dev/null; }; \
	fi
	@if ! command -v coqc >/dev/null 2>&1; then \
		echo "coqc not found: the Coq proofs are not checked. Install Coq 8.16: $(COQ_INSTALL)"; \
		if [ -n "$$AMAL_REQUIRE_COQ" ]; then exit 1; fi; \
	else \
		cd $(COQ_DIR) && for f in $$(grep -E '^[^-].*\.v$$' _CoqProject); do \
			echo "coqc $$f"; coqc -q -Q . AmalVerified $$f || exit 1; \
		done; \
	fi

# Rewrite proofs/coq/vectors.txt (the lattice and gate decision as Coq computes them) from a fresh build,
# and proofs/coq/programs.txt (generated programs run by Isolation.v's semantics, extracted to OCaml and
# compiled with ocamlfind in a scratch directory).
coq-vectors: coq $(STAMP)
	$(BIN)/python -m amal_tools.compliance.coq_vectors $(COQ_DIR)/vectors.out > $(COQ_DIR)/vectors.txt
	$(BIN)/python -m amal_tools.compliance.coq_programs $(COQ_DIR) > $(COQ_DIR)/programs.txt.new
	mv $(COQ_DIR)/programs.txt.new $(COQ_DIR)/programs.txt

# The whole suite but the core mutation run (minutes; the quick report runs it), on every core
# (pytest-xdist).
unit: $(STAMP)
	$(BIN)/python -m pytest tests properties -m "not mutation" -n auto

# What the quick report does not run itself: with it, every test of the suite runs once.
unit-beside-report: $(STAMP)
	$(BIN)/python -m pytest tests properties --leave-to-report -n auto

# The unit tests without the slow, end-to-end ones (training runs in subprocesses, benchmarks' smoke
# runs, CrossHair, torch.compile): under two minutes on one core. `make test` runs everything.
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -m "not slow" -q

# The compliance report CI builds: every proof obligation, default Hypothesis profile, no timing runs.
quick-report: $(STAMP)
	rm -rf build/report-quick
	$(BIN)/amal report --quick --jobs 2 --out build/report-quick

# The full report (by hand; 45-80 min on 2 cores, most of it the run of every core mutant): audit Hypothesis
# profile, every core mutant and the timing measurements.
REPORT_OUT ?= build/report-$(shell date +%Y%m%d-%H%M%S)
report: $(STAMP)
	$(BIN)/amal report --jobs 2 --out $(REPORT_OUT)

test: lint typecheck coq unit-beside-report quick-report

audit: $(STAMP)
	$(BIN)/python -m pytest properties --hypothesis-profile=audit

bench: $(STAMP)
	$(BIN)/python benchmarks/gate_overhead.py

# The paper's evaluation framework. Quick: a smoke run of every quick task and method, one seed, 500
# steps per cell (under 10 minutes on 2 cores): benchmarks/results/quick/RESULTS.md. Full (the
# measurement, 3 seeds; tens of hours on 2 cores): benchmarks/RESULTS.md, resumable; rerun to continue,
# or run a sitting on some tasks only with TASKS="NewsFilter Trading". Finished cells are kept in
# benchmarks/results/full/, and RESULTS.md always covers the whole grid, listing the cells not run yet.
bench-quick: $(STAMP)
	$(BIN)/amal bench --quick --jobs 2 --out benchmarks/results/quick

bench-full: $(STAMP)
	$(BIN)/amal bench --full --jobs 2 $(if $(TASKS),--tasks $(TASKS)) --out benchmarks/results/full \
		--results benchmarks/RESULTS.md
	$(BIN)/amal bench --full --out benchmarks/results/full --results benchmarks/RESULTS.md --report-only

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
	rm -f $(COQ_DIR)/*.vo $(COQ_DIR)/*.vok $(COQ_DIR)/*.vos $(COQ_DIR)/*.glob $(COQ_DIR)/.*.aux $(COQ_DIR)/*.out
