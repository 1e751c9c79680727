"""Offline verification helpers for the Kubernetes side: render, validate, KubeRay rules.

Layers (see ../shared/guides/verification.md): the real Helm engine (helm_python),
core kinds against the Kubernetes OpenAPI schemas (kubernetes_validate), Ray custom
resources against the KubeRay CRDs (jsonschema, tightened to behave like the API
server, plus the CRDs' CEL rules), and the rules the operator applies after apply.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "ray-training"
PRESETS_DIR = CHART_DIR / "presets"
CI_VALUES_DIR = CHART_DIR / "ci"
MANIFESTS_DIR = REPO_ROOT / "manifests"
SHARED_DIR = REPO_ROOT.parent / "shared"
KUBERAY_SCHEMAS = SHARED_DIR / "schemas" / "kuberay"
SKAFFOLD_SCHEMA = SHARED_DIR / "schemas" / "skaffold" / "v4beta14.json"

KUBE_VERSIONS = ("1.30.0", "1.34.0")
RELEASE = "demo"
NAMESPACE = "ml"

CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
    "RayCronJob": "ray.io_raycronjobs.yaml",
}

# KubeRay 1.7 name limits (ray-operator/controllers/ray/utils/constant.go).
NAME_LIMITS = {"RayJob": 47, "RayCluster": 53, "RayCronJob": 36, "RayService": 47}
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def require_shared() -> None:
    """Fail (never skip) when ../shared/schemas is missing: the checks depend on it."""
    missing = [p for p in (KUBERAY_SCHEMAS, SKAFFOLD_SCHEMA) if not p.exists()]
    if missing:
        raise RuntimeError(
            f"missing {', '.join(map(str, missing))}: the Kubernetes checks need the shared "
            f"schemas beside the repository ({SHARED_DIR}); see ../shared/README.md"
        )


# --- rendering --------------------------------------------------------------------------


def load_values(path: Path | str) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text()) or {}


@functools.lru_cache(maxsize=1)
def _chart():
    import helm_python

    return helm_python.Chart.load(str(CHART_DIR))


def render(values: dict | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE,
           revision: int = 1) -> dict[str, str]:
    """Render the chart with the real Helm engine: {template path: text}."""
    return _chart().render(values or {}, name=name, namespace=namespace, revision=revision)


def render_objects(values: dict | None = None, **kw) -> list[dict[str, Any]]:
    """Rendered Kubernetes objects (NOTES.txt and empty documents dropped)."""
    return objects_from_rendered(render(values, **kw))


def objects_from_rendered(rendered: dict[str, str]) -> list[dict[str, Any]]:
    objs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objs.append(doc)
    return objs


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o.get("kind") == kind]


def one(objs: list[dict], kind: str) -> dict:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def scenario_files() -> list[Path]:
    return sorted(PRESETS_DIR.glob("*.yaml")) + sorted(CI_VALUES_DIR.glob("*-values.yaml"))


def obj_id(obj: dict) -> str:
    md = obj.get("metadata", {})
    return f"{obj.get('kind')}/{md.get('name') or md.get('generateName')}"


# --- pod templates ---------------------------------------------------------------------


def pod_specs(obj: dict) -> Iterator[tuple[str, dict]]:
    """(where, pod spec) for every pod template an object carries, Ray CRs included."""
    kind, spec = obj.get("kind"), obj.get("spec", {})
    if kind == "Pod":
        yield "spec", spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        yield "spec.template.spec", spec["template"]["spec"]
    elif kind == "RayJob":
        if spec.get("rayClusterSpec"):
            yield from (("spec.rayClusterSpec." + w, p) for w, p in _cluster_pods(spec["rayClusterSpec"]))
        if spec.get("submitterPodTemplate"):
            yield "spec.submitterPodTemplate.spec", spec["submitterPodTemplate"]["spec"]
    elif kind == "RayCluster":
        yield from (("spec." + w, p) for w, p in _cluster_pods(spec))


def _cluster_pods(cs: dict) -> Iterator[tuple[str, dict]]:
    yield "headGroupSpec.template.spec", cs["headGroupSpec"]["template"]["spec"]
    for i, g in enumerate(cs.get("workerGroupSpecs", [])):
        yield f"workerGroupSpecs[{i}]({g.get('groupName')}).template.spec", g["template"]["spec"]


def containers(pod: dict) -> list[dict]:
    return list(pod.get("initContainers", [])) + list(pod.get("containers", []))


def parse_quantity(q: Any) -> float:
    s = str(q)
    m = QUANTITY.match(s)
    if not m:
        raise ValueError(f"not a Kubernetes quantity: {q!r}")
    num, suf = m.groups()
    if suf and suf[0] in "eE":
        return float(num + suf)
    return float(num) * _SUFFIX[suf or ""]


def quantity_problems(obj: dict) -> list[str]:
    """What kubernetes_validate does not check: quantities parse, requests <= limits."""
    out = []
    for where, pod in pod_specs(obj):
        for c in containers(pod):
            res = c.get("resources") or {}
            for section in ("requests", "limits"):
                for k, v in (res.get(section) or {}).items():
                    try:
                        parse_quantity(v)
                    except ValueError as e:
                        out.append(f"{obj_id(obj)} {where} {c['name']} {section}.{k}: {e}")
            for k, lim in (res.get("limits") or {}).items():
                req = (res.get("requests") or {}).get(k)
                try:
                    if req is not None and parse_quantity(req) > parse_quantity(lim):
                        out.append(f"{obj_id(obj)} {where} {c['name']}: requests.{k}={req} > limits.{k}={lim}")
                except ValueError:
                    pass
    for k in ("storage",):
        if obj.get("kind") == "PersistentVolumeClaim":
            v = obj["spec"]["resources"]["requests"][k]
            try:
                parse_quantity(v)
            except ValueError as e:
                out.append(f"{obj_id(obj)} spec.resources.requests.{k}: {e}")
    return out


# --- custom resources: jsonschema against the CRDs ------------------------------------


def _tighten(node: Any) -> Any:
    """Make a CRD openAPIV3Schema behave like the API server under jsonschema."""
    if isinstance(node, list):
        return [_tighten(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _tighten(v) for k, v in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    props = node.get("properties")
    if isinstance(props, dict):
        if "required" in node:
            node["required"] = [r for r in node["required"] if "default" not in props.get(r, {})]
            if not node["required"]:
                del node["required"]
        if not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
            node["additionalProperties"] = False
    return node


@functools.lru_cache(maxsize=None)
def crd_schema(kind: str, version: str = "v1") -> dict:
    require_shared()
    doc = yaml.load((KUBERAY_SCHEMAS / CRD_FILES[kind]).read_text(), Loader=yaml.CSafeLoader)
    for v in doc["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(f"{kind} has no version {version}")


@functools.lru_cache(maxsize=None)
def crd_validator(kind: str, version: str = "v1"):
    import jsonschema

    schema = _tighten(copy.deepcopy(crd_schema(kind, version)))
    # metadata is validated by the API server's ObjectMeta rules, not by the CRD.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def crd_errors(obj: dict) -> list[str]:
    v = crd_validator(obj["kind"], obj["apiVersion"].split("/")[1])
    errs = sorted(v.iter_errors(obj), key=lambda e: list(e.absolute_path))
    out = [f"{obj_id(obj)} at {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errs]
    return out + cel_errors(obj)


def _cel_rules(schema: dict, path: tuple = ()) -> Iterator[tuple[tuple, dict, dict]]:
    for rule in schema.get("x-kubernetes-validations", []) or []:
        yield path, rule, schema
    for k, sub in (schema.get("properties") or {}).items():
        yield from _cel_rules(sub, path + (k,))
    if isinstance(schema.get("items"), dict):
        yield from _cel_rules(schema["items"], path + ("[]",))


def _values_at(obj: Any, path: tuple) -> Iterator[Any]:
    if not path:
        yield obj
        return
    head, rest = path[0], path[1:]
    if head == "[]":
        for item in obj if isinstance(obj, list) else []:
            yield from _values_at(item, rest)
    elif isinstance(obj, dict) and head in obj:
        yield from _values_at(obj[head], rest)


def cel_errors(obj: dict) -> list[str]:
    """Evaluate the CRD's x-kubernetes-validations rules (those without oldSelf)."""
    import celpy

    env = celpy.Environment()
    out = []
    schema = crd_schema(obj["kind"], obj["apiVersion"].split("/")[1])
    for path, rule, _ in _cel_rules(schema):
        if "oldSelf" in rule["rule"]:
            continue
        program = env.program(env.compile(rule["rule"]))
        for value in _values_at(obj, path):
            ok = program.evaluate({"self": celpy.json_to_cel(value)})
            if not bool(ok):
                out.append(f"{obj_id(obj)} at {'.'.join(path)}: {rule.get('message', rule['rule'])}")
    return out


