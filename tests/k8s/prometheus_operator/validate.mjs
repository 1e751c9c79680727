// Validates PodMonitor / ServiceMonitor objects (a JSON array on stdin) against the Prometheus
// Operator CRD schemas compiled by @kubernetes-models/prometheus-operator; prints one JSON list
// of error strings (empty: all valid). Used by tests/k8s/k8s_support.py.
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const kinds = { PodMonitor, ServiceMonitor };
let input = "";
for await (const chunk of process.stdin) input += chunk;
const errors = [];
for (const obj of JSON.parse(input)) {
  const Kind = kinds[obj.kind];
  const id = `${obj.kind}/${obj.metadata?.name}`;
  if (!Kind) { errors.push(`${id}: no schema for kind ${obj.kind}`); continue; }
  try { new Kind(obj).validate(); } catch (e) { errors.push(`${id}: ${e.message}`); }
}
console.log(JSON.stringify(errors));
