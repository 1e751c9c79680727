"""The RayJob to create: rendered from the chart with the run's values and overrides, or read
from a manifest the chart rendered earlier, then named and labelled for one run."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any, Dict, List

import yaml

from training.errors import UserError
from training.ops.launch.naming import LAUNCHER, LAUNCHER_LABEL, RUN_ID_LABEL, job_name

DEFAULT_CHART = Path(__file__).resolve().parents[3] / "charts" / "ray-training"


def _merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_set(items: List[str]) -> Dict[str, Any]:
    """`--set a.b=value` (value parsed as YAML, like `helm --set` for scalars and [lists])."""
    values: Dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE (e.g. --set workerGroups.cpu.replicas=4)")
        node = values
        parts = key.split(".")
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item}: {'.'.join(parts[:i + 1])} is already set to {node!r}, not a map")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise UserError(f"--set {item}: not a YAML value ({str(exc).splitlines()[0]}); quote it, "
                            f"e.g. --set '{key}=\"{raw}\"'") from None
    return values


def render_rayjob(chart: Path, values_files: List[Path], sets: List[str], release: str,
                  overrides: List[str]) -> Dict[str, Any]:
    """The chart's RayJob for these values and overrides (metadata.generateName = the name prefix)."""
    try:
        import helm_python
    except ImportError:
        raise UserError("rendering the chart needs helm-python-sdk (pip install '.[k8s-verify]'); "
                        "or pass --manifest with a RayJob the chart rendered") from None
    if not (chart / "Chart.yaml").is_file():
        raise UserError(f"--chart {chart}: not a Helm chart (no Chart.yaml); the default is the checkout's "
                        "charts/ray-training: with the installed package, pass --chart (or set RAY_TRAINING_CHART) "
                        "to the chart's folder, or --manifest")
    values: Dict[str, Any] = {}
    for f in values_files:
        try:
            loaded = yaml.safe_load(Path(f).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"--values {f}: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"--values {f}: expected a mapping of chart values, got a {type(loaded).__name__}")
        values = _merge(values, loaded)
    values = _merge(values, parse_set(sets))
    # The RayJob is named in prepare() (<prefix>-<run id>), which also appends run_name=<that name>:
    # namedByLauncher tells the chart so, and a retry (job.backoffLimit) resumes that run.
    job = {"enabled": True, "generateName": True, "name": "", "namedByLauncher": True}
    if overrides:
        job["overrides"] = list(overrides)
    values = _merge(values, {"job": job, "tests": {"enabled": False}})
    try:
        with helm_python.Chart.load(str(chart)) as c:
            rendered = c.render(values, name=release, namespace="default")
    except Exception as exc:  # helm_python's render/values errors: one line for the user
        raise UserError(f"chart {chart.name}: {_helm_message(exc)}") from None
    for path, text in rendered.items():
        if path.endswith("templates/rayjob.yaml"):
            for doc in yaml.safe_load_all(text):
                if doc and doc.get("kind") == "RayJob":
                    return doc
    raise UserError(f"chart {chart} rendered no RayJob")


def _helm_message(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = "; ".join(lines)
    return re.sub(r"^execution error at \([^)]*\): ", "", text)


def load_manifest(path: Path) -> Dict[str, Any]:
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"--manifest {path}: {str(exc).splitlines()[0]}") from None
    jobs = [d for d in docs if isinstance(d, dict) and d.get("kind") == "RayJob"]
    if len(jobs) != 1:
        raise UserError(f"--manifest {path}: expected one RayJob, found {len(jobs)}")
    job = jobs[0]
    if not isinstance(job.get("metadata", {}), dict) or not isinstance(job.get("spec", {}), dict):
        raise UserError(f"--manifest {path}: the RayJob's metadata and spec must be mappings")
    entry = job.get("spec", {}).get("entrypoint")
    # shlex.split(None) reads the command line from stdin: only a non-empty string is one.
    if not isinstance(entry, str) or not entry.strip():
        raise UserError(f"--manifest {path}: spec.entrypoint must be the job's command line, got {entry!r}")
    try:
        shlex.split(entry)
    except ValueError as exc:
        raise UserError(f"--manifest {path}: spec.entrypoint is not a command line ({exc})") from None
    return job


def prepare(manifest: Dict[str, Any], run_id: str) -> Dict[str, Any]:
    """A copy named for this run, labelled with its run id, its training run named after the RayJob."""
    if (manifest.get("spec") or {}).get("submissionMode") == "InteractiveMode":
        # KubeRay then waits for someone to submit the job by hand: nothing would ever run it.
        raise UserError("submissionMode InteractiveMode waits for a job submitted by hand; the launcher submits "
                        "through the RayJob: use K8sJobMode, HTTPMode or SidecarMode")
    job = copy.deepcopy(manifest)
    md = job.setdefault("metadata", {})
    prefix = md.pop("generateName", None) or md.get("name") or "ray-training"
    name = job_name(prefix, run_id)
    md["name"] = name
    md.pop("namespace", None)
    md.setdefault("labels", {}).update({RUN_ID_LABEL: run_id, LAUNCHER_LABEL: LAUNCHER})
    spec = job.setdefault("spec", {})
    entry = spec.get("entrypoint", "")
    # The MLflow run shares the RayJob's name; a RayJob retry (backoffLimit) reuses it and
    # so resumes from that run's checkpoints instead of starting over.
    if entry and not any(t.startswith("run_name=") for t in shlex.split(entry)):
        spec["entrypoint"] = f"{entry} run_name={name}"
    return job


def check_overrides(overrides: List[str]) -> None:
    """The overrides compose locally (unknown keys, wrong types) before anything reaches the cluster."""
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+~") == "run_name":
            raise UserError("run_name is set by the launcher (the RayJob's name); remove the override")
    from training import config

    config.load(list(overrides))
