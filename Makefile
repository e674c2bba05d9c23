# The user's front door. Every target runs inside the project's own environments (created by `make setup`).
# Variables: MODEL, RECIPE, TEACHER, STUDENT, INDEX, DOCS, PROFILE, SUITE, REPORTS, OUTPUT, BUDGET, DEVICE,
# DEMO, SLO, REPEATS, A, B, BENCH_ARGS (extra flags for a bench-* target). Run `make help` for the list.

SHELL := /bin/bash
DEVICE ?= auto
PY := .venv/bin/python
TOOLKIT := $(PY) -m toolkit
MODEL ?= artifacts/reference/model
PYTEST_ARGS ?=

# Optional flags, passed only when the variable is set.
opt = $(if $(2),$(1) $(2))

.PHONY: help setup test reference quantize distill precision index serve eval compare demo env \
        bench-quantize bench-distill bench-serve bench-eval bench-ab bench-crosscheck setup-llamacpp bench-engines gpu-check optimize clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup:  ## create .venv and .venv-vllm with pinned versions (DEVICE=cpu|cuda|auto); idempotent
	@DEVICE=$(DEVICE) bash scripts/setup.sh

test: setup  ## install what is needed, then run the test suite
	$(PY) -m pytest $(PYTEST_ARGS)

env: setup  ## print the hardware report
	$(TOOLKIT) env

reference: setup  ## make reference [RECIPE=recipes/reference/<r>.yaml] [OUTPUT=dir] (default artifacts/reference)
	$(TOOLKIT) reference $(call opt,--recipe,$(RECIPE)) $(call opt,--output,$(OUTPUT))

quantize: setup  ## make quantize RECIPE=recipes/quantize/<name>.yaml MODEL=<path-or-id> [OUTPUT=dir]
	$(TOOLKIT) quantize --recipe $(RECIPE) --model $(MODEL) $(call opt,--output,$(OUTPUT))

distill: setup  ## make distill RECIPE=recipes/distill/<name>.yaml TEACHER=<dir> [STUDENT=..] [OUTPUT=dir] [STEPS=n]
	$(TOOLKIT) distill --recipe $(RECIPE) --teacher $(or $(TEACHER),$(MODEL)) $(call opt,--student,$(STUDENT)) $(call opt,--output,$(OUTPUT)) $(call opt,--max-steps,$(STEPS))

precision: setup  ## make precision MODEL=<dir> [BUDGET=1%] [OUTPUT=serve/profiles/<n>.yaml]
	$(TOOLKIT) precision --model $(MODEL) $(call opt,--budget,$(BUDGET)) $(call opt,--output,$(OUTPUT))

index: setup  ## make index [DOCS=docs.jsonl] [OUTPUT=dir] [INDEX_TYPE=flat|ivf|ivfpq|hnsw]
	$(TOOLKIT) index build $(call opt,--docs,$(DOCS)) $(call opt,--output,$(OUTPUT)) $(call opt,--index-type,$(INDEX_TYPE))

# With PROFILE and no MODEL on the command line, serve the checkpoint the profile names (precision output).
serve: setup  ## make serve MODEL=<dir> INDEX=<dir> [PROFILE=serve/<p>.yaml]
	$(TOOLKIT) serve $(if $(and $(PROFILE),$(filter file,$(origin MODEL))),,--model $(MODEL)) $(call opt,--index,$(INDEX)) $(call opt,--profile,$(PROFILE))

eval: setup  ## make eval MODEL=<dir> [INDEX=<dir>] [SUITE=..] [PROFILE=..] [OUTPUT=..] [SLO="e2e:5000,ttft:3000"] [REPEATS=n] [MAX_LOAD=1]
	$(TOOLKIT) eval --model $(MODEL) $(call opt,--index,$(INDEX)) $(call opt,--suite,$(SUITE)) $(call opt,--profile,$(PROFILE)) $(call opt,--output,$(OUTPUT)) $(call opt,--slo,$(SLO)) $(call opt,--repeats,$(REPEATS)) $(if $(MAX_LOAD),--find-max-load)

