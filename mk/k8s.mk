# Kubernetes side: scanner tools the main venv cannot hold, and the generated manifests.
# Included by the Makefile (`-include mk/*.mk`); `make test` depends on k8s-tools.

# checkov pins old packaging/networkx: it lives in its own venv, used only by
# tests/k8s/test_k8s_scans.py (override with CHECKOV=/path/to/checkov).
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV    := .venv-checkov
CHECKOV_STAMP   := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

k8s-tools:: $(CHECKOV_STAMP)

$(CHECKOV_STAMP): $(STAMP)
	@test -x $(CHECKOV_VENV)/bin/python || $(UV) venv --quiet --python $(PY) $(CHECKOV_VENV)
	$(UV_INSTALL) $(CHECKOV_VENV)/bin/python checkov==$(CHECKOV_VERSION)
	@touch $@

.PHONY: manifests manifests-check test-k8s

# Regenerate manifests/<preset>.yaml from charts/ray-training (commit the result;
# tests/k8s/test_k8s_manifests.py fails when they drift).
manifests: $(STAMP)
	$(PY) scripts/render_manifests.py

manifests-check: $(STAMP)
	$(PY) scripts/render_manifests.py --check

# Only the Kubernetes checks (fast ones; add -m '' for the end-to-end RayJob).
test-k8s: $(STAMP) k8s-tools
	$(PY) -m pytest tests/k8s -m 'not slow'