# --- core kinds: kubernetes_validate --------------------------------------------------


def core_errors(obj: dict, kube_version: str) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, kube_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{obj_id(obj)} (k8s {kube_version}) at {'.'.join(map(str, e.path))}: {e.message}"]
    return []


def is_ray_cr(obj: dict) -> bool:
    return obj.get("apiVersion", "").startswith("ray.io/")


# --- Prometheus Operator kinds: the npm package's compiled CRD schemas ------------------

PROMETHEUS_OPERATOR_DIR = Path(__file__).resolve().parent / "prometheus_operator"


def is_prometheus_operator_cr(obj: dict) -> bool:
    return obj.get("apiVersion", "").startswith("monitoring.coreos.com/")


@functools.lru_cache(maxsize=None)
def _prometheus_operator_errors(objs_json: str) -> tuple[str, ...]:
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None or not (PROMETHEUS_OPERATOR_DIR / "node_modules" / "@kubernetes-models").is_dir():
        raise RuntimeError("the Prometheus Operator schemas are not installed: run `make k8s-tools` "
                           f"(needs node and npm; installs {PROMETHEUS_OPERATOR_DIR}/node_modules)")
    proc = subprocess.run([node, "validate.mjs"], cwd=PROMETHEUS_OPERATOR_DIR, input=objs_json,
                          capture_output=True, text=True, timeout=60, check=True)
    return tuple(json.loads(proc.stdout))


