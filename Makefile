# Tower — `make demo` runs a scene end to end, `make test` runs the tests; both set up what they
# need (Python environment, Kafka, PostgreSQL) and reuse what is already there.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
# One environment per machine, outside the checkout, so clones (and CI) reuse it. Every first-run
# step goes through infra/setup (or the service scripts), which locks it and marks it complete only
# after success: two makes at once build once, and an interrupted one is rebuilt, not reused.
export TOWER_CACHE_DIR ?= $(HOME)/.cache/tower
VENV ?= $(TOWER_CACHE_DIR)/venv
PY := $(VENV)/bin/python
SETUP := infra/setup
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

export TOWER_KAFKA_PORT ?= 9092
export TOWER_PG_PORT ?= 5433
export TOWER_KAFKA_BOOTSTRAP ?= 127.0.0.1:$(TOWER_KAFKA_PORT)
export TOWER_DATABASE_URL ?= postgresql://tower@127.0.0.1:$(TOWER_PG_PORT)/tower

KAFKACTL := infra/kafka/kafkactl
PGCTL := infra/postgres/pgctl
COMFYCTL := infra/comfyui/comfyctl
PYTEST_ARGS ?=

.PHONY: help venv services stop lint llama test test-fresh screenshots test-unit test-integration test-faults test-comfyui comfyui comfyui-stop demo bench bench-api bench-scoring bench-scoring-gpu bench-comfy bench-comfy-gpu test-models bench-resume bench-parallel bench-learning bench-drain bench-cli bench-memory bench-memory-scale schemas clean panel chromium up down

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

# Dependencies only, not the project: the code runs from the checkout (PYTHONPATH), so every clone
# sharing the environment (CI's included) runs its own code.
venv:  ## create or update the Python environment ($(VENV))
	@PYTHON="$(PYTHON)" $(SETUP) venv "$(VENV)"

services:  ## start Kafka (KRaft) and PostgreSQL unless they are up
	@$(KAFKACTL) start
	@$(PGCTL) start

stop:  ## stop Kafka and PostgreSQL
	-@$(KAFKACTL) stop
	-@$(PGCTL) stop

# llama-cpp-python's OpenAI-compatible server, for the LLM planner's real-server tests (tests/llm):
# built from source (no wheel on PyPI for it) into its own environment, once per machine.
LLAMA_VENV ?= $(TOWER_CACHE_DIR)/llama-venv
export TOWER_LLAMA_PYTHON ?= $(LLAMA_VENV)/bin/python

llama:  ## build llama-cpp-python's server for the LLM planner's real-server tests ($(LLAMA_VENV))
	@PYTHON="$(PYTHON)" $(SETUP) llama "$(LLAMA_VENV)"

test: lint services panel chromium llama  ## the lint, then every test: unit, real Kafka + PostgreSQL, real ComfyUI, a real llama.cpp server (set up on first run)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fresh:  ## the whole of make test from nothing: a clean clone, an empty cache folder, ports of its own (not CI)
	scripts/test-fresh.sh

test-unit: venv  ## the pure-logic tests only (no services)
	$(PY) -m pytest -q -m "not integration" $(PYTEST_ARGS)

test-integration: venv services  ## the tests that need Kafka and PostgreSQL
	$(PY) -m pytest -q -m "(kafka or postgres) and not comfyui" $(PYTEST_ARGS)

test-faults: venv services  ## the fault-injection tests (fuzzed events, killed workers, outages, broker loss) -> docs/RELIABILITY.md
	TOWER_RELIABILITY_REPORT=1 $(PY) -m pytest -q -s -m faults $(PYTEST_ARGS)

test-comfyui: venv services  ## ComfyUI client tests (fake server + real ComfyUI the suite starts and stops)
	$(PY) -m pytest -q tests/unit/comfy tests/comfyui $(PYTEST_ARGS)

test-models: venv services  ## real model architectures through the real ComfyUI: an SD1.5 checkpoint the test writes (2.1 GB, cached), the presets' validation
	$(PY) -m pytest -q -m models $(PYTEST_ARGS)

comfyui:  ## start a local ComfyUI 0.3.75 (own venv; first run ~2 min, ~6 GB)
	@$(COMFYCTL) start

comfyui-stop:  ## stop the local ComfyUI
	-@$(COMFYCTL) stop

