#!/usr/bin/env bash
# Installs and configures the container engine the container tests use (podman, buildah, runc,
# mmdebstrap, CNI plugins, iptables: all from Debian's packages) for this machine:
#   - runtime runc (crun cannot run here: cgroups v1/hybrid), cgroupfs and a file event log
#     (no systemd), set in a containers.conf drop-in;
#   - default ulimits no higher than this process's hard limits (a container may not raise them).
# Idempotent: a machine that has it all returns at once. Without root or apt-get it prints one
# line naming the tests that will not run and exits 0, or 1 with CI=true (nothing is skipped in CI).
# `make container-tools` runs it; `make test` depends on that target.
set -euo pipefail

PACKAGES=(podman buildah runc mmdebstrap containernetworking-plugins iptables)
CONF_DIR=/etc/containers/containers.conf.d
CONF=$CONF_DIR/50-ray-training.conf
SKIPPED="tests/containers (the stand-in base image, the project image, the RayJob as containers)"

source "$(dirname "${BASH_SOURCE[0]}")/limits.sh"
nofile=$(cap_limit "$(ulimit -Hn)" 1048576); nproc=$(cap_limit "$(ulimit -Hu)" 32768)
want_conf="# Written by containers/tools.sh (make container-tools).
[containers]
default_ulimits = [\"nofile=${nofile}:${nofile}\", \"nproc=${nproc}:${nproc}\"]

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
"

installed() { dpkg-query -W -f='${Status}\n' "${PACKAGES[@]}" 2>/dev/null | grep -c '^install ok installed$' || true; }

if [[ $(installed) -eq ${#PACKAGES[@]} && -f $CONF && "$(cat "$CONF")" == "${want_conf%$'\n'}" ]]; then
    exit 0
fi

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    why=$([[ $(id -u) -ne 0 ]] && echo "not root" || echo "no apt-get")
    if [[ ${CI:-} == true ]]; then
        echo "container-tools: cannot install podman ($why); CI=true runs everything, so this fails: $SKIPPED" >&2
        exit 1
    fi
    echo "container-tools: cannot install podman ($why); skipped: $SKIPPED"
    exit 0
fi

if [[ $(installed) -ne ${#PACKAGES[@]} ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi
mkdir -p "$CONF_DIR"
printf '%s' "${want_conf%$'\n'}" > "$CONF"
podman info --format '{{.Host.OCIRuntime.Name}}' >/dev/null
echo "container-tools: podman $(podman version --format '{{.Client.Version}}') with runc ready"