def prometheus_operator_errors(obj: dict) -> list[str]:
    """PodMonitor / ServiceMonitor against the Prometheus Operator's CRD schema (types, required
    fields, enums, duration patterns). The compiled schema accepts unknown fields, so
    `unknown_monitor_fields` adds the check the API server's structural schema makes."""
    return list(_prometheus_operator_errors(json.dumps([obj]))) + unknown_monitor_fields(obj)


@functools.lru_cache(maxsize=None)
def _declared_fields(type_name: str) -> frozenset:
    """Property names of a Prometheus Operator type, from the package's TypeScript declarations."""
    dts = (PROMETHEUS_OPERATOR_DIR / "node_modules" / "@kubernetes-models" / "prometheus-operator"
           / "monitoring.coreos.com" / "v1" / f"{type_name}.d.ts")
    return frozenset(re.findall(r'(?m)^ {4}"?([A-Za-z0-9]+)"?\??:', dts.read_text()))


def unknown_monitor_fields(obj: dict) -> list[str]:
    """Unknown fields of PodMonitor.spec and its endpoints (a typo the API server would reject)."""
    if obj.get("kind") != "PodMonitor":
        return []
    spec = obj.get("spec", {})
    out = [f"{obj_id(obj)}: unknown field spec.{k}" for k in spec if k not in _declared_fields("PodMonitorSpec")]
    for i, ep in enumerate(spec.get("podMetricsEndpoints", [])):
        out += [f"{obj_id(obj)}: unknown field spec.podMetricsEndpoints[{i}].{k}" for k in ep
                if k not in _declared_fields("PodMetricsEndpoint")]
    return out


def validation_errors(obj: dict, kube_version: str = KUBE_VERSIONS[0]) -> list[str]:
    """Everything one object must pass, whatever its kind."""
    errs = quantity_problems(obj)
    if is_prometheus_operator_cr(obj):
        errs += prometheus_operator_errors(obj)
    elif is_ray_cr(obj):
        schema_errs = crd_errors(obj)
        # The operator only sees objects the API server accepted.
        errs += schema_errs or kuberay_rule_violations(obj)
        # Pod templates inside Ray CRs: validate them as core Pods too (strict, deep).
        for where, pod in pod_specs(obj):
            pod_obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod}
            errs += [f"{obj_id(obj)} {where}: {e}" for e in core_errors(pod_obj, kube_version)]
    else:
        errs += core_errors(obj, kube_version)
    return errs


# --- KubeRay rules enforced only after apply -------------------------------------------


