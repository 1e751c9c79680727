# Everything a fresh machine needs goes through these targets: `make run`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast bench bench-quick install clean s3-tools

# uv installs: pip's resolution, in seconds rather than minutes. It does not read pip's config,
# so wheel folders pip is told about (PIP_FIND_LINKS, e.g. a local CPU build of torch) are passed on.
# --compile-bytecode does what pip does by default: without .pyc files, and with
# PYTHONDONTWRITEBYTECODE set (as on CI machines), every Python process, each Ray worker
# included, compiles Ray, MLflow, pandas and the GBDT libraries from source again.
UV_VERSION := 0.13.9
UV         := $(VENV)/bin/uv
FIND_LINKS := $(foreach link,$(PIP_FIND_LINKS),--find-links $(link))
UV_INSTALL  = $(UV) pip install --quiet --compile-bytecode $(FIND_LINKS) --python

# (Re)install when pyproject.toml changes; the stamp makes repeated runs instant.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(UV_INSTALL) $(PY) -e '.[dev,k8s-verify,bert]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m training workload=ensemble

# Two pytest workers: one alone leaves a quarter of the 2 cores idle while its test waits on a
# process start, a poll or a server. Each test module is one unit of work (loadfile), longest
# first (tests/conftest.py).
PYTEST_PARALLEL ?= -n 2 --dist loadfile --no-loadscope-reorder

# The project image builds in the background meanwhile (on a fresh machine mostly downloads and
# unpacking). tests/containers runs afterwards, alone: its pods share the host's network, where
# a raylet binds its ports on every address and so can meet a port another test's Ray holds.
# containers/build_image.sh's lock makes the tests' own call wait for the background build and
# then find every layer cached. The build's output: build/image-build.log.
test: $(STAMP) k8s-tools s3-tools container-tools
	@mkdir -p build; if command -v podman >/dev/null; then containers/build_image.sh > build/image-build.log 2>&1 & fi; \
	rc=0; $(PY) -m pytest tests --ignore=tests/containers $(PYTEST_PARALLEL) || rc=$$?; \
	$(PY) -m pytest tests/containers || rc=$$?; exit $$rc

# Skips the end-to-end runs marked slow; for quick iteration only (CI runs `make test`).
test-fast: $(STAMP) k8s-tools s3-tools
	$(PY) -m pytest tests -m 'not slow' $(PYTEST_PARALLEL)

# Every benchmark, results JSON + PNG plots in benchmarks/results/, then one table of the goals
# (benchmarks/report.py). tune_asha exits 1 when it misses its goals: the table says so, make goes on.
# scale_20m: the data scale against a plain script at a size where the data, not the start-up,
# takes most of the run; scale_beyond: at a size one process cannot hold here.
BENCH_STEPS = gbdt_overhead scaling data_pipeline memory scale end_to_end
DOMINANT_ARGS ?= --rows 20000000 --repeats 1 --memory-runs 1
BEYOND_ARGS ?= --rows 50000000 --libraries xgboost --repeats 1 --memory-runs 0
bench: $(STAMP)
	@for b in $(BENCH_STEPS); do echo "== $$b"; $(PY) benchmarks/$$b.py $(BENCH_ARGS) || exit 1; done
	@echo "== scale_20m"; $(PY) benchmarks/scale.py $(DOMINANT_ARGS) --out $(BENCH_RESULTS)/scale_20m.json
	@echo "== scale_beyond"; $(PY) benchmarks/scale.py $(BEYOND_ARGS) --out $(BENCH_RESULTS)/scale_beyond.json
	@echo "== tune_asha"; $(PY) benchmarks/tune_asha.py $(TUNE_ARGS) --json $(BENCH_RESULTS)/tune_asha.json || true
	@echo "== bert_throughput"; $(PY) benchmarks/bert_throughput.py $(BERT_ARGS) --out $(BENCH_RESULTS)/bert_throughput.json
	$(PY) benchmarks/report.py --results $(BENCH_RESULTS)

BENCH_RESULTS ?= benchmarks/results
export BENCH_RESULTS

# The same with smoke sizes (about 7 minutes on 2 cores), into build/bench-quick/: the published results stay.
bench-quick:
	$(MAKE) bench BENCH_RESULTS=build/bench-quick BENCH_ARGS=--quick TUNE_ARGS="--rows 5000 --samples 4" \
		BERT_ARGS="--steps 5 --warmup 2" DOMINANT_ARGS="--quick --repeats 1 --memory-runs 0" \
		BEYOND_ARGS="--quick --libraries xgboost"

# A real S3 API for the object-store tests (moto's server), in its own venv: the server's
# dependencies (Flask, its AWS service models) are no part of the project's environment.
S3_STAMP := .venv-s3/.installed
$(S3_STAMP): $(STAMP)
	@test -x .venv-s3/bin/python || $(UV) venv --quiet --python $(PY) .venv-s3
	$(UV_INSTALL) .venv-s3/bin/python 'moto[server]==5.2.5'
	@touch $(S3_STAMP)

s3-tools: $(S3_STAMP)

clean:
	rm -rf mlruns ray_results data .pytest_cache

# Kubernetes-side tooling (chart verification, scanners) lives in its own fragment.
k8s-tools::
-include mk/*.mk
