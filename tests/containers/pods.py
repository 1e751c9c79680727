"""Pods as containers: the chart's rendered pod specs run with podman, as the kubelet would.

Each pod of the rendered release becomes one container of the built image (`--pull=never`, the
image name exactly as rendered), started from its pod spec:

- command: the container's command/args with Kubernetes' `$(VAR)` expansion, or the command the
  caller gives (KubeRay's for Ray pods: kuberay.py);
- env: `envFrom` Secrets' keys, then the container's env: `secretKeyRef`s resolved from the
  rendered Secrets (and the Secrets a user creates beside the release, passed in),
  `resourceFieldRef`s from the container's resources, plus what the caller adds (what KubeRay
  injects, for Ray pods);
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
- readiness: polled by the caller before the next step.

Networking: every container on the host network (`--network host`), each pod on its own loopback
address (a random 127.x.y.0/24 per harness, so concurrent runs do not meet), given to Ray as
`--node-ip-address`; a Service name resolves to its pod's address (`--add-host`), as cluster DNS
would. Listen addresses that are 0.0.0.0 in the spec (MLflow's --host, Ray's dashboard host) are the
pod's own address, which is what 0.0.0.0 means inside a pod's network namespace.

Pods' own ports (Ray's, see kuberay.py) come from `free_ports` and `port_block`: the host network
is shared, so no two pods of a release get the same one. MLflow keeps the chart's port 5000 on its
own address.

What containers cannot show: scheduling on real nodes (requests, node selectors, tolerations, affinity),
admission and server-side defaulting (webhooks, PodSecurity admission, quotas), NetworkPolicy
enforcement (no CNI here: every pod reaches every address), emptyDir sizeLimit eviction, probes,
and the Kubernetes API itself.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import k8s_support as k


PODMAN = "podman"
# Where pods' own ports on the shared host network are drawn from: below the kernel's ephemeral
# range (32768-60999), where no outgoing connection's source port can take one before the pod binds
# it, and above the port blocks (from 10002, Ray's default worker-port range).
PORT_RANGE = range(20000, 32768)
PORT_BLOCKS = range(10002, 20000)


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


def resource_field(container: dict, ref: dict) -> str:
    """The downward API's resourceFieldRef: the container's request or limit in units of the
    divisor, rounded up (the kubelet's rule; a limit left unset would be the node's allocatable)."""
    kind, resource = ref["resource"].split(".", 1)
    value = ((container.get("resources") or {}).get(kind) or {}).get(resource)
    if value is None:
        raise NotImplementedError(f"resourceFieldRef {ref['resource']}: unset (the node's allocatable)")
    return str(math.ceil(k.parse_quantity(value) / k.parse_quantity(ref.get("divisor", "1"))))


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
        self.ports_given: set[int] = set()
        self.blocks_given = 0
        self.diagnostic_files: set[str] = set()  # see volume_file_tails

    # --- addresses, volumes, env -----------------------------------------------------------

    def address(self) -> str:
        ip = f"{self.subnet}.{self.next_ip}"
        self.next_ip += 1
        return ip

    def free_ports(self, count: int) -> list[int]:
        """Ports for one pod on the shared host network: none given to another pod of this release,
        and each free on every address now (a bind on the wildcard address fails if any address
        holds the port; Ray, for one, binds its servers on every address)."""
        ports: list[int] = []
        while len(ports) < count:
            port = random.choice(PORT_RANGE)  # nosec B311: a port number, not a secret
            if port in self.ports_given:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("0.0.0.0", port))  # nosec B104: a probe, closed at once
                except OSError:
                    continue
            self.ports_given.add(port)
            ports.append(port)
        return ports

    def port_block(self, size: int) -> range:
        """A block of consecutive ports for one pod's own processes, shared with no other pod."""
        start = PORT_BLOCKS.start + self.blocks_given
        if start + size > PORT_BLOCKS.stop:
            raise RuntimeError(f"no block of {size} ports left below {PORT_BLOCKS.stop}")
        self.blocks_given += size
        return range(start, start + size)

    def volume_file_tails(self) -> str:
        """The ends of the files named in `diagnostic_files` in the pods' emptyDirs on this host:
        what a process in a pod wrote to its own logs (a server that never came up says why there)."""
        out, seen = [], set()
        for name in sorted(self.diagnostic_files):
            for f in sorted(self.root.glob(f"pods/*/emptydir/**/{name}")):
                if f.resolve() in seen or not f.stat().st_size:
                    continue
                seen.add(f.resolve())
                pod = f.relative_to(self.root / "pods").parts[0]
                out.append(f"== {pod}: {f.parent.parent.name}/{name}\n{f.read_text(errors='replace')[-1500:]}")
        return "\n".join(out)

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
            elif "resourceFieldRef" in item.get("valueFrom", {}):
                env[item["name"]] = resource_field(container, item["valueFrom"]["resourceFieldRef"])
            else:
                raise NotImplementedError(f"env {item['name']}: only value, secretKeyRef and resourceFieldRef")
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


def wait(predicate, timeout: float, what: str, release: Release) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(1)
    tails = "\n".join(f"== {s.name}\n{release.logs(s)[-3000:]}" for s in release.started)
    raise TimeoutError(f"timed out waiting for {what}\n{tails}\n{release.volume_file_tails()}")
