# The Prometheus Operator's CRD schemas (PodMonitor, ServiceMonitor), compiled validators from
# the npm package @kubernetes-models/prometheus-operator, pinned by package-lock.json; used by
# tests/k8s (k8s_support.prometheus_operator_errors) to validate the chart's monitoring objects.
PROM_SCHEMAS := tests/k8s/prometheus_operator
PROM_STAMP   := $(PROM_SCHEMAS)/node_modules/.installed

k8s-tools:: $(PROM_STAMP)

$(PROM_STAMP): $(PROM_SCHEMAS)/package-lock.json
	cd $(PROM_SCHEMAS) && npm ci --no-audit --no-fund --silent
	@touch $@
