# Everything a fresh machine needs goes through these targets: `make run`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast bench install clean s3-tools

# (Re)install when pyproject.toml changes; the stamp makes repeated runs instant.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,k8s-verify,bert]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m training workload=ensemble

test: $(STAMP) k8s-tools s3-tools
	$(PY) -m pytest tests

# Skips the end-to-end runs marked slow; for quick iteration only (CI runs `make test`).
test-fast: $(STAMP) k8s-tools s3-tools
	$(PY) -m pytest tests -m 'not slow'

bench: $(STAMP)
	$(PY) benchmarks/gbdt_overhead.py

# A real S3 API for the object-store tests (moto's server), in its own venv: its botocore
# pins python-dateutil<3, which the kubernetes client in .venv cannot use.
S3_STAMP := .venv-s3/.installed
$(S3_STAMP):
	@test -x .venv-s3/bin/python || $(PYTHON) -m venv .venv-s3
	.venv-s3/bin/python -m pip install --quiet 'moto[server]==5.2.5'
	@touch $(S3_STAMP)

s3-tools: $(S3_STAMP)

clean:
	rm -rf mlruns ray_results data .pytest_cache

# Kubernetes-side tooling (chart verification, scanners) lives in its own fragment.
k8s-tools::
-include mk/*.mk
