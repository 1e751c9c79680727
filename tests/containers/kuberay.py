"""KubeRay played with containers: a RayJob's rayClusterSpec and submitter run pod by pod (pods.py).

The operator's part, in the order it takes it: the head pod; the worker pods once the head's GCS
answers (its readiness probes: the raylet's health through the node's dashboard agent, the GCS's
through the head's dashboard); then the K8sJobMode submitter pod. Each Ray pod runs the command
KubeRay generates from its group's `rayStartParams` (`ulimit -n 65536; ray start
--head|--address=... --block --num-cpus=<cpu limit> --memory=<memory limit> ...`, through
`/bin/bash -lc`) with the env KubeRay injects (RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from the
release's token Secret, RAY_ADDRESS, RAY_CLUSTER_NAME, RAY_NODE_TYPE_NAME, ...); the submitter runs
`ray job submit --no-wait --runtime-env-json ... --submission-id ... -- <entrypoint>`, then `ray job
logs --follow`. The job's status is read from the Job Submission API, as the operator reads it.

The one departure from the rendered spec: **Ray's ports.** The chart and KubeRay fix the same ports
for every Ray pod (metrics export 8080, dashboard agent 52365, GCS 6379, dashboard 8265, client
10001), and Ray binds most of them on every address of the host (`*:port`), so on one host network
they collide. Each Ray pod gets ports of its own from the release (`Release.free_ports`: none given
to another pod, each free on every address when drawn, none in the ephemeral range, where a
long-lived outgoing connection could hold one and keep the pod's raylet from ever binding it), and
a worker-port range of its own for its Ray worker processes (`Release.port_block`). The workers and
the submitter are pointed at the head's.

What this cannot show: the operator's reconciliation itself (a lost pod is replaced by the test,
not by the operator) and the Kubernetes API.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Any

import k8s_support as k
from pods import Release, Started
from tests.local_cluster import http_ok as http_status

# Ports KubeRay fixes for every Ray pod; each pod gets its own (see the module docstring).
RAY_PORTS = ("port", "dashboard-port", "ray-client-server-port", "metrics-export-port",
             "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "node-manager-port",
             "object-manager-port", "runtime-env-agent-port")
WORKER_PORTS_PER_POD = 500
# Where a raylet or GCS that never came up says why (shown when a wait times out).
RAY_LOGS = {"raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err"}


@dataclass
class RayCluster:
    """The RayJob's rayClusterSpec as KubeRay would start it, pod by pod."""

    release: Release
    job: dict
    nodes: dict[str, Started] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spec = self.job["spec"]["rayClusterSpec"]
        self.name = self.job["metadata"].get("name") or self.job["metadata"]["generateName"] + "x"
        self.head_ip = ""
        self.ports: dict[str, int] = {}
        self.id = uuid.uuid4().hex[:4]  # container names: one set per RayJob of the release
        self.submitter: Started | None = None
        self.release.diagnostic_files |= RAY_LOGS

    def delete(self) -> None:
        """shutdownAfterJobFinishes: the operator deletes the cluster's pods and the submitter."""
        for s in [*self.nodes.values(), *([self.submitter] if self.submitter else [])]:
            if s in self.release.started:
                self.release.remove(s)

    def kuberay_env(self, group: str, pod_name: str) -> dict[str, str]:
        env = {"RAY_CLUSTER_NAME": self.name, "RAY_NODE_TYPE_NAME": group, "RAY_CLOUD_INSTANCE_ID": pod_name,
               "RAY_USAGE_STATS_KUBERAY_IN_USE": "1", "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE": "1", "RAY_PORT": str(self.ports["port"])}
        if (self.spec.get("authOptions") or {}).get("mode") == "token":
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.release.token)
        return env

    def start_command(self, head: bool, container: dict, params: dict, ports: dict[str, int], ip: str) -> list[str]:
        limits = container["resources"]["limits"]
        flags = ["--head"] if head else [f"--address={self.head_ip}:{self.ports['port']}"]
        # KubeRay derives these from the limits unless rayStartParams sets them.
        flags.append("--block")
        if "num-cpus" not in params:
            flags.append(f"--num-cpus={int(k.parse_quantity(limits['cpu']))}")
        if "memory" not in params:
            flags.append(f"--memory={int(k.parse_quantity(limits['memory']))}")
        if "nvidia.com/gpu" in limits and "num-gpus" not in params:
            flags.append(f"--num-gpus={limits['nvidia.com/gpu']}")
        if head:
            flags.append(f"--dashboard-host={ip}")
        flags += [f"--{key}={value}" for key, value in params.items()]
        flags += [f"--{key}={value}" for key, value in ports.items()]
        flags.append(f"--node-ip-address={ip}")
        return ["/bin/bash", "-lc", "--", "ulimit -n 65536; ray start " + " ".join(shlex.quote(f) for f in flags)]

    def pod_ports(self, head: bool) -> dict[str, int]:
        """The pod's own Ray ports (the head's first three are the cluster's) and worker-port range."""
        names = RAY_PORTS if head else RAY_PORTS[3:]
        workers = self.release.port_block(WORKER_PORTS_PER_POD)
        return {**dict(zip(names, self.release.free_ports(len(names)))),
                "min-worker-port": workers[0], "max-worker-port": workers[-1]}

    def start_head(self) -> Started:
        g = self.spec["headGroupSpec"]
        pod = g["template"]["spec"]
        c = pod["containers"][0]
        ip = self.head_ip = self.release.address()
        self.ports = self.pod_ports(head=True)
        env = {**self.release.env_of(c), **self.kuberay_env("headgroup", f"{self.name}-head"),
               "RAY_ADDRESS": f"{ip}:{self.ports['port']}"}
        cmd = self.start_command(True, c, g.get("rayStartParams") or {}, self.ports, ip)
        self.nodes["head"] = self.release.run_pod(f"{self.id}-head", pod, cmd, env, ip)
        self.agent_ports = {"head": (ip, self.ports["dashboard-agent-listen-port"])}
        return self.nodes["head"]

    def ready(self, node: str) -> bool:
        """KubeRay's readiness probes: the raylet's health through the node's dashboard agent, and on
        the head the GCS's through the dashboard."""
        ip, port = self.agent_ports[node]
        ok = http_status(f"http://{ip}:{port}/api/local_raylet_healthz") == 200
        return ok and (node != "head" or http_status(f"{self.dashboard}/api/gcs_healthz") == 200)

    @property
    def dashboard(self) -> str:
        return f"http://{self.head_ip}:{self.ports['dashboard-port']}"

    def start_worker(self, group_index: int, replica: str) -> Started:
        g = self.spec["workerGroupSpecs"][group_index]
        pod = g["template"]["spec"]
        c = pod["containers"][0]
        ip = self.release.address()
        pod_name = f"{self.name}-{g['groupName']}-worker-{replica}"
        env = {**self.release.env_of(c), **self.kuberay_env(g["groupName"], pod_name),
               "RAY_IP": self.head_ip, "FQ_RAY_IP": self.head_ip,
               "RAY_ADDRESS": f"{self.head_ip}:{self.ports['port']}"}
        ports = self.pod_ports(head=False)
        cmd = self.start_command(False, c, g.get("rayStartParams") or {}, ports, ip)
        s = self.release.run_pod(f"{self.id}-{g['groupName']}-{replica}", pod, cmd, env, ip)
        self.nodes[f"{g['groupName']}-{replica}"] = s
        self.agent_ports[f"{g['groupName']}-{replica}"] = (ip, ports["dashboard-agent-listen-port"])
        return s

    def start_submitter(self, submission_id: str) -> Started:
        """KubeRay's K8sJobMode submitter: submit the entrypoint once (unless already there), follow the logs."""
        spec = self.job["spec"]
        pod = spec["submitterPodTemplate"]["spec"]
        c = pod["containers"][0]
        runtime_env = json.dumps(k.yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {})
        addr = self.dashboard
        script = (f"if ! ray job status --address {addr} {submission_id} >/dev/null 2>&1 ; then "
                  f"ray job submit --address {addr} --runtime-env-json {shlex.quote(runtime_env)} "
                  f"--submission-id {submission_id} --no-wait -- {spec['entrypoint']} ; fi ; "
                  f"ray job logs --address {addr} --follow {submission_id}")
        env = {**self.release.env_of(c), "RAY_DASHBOARD_ADDRESS": addr, "RAY_JOB_SUBMISSION_ID": submission_id}
        if (self.spec.get("authOptions") or {}).get("mode") == "token":
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.release.token)
        self.submitter = self.release.run_pod(f"{self.id}-submitter", pod, ["/bin/bash", "-lc", "--", script], env,
                                              self.release.address())
        return self.submitter



def job_info(dashboard: str, token: str | None, submission_id: str, python: str) -> dict[str, Any]:
    """What the operator reads: the job's status through the Job Submission API."""
    probe = ("import json,sys;from ray.job_submission import JobSubmissionClient as C;"
             "c=C(sys.argv[1]);i=c.get_job_info(sys.argv[2]);print(json.dumps({'status':str(i.status.value),"
             "'message':i.message}))")
    env = {key: v for key, v in os.environ.items() if not key.startswith("RAY_")}
    if token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    p = subprocess.run([python, "-c", probe, dashboard, submission_id], env=env, capture_output=True, text=True,
                       timeout=120)
    if p.returncode != 0:
        return {"status": "UNKNOWN", "message": p.stderr[-1500:]}
    return json.loads(p.stdout.strip().splitlines()[-1])