compare: setup  ## make compare REPORTS="a.json b.json" [BASELINE=a.json] [GATES="--max-f1-drop 0.02 --max-p50-regression 10%"] [OUTPUT=dir]
	$(TOOLKIT) compare $(REPORTS) $(call opt,--output,$(OUTPUT)) $(call opt,--baseline,$(BASELINE)) $(GATES)

demo: setup  ## the whole pipeline offline (DEMO=quick for a first look) [SUITE=eval/suites/<s>.yaml]
	$(TOOLKIT) demo $(if $(filter quick,$(DEMO)),--quick) $(call opt,--suite,$(SUITE))

bench-quantize: setup  ## quantization benchmark on the reference model (perplexity, recovery vs RTN, size, vLLM tok/s)
	$(PY) -m toolkit.quantize.bench $(call opt,--model,$(MODEL)) $(BENCH_ARGS)

bench-distill: setup  ## distillation benchmark: teacher vs KD students vs CE-only student
	$(PY) -m toolkit.distill.bench $(call opt,--teacher,$(or $(TEACHER),$(MODEL))) $(call opt,--steps,$(STEPS)) $(BENCH_ARGS)

bench-serve: setup  ## retrieval/endpoint benchmarks: cold start, stage latency, index types
	$(PY) -m toolkit.serving.bench $(call opt,--model,$(MODEL)) $(BENCH_ARGS)

bench-eval: setup  ## vLLM vs transformers generate throughput, batch sizes 1 and 8
	$(PY) -m toolkit.evaluation.bench $(call opt,--model,$(MODEL)) $(BENCH_ARGS)

bench-ab: setup  ## interleaved A/B ratio: make bench-ab A=<baseline dir> B=<variant dir> [INDEX=<dir>] [SUITE=..]
	$(PY) -m toolkit.evaluation.ab --model $(or $(A),$(MODEL)) --model $(B) $(call opt,--index,$(INDEX)) $(call opt,--suite,$(SUITE)) $(BENCH_ARGS)

bench-crosscheck: setup  ## the endpoint measured by the toolkit's load generator and vLLM's bench client, interleaved
	$(PY) -m toolkit.evaluation.crosscheck $(call opt,--model,$(MODEL)) $(call opt,--index,$(INDEX)) $(BENCH_ARGS)

setup-llamacpp:  ## opt-in: build llama.cpp's llama-server + llama-quantize into build/llamacpp (13-27 min on 2 cores)
	@bash scripts/setup_llamacpp.sh

bench-engines: setup setup-llamacpp  ## vLLM vs llama.cpp (F16/Q8_0/Q4_K_M exports, shipped Q4_1) on one suite [SUITE=..] [INDEX=<dir>]
	$(PY) -m toolkit.engine.bench_engines $(call opt,--model,$(MODEL)) $(call opt,--index,$(INDEX)) $(call opt,--suite,$(SUITE)) $(call opt,--repeats,$(REPEATS)) $(call opt,--slo,$(SLO)) $(BENCH_ARGS)

gpu-check:  ## CUDA evidence (matmul TF32/BF16/FP16/FP8, SDPA, exact search, GPTQ); says so and exits 0 without CUDA
	$(if $(wildcard $(PY)),$(PY),python3) scripts/gpu_check.py $(BENCH_ARGS)

optimize: setup  ## make optimize [RECIPE=recipes/optimize/default.yaml] [MODEL=<dir>,<dir>..] [SLO=".."] [QUALITY="f1_drop:0.02,ppl_increase:3%"] [BUDGET=60m] [INDEX=<dir>]
	$(TOOLKIT) optimize $(call opt,--recipe,$(RECIPE)) $(if $(filter file,$(origin MODEL)),,--model $(MODEL)) $(call opt,--slo,$(SLO)) $(call opt,--quality,$(QUALITY)) $(call opt,--budget,$(BUDGET)) $(call opt,--index,$(INDEX))

clean:  ## remove generated artifacts (keeps the environments)
	rm -rf artifacts eval/reports
