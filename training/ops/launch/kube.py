"""The Kubernetes API side of a launch: connect, create, delete and prune RayJobs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO

import yaml

from training.errors import UserError
from training.ops.launch.naming import LAUNCHER, LAUNCHER_LABEL
from training.ops.launch.outcome import outcome

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
IN_CLUSTER_NS = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def connect(kubeconfig: Optional[str], context: Optional[str], namespace: Optional[str]):
    """(ApiClient, namespace) from a kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config), or
    in a pod without one, from the pod's service account: kubectl's order, so a CI runner or a
    notebook in a pod with KUBECONFIG set reaches the cluster that names, not its own."""
    from kubernetes import client, config as kconfig

    try:
        if kubeconfig is None and context is None and not _kubeconfig_around() \
                and os.environ.get("KUBERNETES_SERVICE_HOST"):
            kconfig.load_incluster_config()
            ns = namespace or (IN_CLUSTER_NS.read_text().strip() if IN_CLUSTER_NS.exists() else "default")
            return client.ApiClient(), ns
        # The client reads $KUBECONFIG once, when it is imported; this process's now is the one meant.
        kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
        api = kconfig.new_client_from_config(config_file=kubeconfig, context=context)
        if namespace:
            return api, namespace
        _, active = kconfig.list_kube_config_contexts(config_file=kubeconfig)
        if context:
            contexts, _ = kconfig.list_kube_config_contexts(config_file=kubeconfig)
            active = next((c for c in contexts if c["name"] == context), active)
        return api, (active or {}).get("context", {}).get("namespace") or "default"
    except (kconfig.ConfigException, OSError, TypeError) as exc:
        raise UserError(f"no Kubernetes config: {str(exc).splitlines()[0]} "
                        "(set KUBECONFIG, --kubeconfig or run in a pod)") from None
    except yaml.YAMLError as exc:  # the kubeconfig is not YAML: its file and line
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"the Kubernetes config {kubeconfig or os.environ.get('KUBECONFIG') or '~/.kube/config'} is "
                        f"not valid YAML{where}: {getattr(exc, 'problem', None) or str(exc).splitlines()[0]}") from None


def _kubeconfig_around() -> bool:
    return bool(os.environ.get("KUBECONFIG")) or (Path.home() / ".kube" / "config").is_file()


def api_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    try:
        return json.loads(body)["message"]
    except Exception:
        return f"{getattr(exc, 'status', '')} {getattr(exc, 'reason', '') or exc}".strip()


def create(api, namespace: str, job: Dict[str, Any]) -> Dict[str, Any]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        return client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
    except ApiException as exc:
        hint = " (is the KubeRay operator installed?)" if exc.status == 404 else ""
        raise UserError(f"cannot create RayJob {namespace}/{job['metadata']['name']}: "
                        f"{api_message(exc)}{hint}") from None
    except Exception as exc:  # connection refused, TLS, DNS
        raise UserError(f"cannot reach the Kubernetes API: {str(exc).splitlines()[0][:200]}") from None


def delete(api, namespace: str, name: str) -> bool:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background")
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise UserError(f"cannot delete RayJob {namespace}/{name}: {exc.status} {exc.reason}") from None
    except Exception as exc:  # the API is gone (connection refused, TLS, DNS)
        raise UserError(f"cannot delete RayJob {namespace}/{name}: {str(exc).splitlines()[0][:200]}") from None


def prune(api, namespace: str, job: Dict[str, Any], keep: int, out: TextIO) -> List[str]:
    """Delete finished launcher-made RayJobs of the same release beyond the `keep` newest. The run
    has ended when this runs: an API that refuses (RBAC without list or delete) is a warning
    line, and the run's own outcome stands."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    instance = (job["metadata"].get("labels") or {}).get("app.kubernetes.io/instance")
    if not instance:  # without it the selector would take every release's RayJobs in the namespace
        print("warning: not pruning: the RayJob has no app.kubernetes.io/instance label to tell its "
              "release's RayJobs from others (render it with the chart)", file=sys.stderr, flush=True)
        return []
    selector = f"{LAUNCHER_LABEL}={LAUNCHER},app.kubernetes.io/instance={instance}"
    removed = []
    try:
        items = client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, label_selector=selector)["items"]
        finished = [o for o in items if outcome(o) is not None]
        finished.sort(key=lambda o: o["metadata"].get("creationTimestamp", ""), reverse=True)
        for o in finished[keep:]:
            if delete(api, namespace, o["metadata"]["name"]):
                removed.append(o["metadata"]["name"])
    except ApiException as exc:
        print(f"warning: could not prune finished RayJobs in {namespace}: {exc.status} {exc.reason}",
              file=sys.stderr, flush=True)
    except (OSError, Urllib3Error) as exc:  # the API is gone: the run's own outcome stands
        print(f"warning: could not prune finished RayJobs in {namespace}: {str(exc).splitlines()[0][:200]}",
              file=sys.stderr, flush=True)
    except UserError as exc:
        print(f"warning: could not prune finished RayJobs: {exc}", file=sys.stderr, flush=True)
    if removed:
        print(f"pruned {len(removed)} finished RayJob(s): {', '.join(removed)}", file=out, flush=True)
    return removed
