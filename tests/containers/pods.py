"""Pods as containers: the chart's rendered pod specs run with podman, as the kubelet and KubeRay would.

Each pod of the rendered release becomes one container of the built image (`--pull=never`, the
image name exactly as rendered), started from its pod spec:

- command: the container's command/args with Kubernetes' `$(VAR)` expansion (the MLflow
  Deployment); for Ray pods the command KubeRay generates from the group's `rayStartParams`
  (`ulimit -n 65536; ray start --head|--address=... --block --num-cpus=<cpu limit>
  --memory=<memory limit> --metrics-export-port --dashboard-agent-listen-port ...`, run through
  `/bin/bash -lc`); for the submitter KubeRay's K8sJobMode command (`ray job submit --no-wait
  --runtime-env-json ... --submission-id ... -- <entrypoint>`, then `ray job logs --follow`);
- env: `envFrom` Secrets' keys, then the container's env, `secretKeyRef`s resolved from the
  rendered Secrets (and the Secrets a user creates beside the release, passed in), plus what KubeRay
  injects (RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from the release's token Secret, RAY_ADDRESS,
  RAY_CLUSTER_NAME, RAY_NODE_TYPE_NAME, ...);
- security context: readOnlyRootFilesystem -> `--read-only` (and no tmpfs podman would add on
  its own), runAsUser/runAsGroup -> `--user`, fsGroup -> `--group-add` and group-owned volume
  directories, capabilities drop ALL -> `--cap-drop=ALL`, allowPrivilegeEscalation=false ->
  `no-new-privileges`, seccomp RuntimeDefault -> podman's default profile; runAsNonRoot is
  checked (a uid 0 spec is refused);
- volumes: a configMap -> its rendered keys as read-only files; an emptyDir with medium Memory on /dev/shm -> `--shm-size` of its sizeLimit (elsewhere
  a tmpfs of that size), any other emptyDir -> a fresh host directory per pod (mode 0777, as the
  kubelet makes them), a PersistentVolumeClaim -> one host directory per claim, shared by every
  container that mounts it (ReadWriteMany);
- resources: limits.cpu -> `--cpus`, limits.memory -> `--memory` (no swap);
- workingDir -> `--workdir`;
- restartPolicy (default Always) -> `--restart`: the kubelet restarts an exited container in the
  same pod, with its emptyDirs;
- readiness: the probes KubeRay adds (the raylet's health through the node's dashboard agent, the
  GCS's through the head's dashboard) are polled by the caller before the next step.

Networking: every container on the host network (`--network host`), each pod on its own loopback
address (a random 127.x.y.0/24 per harness, so concurrent runs do not meet), given to Ray as
`--node-ip-address`; a Service name resolves to its pod's address (`--add-host`), as cluster DNS
would. Listen addresses that are 0.0.0.0 in the spec (MLflow's --host, Ray's dashboard host) are the
pod's own address, which is what 0.0.0.0 means inside a pod's network namespace.

The one departure from the rendered spec: **Ray's ports.** The chart and KubeRay fix the same ports
for every Ray pod (metrics export 8080, dashboard agent 52365, GCS 6379, dashboard 8265, client
10001), and Ray binds some of them on every address of the host, so on one host network they
collide; the harness gives each Ray pod free ports of its own (the workers and the submitter are
pointed at the head's). MLflow keeps the chart's port 5000 on its own address.

What containers cannot show: the KubeRay operator's reconciliation (it is played here in
order: head, workers once the GCS answers, then the submitter; a lost pod is replaced by the test,
not by the operator), scheduling on real nodes (requests, node selectors, tolerations, affinity),
admission and server-side defaulting (webhooks, PodSecurity admission, quotas), NetworkPolicy
enforcement (no CNI here: every pod reaches every address), emptyDir sizeLimit eviction, probes,
and the Kubernetes API itself.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shlex
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import k8s_support as k

from tests.local_cluster import http_ok as http_status

PODMAN = "podman"
# Ports KubeRay fixes for every Ray pod; each pod gets its own free ones (see the module docstring).
RAY_PORTS = ("port", "dashboard-port", "ray-client-server-port", "metrics-export-port",
             "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "node-manager-port",
             "object-manager-port", "runtime-env-agent-port")


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])} ... failed: {proc.stderr.strip()[-2000:]}")
    return proc


def host_limits() -> list[str]:
    """Ulimits no higher than this machine's hard limits (a container may not raise them)."""
    import resource

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576)
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args ($$ escapes)."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and ")" in value[i:]:
            end = value.index(")", i)
            name = value[i + 2:end]
            out.append(env.get(name, value[i:end + 1]))
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