def kuberay_rule_violations(obj: dict) -> list[str]:
    """The KubeRay 1.7 operator's own validation (status ValidationFailed after apply)."""
    kind, md, spec = obj.get("kind"), obj.get("metadata", {}), obj.get("spec", {})
    out = []
    name = md.get("name")
    if name is None and md.get("generateName"):
        name = md["generateName"] + "x" * 5  # the API server appends 5 characters
    limit = NAME_LIMITS.get(kind)
    if limit and name is not None:
        if len(name) > limit:
            out.append(f"{kind} name {name!r} is {len(name)} characters; KubeRay allows {limit}")
        if not DNS1035.match(name):
            out.append(f"{kind} name {name!r} is not a DNS-1035 label")
    if kind == "RayJob":
        shutdown = bool(spec.get("shutdownAfterJobFinishes"))
        selector = bool(spec.get("clusterSelector"))
        mode = spec.get("submissionMode", "K8sJobMode")
        if spec.get("suspend") and not shutdown:
            out.append("RayJob suspend=true needs shutdownAfterJobFinishes=true")
        if spec.get("ttlSecondsAfterFinished", 0) > 0 and not shutdown:
            out.append("RayJob ttlSecondsAfterFinished > 0 needs shutdownAfterJobFinishes=true")
        if spec.get("deletionStrategy") and shutdown:
            out.append("RayJob deletionStrategy excludes shutdownAfterJobFinishes=true")
        if selector and spec.get("backoffLimit", 0) > 0:
            out.append("RayJob backoffLimit is not allowed with clusterSelector")
        if selector and spec.get("suspend"):
            out.append("RayJob suspend is not allowed with clusterSelector")
        if selector and mode == "SidecarMode":
            out.append("RayJob clusterSelector is not supported in SidecarMode")
        if selector and not spec["clusterSelector"].get("ray.io/cluster"):
            out.append("RayJob clusterSelector needs ray.io/cluster")
        if not selector and not spec.get("rayClusterSpec"):
            out.append("RayJob needs rayClusterSpec or clusterSelector")
        if mode == "InteractiveMode" and spec.get("backoffLimit", 0) > 0:
            out.append("RayJob backoffLimit is incompatible with InteractiveMode")
        if mode == "SidecarMode" and (spec.get("submitterPodTemplate") or spec.get("submitterConfig")):
            out.append("RayJob SidecarMode does not support submitterPodTemplate/submitterConfig")
        if spec.get("activeDeadlineSeconds") is not None and spec["activeDeadlineSeconds"] <= 0:
            out.append("RayJob activeDeadlineSeconds must be positive")
        try:
            yaml.safe_load(spec.get("runtimeEnvYAML") or "")
        except yaml.YAMLError as e:
            out.append(f"RayJob runtimeEnvYAML is not valid YAML: {e}")
        if spec.get("rayClusterSpec"):
            out += [f"RayJob rayClusterSpec: {m}" for m in _cluster_rules(spec["rayClusterSpec"])]
            # ValidateRayClusterUpgradeOptions: only a RayCluster a user creates may have one.
            if (spec["rayClusterSpec"].get("upgradeStrategy") or {}).get("type"):
                out.append("RayJob rayClusterSpec: upgradeStrategy cannot be set when RayCluster is created by RayJob")
    elif kind == "RayCluster":
        out += _cluster_rules(spec)
    return out


def _cluster_rules(cs: dict) -> list[str]:
    out = []
    groups = [("Head", cs["headGroupSpec"])] + [(g["groupName"], g) for g in cs.get("workerGroupSpecs", [])]
    for gname, g in groups:
        params = g.get("rayStartParams") or {}
        if any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")) and g.get("resources"):
            out.append(f"group {gname}: resources set in both rayStartParams and resources")
        if "labels" in params:
            out.append(f"group {gname}: rayStartParams['labels'] is not supported")
        if not g["template"]["spec"].get("containers"):
            out.append(f"group {gname}: needs at least one container")
    for g in cs.get("workerGroupSpecs", []):
        lo, hi, rep = g.get("minReplicas", 0), g.get("maxReplicas", 2**31 - 1), g.get("replicas", 0)
        if lo > hi:
            out.append(f"group {g['groupName']}: minReplicas {lo} > maxReplicas {hi}")
        if not lo <= rep <= hi:
            out.append(f"group {g['groupName']}: replicas {rep} outside [{lo}, {hi}]")
    auth = cs.get("authOptions") or {}
    if auth.get("mode") == "token":
        version = cs.get("rayVersion", "")
        if not version:
            out.append("authOptions.mode=token needs rayVersion")
        elif tuple(int(x) for x in re.findall(r"\d+", version)[:3]) < (2, 52, 0):
            out.append(f"authOptions.mode=token needs Ray >= 2.52.0, got {version}")
    if cs.get("enableInTreeAutoscaling"):
        for gname, g in groups:
            policy = g["template"]["spec"].get("restartPolicy")
            if policy not in (None, "Never"):
                out.append(f"group {gname}: restartPolicy must be Never or unset with autoscaler v2")
    return out


def dump_yaml(objs: list[dict]) -> str:
    return "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objs)


if __name__ == "__main__":  # handy: python tests/k8s/k8s_support.py values.yaml
    vals = {}
    for f in sys.argv[1:]:
        vals.update(load_values(f))
    print(json.dumps([obj_id(o) for o in render_objects(vals)], indent=1))