demo: venv panel  ## start everything, run "Kai fights the dragon" end to end, stop what it started
	PY=$(PY) scripts/demo.sh

# DirectorPanel (panel/): a Vue 3 + Vite app built into panel/dist, which `tower api` serves at /.
# npm ci runs when the lockfile changed, the build when a source changed (infra/setup panel).
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM

panel:  ## build the DirectorPanel into panel/dist (npm ci + vite), served at / by `tower api`
	@$(SETUP) panel

screenshots: venv services panel chromium  ## refresh the README's panel pictures (docs/panel-*.png) from the browser tests
	TOWER_SCREENSHOT_DIR=$(CURDIR)/docs $(PY) -m pytest -q tests/browser $(PYTEST_ARGS)

chromium:  ## Debian's Chromium for the browser tests (installed when missing, as root)
	@$(SETUP) chromium

up: venv services panel  ## start the workers and the API in the background; prints the DirectorPanel's URL
	PY=$(PY) scripts/up.sh

down:  ## stop what `make up` started (workers, API), then Kafka and PostgreSQL
	-PY=$(PY) scripts/up.sh stop
	-@$(KAFKACTL) stop
	-@$(PGCTL) stop

bench: venv services  ## end-to-end benchmark, the editor's assembly time against render and score, the scene ETA's error -> docs/BENCHMARKS.md
	$(PY) -m bench.pipeline
	$(PY) -m bench.assembly
	$(PY) -m bench.eta

bench-memory: venv llama  ## the memory's retrieval quality (recall@5 on a labelled set): built-in embedder vs all-MiniLM-L6-v2 on llama.cpp's server -> docs/BENCHMARKS.md
	$(PY) -m bench.memory

bench-memory-scale: venv  ## memory search at 54k and 1M vectors: the HNSW index vs an exact numpy scan (latency, memory, recall@10) -> docs/BENCHMARKS.md
	$(PY) -m bench.memory_scale

bench-drain: venv services  ## how fast planner, refiner and learner drain a topic, and their hops, vs bare aiokafka and Faust forwarders -> docs/BENCHMARKS.md
	$(PY) -m bench.drain

bench-learning: venv services  ## does the loop learn? Thompson vs uniform vs fixed vs the oracle, borrowed priors, a model change -> docs/BENCHMARKS.md
	$(PY) -m bench.learning

bench-parallel: venv services  ## shots in parallel: 1 vs 2 renderer+scorer workers, 1 vs 4 renders in flight (sleep fake) -> docs/BENCHMARKS.md
	$(PY) -m bench.parallel

bench-resume: venv services  ## restart-to-first-message of a killed / stopped worker, dynamic vs static membership -> docs/BENCHMARKS.md
	$(PY) -m bench.resume

bench-api: venv services  ## HTTP API load (wrk) vs raw aiokafka produce; live-stream watchers (10-1,000) vs one consumer per client -> docs/BENCHMARKS.md
	@command -v wrk >/dev/null || $(SETUP) apt wrk
	$(PY) -m bench.api
	$(PY) -m bench.live

bench-cli: venv  ## `tower --help` start time, this checkout vs the commit before the layers -> docs/BENCHMARKS.md
	$(PY) -m bench.cli_start

bench-scoring: venv  ## scoring benchmark (CPU) -> docs/BENCHMARKS.md
	$(PY) -m bench.scoring

bench-scoring-gpu: venv  ## scoring benchmark on CUDA (a GPU machine), and shots per device call -> docs/BENCHMARKS.md
	$(PY) -m bench.scoring --gpu
	$(PY) -m bench.scoring --batching --gpu

bench-comfy: venv  ## ComfyUI client overhead per job -> docs/BENCHMARKS.md
	$(PY) -m bench.comfy_overhead

bench-comfy-gpu: venv  ## seconds per shot of each preset a CUDA ComfyUI (TOWER_COMFY_URLS) has the models for -> docs/BENCHMARKS.md
	$(PY) -m bench.comfy_gpu

lint: venv  ## ruff (pyflakes + import order) and the layer contracts (.importlinter, lint-imports)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache

schemas: venv  ## export the event JSON Schemas to schemas/
	$(PY) -m tower schemas export schemas

clean:  ## remove local state (Kafka and PostgreSQL data, media); the environment stays
	-@$(KAFKACTL) stop
	-@$(PGCTL) stop
	rm -rf .tower media
