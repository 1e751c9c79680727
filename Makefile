# Everything a fresh machine needs goes through these targets: `make run`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast bench install clean

# (Re)install when pyproject.toml changes; the stamp makes repeated runs instant.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,k8s-verify]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m training workload=ensemble

test: $(STAMP) k8s-tools
	$(PY) -m pytest tests

# Skips the end-to-end runs marked slow; for quick iteration only (CI runs `make test`).
test-fast: $(STAMP) k8s-tools
	$(PY) -m pytest tests -m 'not slow'

bench: $(STAMP)
	$(PY) benchmarks/gbdt_overhead.py

clean:
	rm -rf mlruns ray_results data .pytest_cache

# Kubernetes-side tooling (chart verification, scanners) lives in its own fragment.
k8s-tools::
-include mk/*.mk