@dataclass
class Started:
    name: str
    id: str
    ip: str
    log: Path


@dataclass
class Release:
    """A rendered release run as containers: pods are started from their specs and removed at the end."""

    objs: list[dict]
    root: Path
    started: list[Started] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.subnet = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}"
        self.next_ip = 2
        self.hosts: dict[str, str] = {}  # Service name -> pod address
        self.claims = self.root / "pvc"
        self.secrets = {s["metadata"]["name"]: {key: base64.b64decode(v).decode() for key, v in
                                                (s.get("data") or {}).items()}
                        for s in k.by_kind(self.objs, "Secret")}
        self.token = next((v["auth_token"] for v in self.secrets.values() if "auth_token" in v), None)

    # --- addresses, volumes, env -----------------------------------------------------------

    def address(self) -> str:
        ip = f"{self.subnet}.{self.next_ip}"
        self.next_ip += 1
        return ip

    def claim_dir(self, claim: str) -> Path:
        d = self.claims / claim
        if not d.exists():
            d.mkdir(parents=True)
            os.chown(d, 0, 100)
            d.chmod(0o2775)
        return d

    def env_of(self, container: dict) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):  # first, as the kubelet does: `env` wins
            if "secretRef" not in source:
                raise NotImplementedError(f"envFrom {source}: only secretRef is supported")
            env.update(self.secrets[source["secretRef"]["name"]])
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = expand(str(item["value"]), env)
            elif "secretKeyRef" in item.get("valueFrom", {}):
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = self.secrets[ref["name"]][ref["key"]]
            else:
                raise NotImplementedError(f"env {item['name']}: only value and secretKeyRef are supported")
        return env

    def volume_args(self, pod: dict, container: dict, pod_dir: Path) -> list[str]:
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        args = []
        for m in container.get("volumeMounts", []):
            v = volumes[m["name"]]
            ro = ":ro" if m.get("readOnly") else ""
            if "emptyDir" in v:
                ed = v["emptyDir"] or {}
                if ed.get("medium") == "Memory":
                    size = int(k.parse_quantity(ed["sizeLimit"])) if ed.get("sizeLimit") else None
                    if m["mountPath"] == "/dev/shm":
                        args += [f"--shm-size={size}"] if size else []
                    else:
                        opts = f"rw,mode=1777{',size=' + str(size) if size else ''}"
                        args += ["--tmpfs", f"{m['mountPath']}:{opts}"]
                    continue
                host = pod_dir / "emptydir" / m["name"]
                host.mkdir(parents=True, exist_ok=True)
                host.chmod(0o777)
                args += ["-v", f"{host}:{m['mountPath']}{ro}"]
            elif "persistentVolumeClaim" in v:
                args += ["-v", f"{self.claim_dir(v['persistentVolumeClaim']['claimName'])}:{m['mountPath']}{ro}"]
            elif "configMap" in v:
                # The rendered ConfigMap's keys as files, world-readable as the kubelet writes them.
                cm = next(c for c in k.by_kind(self.objs, "ConfigMap")
                          if c["metadata"]["name"] == v["configMap"]["name"])
                host = pod_dir / "configmap" / m["name"]
                host.mkdir(parents=True, exist_ok=True)
                for key, text in (cm.get("data") or {}).items():
                    (host / key).write_text(text)
                    (host / key).chmod(0o644)
                host.chmod(0o755)
                args += ["-v", f"{host}:{m['mountPath']}:ro"]
            else:
                raise NotImplementedError(f"volume {m['name']}: only emptyDir, persistentVolumeClaim and configMap")
        return args

    # --- one pod ---------------------------------------------------------------------------

    def run_pod(self, role: str, pod: dict, command: list[str], env: dict[str, str], ip: str,
                container_index: int = 0) -> Started:
        """Start one pod's container from its spec, with `command` as what runs in it."""
        c = pod["containers"][container_index]
        psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) and uid in (None, 0):
            raise ValueError(f"{role}: runAsNonRoot with uid {uid!r}: the kubelet refuses to start it")
        name = f"rt-{self.tag}-{role}"
        pod_dir = self.root / "pods" / name
        pod_dir.mkdir(parents=True)
        limits = (c.get("resources") or {}).get("limits") or {}
        args = ["run", "-d", "--name", name, "--pull=never", "--network=host", *host_limits()]
        # The kubelet restarts a container that exits, per the pod's restartPolicy (default Always);
        # the pod's emptyDirs survive that, as a podman container's volumes do.
        restart = {"Always": "always", "OnFailure": "on-failure"}.get(pod.get("restartPolicy", "Always"))
        args += [f"--restart={restart}"] if restart else []
        if csc.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        if uid is not None:
            args += ["--user", f"{uid}:{gid if gid is not None else 0}"]
        if psc.get("fsGroup") is not None:
            args += ["--group-add", str(psc["fsGroup"])]
        for cap in (csc.get("capabilities") or {}).get("drop", []):
            args += [f"--cap-drop={cap}"]
        for cap in (csc.get("capabilities") or {}).get("add", []):
            args += [f"--cap-add={cap}"]
        if csc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if csc.get("privileged"):
            args += ["--privileged"]
        if "cpu" in limits:
            args += [f"--cpus={k.parse_quantity(limits['cpu']):g}"]
        if "memory" in limits:
            mem = int(k.parse_quantity(limits["memory"]))
            args += [f"--memory={mem}", f"--memory-swap={mem}"]
        if c.get("workingDir"):
            args += ["--workdir", c["workingDir"]]
        args += self.volume_args(pod, c, pod_dir)
        for host, addr in self.hosts.items():
            args += ["--add-host", f"{host}:{addr}"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        args += ["--entrypoint", json.dumps(command[:1]), c["image"], *command[1:]]
        cid = podman(*args).stdout.strip()
        started = Started(name, cid, ip, self.root / f"{name}.log")
        self.started.append(started)
        return started

    def logs(self, s: Started) -> str:
        out = podman("logs", s.id, check=False)
        text = out.stdout + out.stderr
        s.log.write_text(text)
        return text

    def running(self, s: Started) -> bool:
        return podman("inspect", "--format", "{{.State.Running}}", s.id, check=False).stdout.strip() == "true"

    def diff(self, s: Started) -> list[str]:
        """What the container wrote outside its mounted volumes: its root filesystem's changes, less
        what the engine itself puts there (the mount points of volumes and their parents, the
        /etc/hosts, /etc/resolv.conf and /etc/hostname it bind-mounts, /run/.containerenv)."""
        mounts = json.loads(podman("inspect", "--format", "{{json .Mounts}}", s.id).stdout or "[]")
        engine = {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/run/.containerenv", "/dev/shm"}
        engine |= {m["Destination"] for m in mounts}
        parents = {str(parent) for path in engine for parent in Path(path).parents}
        changes = [ln.split(" ", 1) for ln in podman("diff", s.id).stdout.splitlines() if ln.strip()]
        return [f"{kind} {path}" for kind, path in changes
                if path not in engine and not (kind == "C" and path in parents)]

    def remove(self, s: Started) -> None:
        self.logs(s)
        podman("rm", "--force", "--time", "0", s.id, check=False)
        self.started.remove(s)

    def stop(self) -> None:
        for s in reversed(self.started):
            self.logs(s)
            podman("rm", "--force", "--time", "0", s.id, check=False)
        self.started.clear()

    # --- the release's pods ----------------------------------------------------------------

    def start_mlflow(self) -> tuple[Started, str]:
        """The rendered MLflow Deployment's pod; returns it and the URL the Ray pods use."""
        return self.start_deployment("mlflow")

    def start_serving(self) -> tuple[Started, str]:
        """The rendered model server's pod (serving.enabled); returns it and its URL. Started
        after MLflow: it resolves the MLflow Service's name to that pod's address."""
        return self.start_deployment("serving")

    def start_deployment(self, role: str) -> tuple[Started, str]:
        """One pod of the Deployment `<fullname>-<role>`, listening on its own address instead of
        0.0.0.0 (its --host and --port args); its Service's name resolves to it for pods started
        later. Returns the pod and its URL."""
        dep = next(d for d in k.by_kind(self.objs, "Deployment") if d["metadata"]["name"].endswith(f"-{role}"))
        svc = next(s for s in k.by_kind(self.objs, "Service") if s["metadata"]["name"] == dep["metadata"]["name"])
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        ip = self.address()
        env = self.env_of(c)
        args = [expand(a, env) for a in c.get("args", [])]
        args = [f"--host={ip}" if a == "--host=0.0.0.0" else a for a in args]
        port = int(next(a.split("=", 1)[1] for a in args if a.startswith("--port=")))
        with socket.socket() as s:  # the chart's port on this pod's own address
            s.bind((ip, port))
        started = self.run_pod(role, pod, [*c["command"], *args], env, ip)
        self.hosts[svc["metadata"]["name"]] = ip
        return started, f"http://{ip}:{port}"

    def start_helm_test(self) -> Started:
        """The `helm test` hook's pod, as `helm test <release>` starts it (restartPolicy Never)."""
        pod = next(p for p in k.by_kind(self.objs, "Pod")
                   if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test")
        c = pod["spec"]["containers"][0]
        env = self.env_of(c)
        return self.run_pod("helm-test", pod["spec"], [*c["command"], *c["args"]], env, self.address())

    def exit_code(self, s: Started) -> int:
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", s.id).stdout.strip())

    def exec(self, s: Started, command: list[str], timeout: float = 300) -> str:
        """A command in a running container, with its environment; its stdout."""
        out = podman("exec", s.id, *command, timeout=timeout, check=False)
        assert out.returncode == 0, f"{command[:2]} in {s.name}: exit {out.returncode}\n{out.stderr[-3000:]}"
        return out.stdout


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

    def _ports(self, ip: str, head: bool) -> dict[str, int]:
        """Free ports, all different: each socket is held until the last is bound, or the kernel
        may hand out one port twice (seen: Ray refusing metrics_export on the agent's HTTP port)."""
        names = RAY_PORTS if head else RAY_PORTS[3:]
        held = []
        try:
            for _ in names:
                s = socket.socket()
                s.bind((ip, 0))
                held.append(s)
            return {n: s.getsockname()[1] for n, s in zip(names, held)}
        finally:
            for s in held:
                s.close()

    def start_head(self) -> Started:
        g = self.spec["headGroupSpec"]
        pod = g["template"]["spec"]
        c = pod["containers"][0]
        ip = self.head_ip = self.release.address()
        self.ports = self._ports(ip, head=True)
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
        ports = self._ports(ip, head=False)
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


def wait(predicate, timeout: float, what: str, release: Release) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(1)
    tails = "\n".join(f"== {s.name}\n{release.logs(s)[-3000:]}" for s in release.started)
    raise TimeoutError(f"timed out waiting for {what}\n{tails}")


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
