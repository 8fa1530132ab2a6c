# Tower — `make demo` runs a scene end to end, `make test` runs the tests; both set up what they
# need (Python environment, Kafka, PostgreSQL) and reuse what is already there.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
# One environment per machine, outside the checkout, so clones (and CI) reuse it.
VENV ?= $(HOME)/.cache/tower/venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tower-deps
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

export TOWER_KAFKA_PORT ?= 9092
export TOWER_PG_PORT ?= 5433
export TOWER_KAFKA_BOOTSTRAP ?= 127.0.0.1:$(TOWER_KAFKA_PORT)
export TOWER_DATABASE_URL ?= postgresql://tower@127.0.0.1:$(TOWER_PG_PORT)/tower

KAFKACTL := infra/kafka/kafkactl
PGCTL := infra/postgres/pgctl
COMFYCTL := infra/comfyui/comfyctl
PYTEST_ARGS ?=

.PHONY: help venv services stop lint llama test test-unit test-integration test-faults test-comfyui comfyui comfyui-stop demo bench bench-api bench-scoring bench-scoring-gpu bench-comfy bench-resume bench-parallel bench-learning bench-drain schemas clean panel chromium up down

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

# Dependencies only, not the project: the code runs from the checkout (PYTHONPATH), so every clone
# sharing the environment (CI's included) runs its own code.
$(STAMP): pyproject.toml
	@test -x $(PY) || "$(PYTHON)" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null || \
	  { echo "tower: Python 3.11 not found (PYTHON=$(PYTHON)); set PYTHON=/path/to/python3.11" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { test "$$(id -u)" = 0 && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11-venv && $(PYTHON) -m venv $(VENV); }
	@echo "tower: installing Python dependencies into $(VENV) (the first run downloads PyTorch: several minutes)"
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $$($(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	  print(" ".join(repr(d) for d in p["dependencies"] + p["optional-dependencies"]["test"] + p["optional-dependencies"]["bench"]))' | tr -d "'")
	@touch $(STAMP)

venv: $(STAMP)  ## create or update the Python environment ($(VENV))

services:  ## start Kafka (KRaft) and PostgreSQL unless they are up
	@$(KAFKACTL) start
	@$(PGCTL) start

stop:  ## stop Kafka and PostgreSQL
	-@$(KAFKACTL) stop
	-@$(PGCTL) stop

# llama-cpp-python's OpenAI-compatible server, for the LLM planner's real-server tests (tests/llm):
# built from source (no wheel on PyPI for it) into its own environment, once per machine.
LLAMA_VERSION := 0.3.36
LLAMA_VENV ?= $(HOME)/.cache/tower/llama-venv
LLAMA_STAMP := $(LLAMA_VENV)/.tower-llama-$(LLAMA_VERSION)

$(LLAMA_STAMP):
	@echo "tower: building llama-cpp-python $(LLAMA_VERSION) into $(LLAMA_VENV) (compiles llama.cpp: about 10 minutes on 2 cores, once)"
	@test -x $(LLAMA_VENV)/bin/python || $(PYTHON) -m venv $(LLAMA_VENV)
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(LLAMA_VENV)/bin/python -m pip install -q "llama-cpp-python[server]==$(LLAMA_VERSION)"
	@touch $@

llama: $(LLAMA_STAMP)  ## build llama-cpp-python's server for the LLM planner's real-server tests ($(LLAMA_VENV))

test: venv services panel chromium llama  ## every test: unit, real Kafka + PostgreSQL, real ComfyUI, a real llama.cpp server (set up on first run)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-unit: venv  ## the pure-logic tests only (no services)
	$(PY) -m pytest -q -m "not integration" $(PYTEST_ARGS)

test-integration: venv services  ## the tests that need Kafka and PostgreSQL
	$(PY) -m pytest -q -m "(kafka or postgres) and not comfyui" $(PYTEST_ARGS)

test-faults: venv services  ## the fault-injection tests (fuzzed events, killed workers, outages, broker loss) -> docs/RELIABILITY.md
	TOWER_RELIABILITY_REPORT=1 $(PY) -m pytest -q -s -m faults $(PYTEST_ARGS)

test-comfyui: venv services  ## ComfyUI client tests (fake server + real ComfyUI the suite starts and stops)
	$(PY) -m pytest -q tests/unit/comfy tests/comfyui $(PYTEST_ARGS)

comfyui:  ## start a local ComfyUI 0.3.75 (own venv; first run ~2 min, ~6 GB)
	@$(COMFYCTL) start

comfyui-stop:  ## stop the local ComfyUI
	-@$(COMFYCTL) stop

demo: venv panel  ## start everything, run "Kai fights the dragon" end to end, stop what it started
	PY=$(PY) scripts/demo.sh

# DirectorPanel (panel/): a Vue 3 + Vite app built into panel/dist, which `tower api` serves at /.
# npm ci runs when node_modules is missing or older than the lockfile; the build when a source is
# newer than panel/dist/index.html. Debian's chromium (for tests/browser) is installed as root.
PANEL_SOURCES := $(shell find panel/src -type f 2>/dev/null) panel/index.html panel/vite.config.js panel/package.json
CHROMIUM ?= /usr/bin/chromium

panel: panel/dist/index.html  ## build the DirectorPanel into panel/dist (npm ci + vite), served at / by `tower api`

chromium:  ## Debian's Chromium for the browser tests (installed when missing, as root)
	@test -x $(CHROMIUM) || { test "$$(id -u)" = 0 && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; }; } || \
	  echo "tower: $(CHROMIUM) not found and not root: the browser tests will skip (apt-get install chromium)" >&2

panel/node_modules/.package-lock.json: panel/package-lock.json panel/package.json
	@command -v node >/dev/null && command -v npm >/dev/null || \
	  { echo "tower: node and npm are needed to build the DirectorPanel (Node 20+; Debian: apt-get install nodejs npm)" >&2; exit 1; }
	cd panel && npm ci --no-audit --no-fund
	@touch $@

panel/dist/index.html: panel/node_modules/.package-lock.json $(PANEL_SOURCES)
	cd panel && npm run build
	@touch $@

up: venv services panel  ## start the workers and the API in the background; prints the DirectorPanel's URL
	PY=$(PY) scripts/up.sh

down:  ## stop what `make up` started (workers, API), then Kafka and PostgreSQL
	-PY=$(PY) scripts/up.sh stop
	-@$(KAFKACTL) stop
	-@$(PGCTL) stop

bench: venv services  ## end-to-end benchmark -> docs/BENCHMARKS.md
	$(PY) -m bench.pipeline

bench-drain: venv services  ## how fast planner, refiner and learner drain a topic, and their hops, vs bare aiokafka and Faust forwarders -> docs/BENCHMARKS.md
	$(PY) -m bench.drain

bench-learning: venv services  ## does the loop learn? Thompson vs uniform vs fixed vs the oracle, borrowed priors, a model change -> docs/BENCHMARKS.md
	$(PY) -m bench.learning

bench-parallel: venv services  ## shots in parallel: 1 vs 2 renderer+scorer workers, 1 vs 4 renders in flight (sleep fake) -> docs/BENCHMARKS.md
	$(PY) -m bench.parallel

bench-resume: venv services  ## restart-to-first-message of a killed / stopped worker, dynamic vs static membership -> docs/BENCHMARKS.md
	$(PY) -m bench.resume

bench-api: venv services  ## HTTP API load (wrk) vs raw aiokafka produce -> docs/BENCHMARKS.md
	@command -v wrk >/dev/null || { test "$$(id -u)" = 0 && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }; }; } || \
	  { echo "tower: wrk not found; install it (apt-get install wrk) or run make as root" >&2; exit 1; }
	$(PY) -m bench.api

bench-scoring: venv  ## scoring benchmark (CPU) -> docs/BENCHMARKS.md
	$(PY) -m bench.scoring

bench-scoring-gpu: venv  ## scoring benchmark on CUDA (a GPU machine), and shots per device call -> docs/BENCHMARKS.md
	$(PY) -m bench.scoring --gpu
	$(PY) -m bench.scoring --batching --gpu

bench-comfy: venv  ## ComfyUI client overhead per job -> docs/BENCHMARKS.md
	$(PY) -m bench.comfy_overhead

lint: venv  ## ruff (pyflakes + import order)
	$(PY) -m ruff check .

schemas: venv  ## export the event JSON Schemas to schemas/
	$(PY) -m tower schemas export schemas

clean:  ## remove local state (Kafka and PostgreSQL data, media); the environment stays
	-@$(KAFKACTL) stop
	-@$(PGCTL) stop
	rm -rf .tower media
